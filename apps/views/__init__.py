"""The app's views, in menu order: each module has ``TITLE`` and ``render(source, prompt)`` (``source``:
:class:`apps.cache.Source`)."""

from apps.views import (
    batteries,
    card,
    compression,
    diff,
    generation,
    heads,
    kvcache,
    layers,
    probes,
    routing,
)

VIEWS = {
    v.TITLE: v
    for v in (card, layers, heads, routing, compression, kvcache, generation, probes, diff, batteries)
}
