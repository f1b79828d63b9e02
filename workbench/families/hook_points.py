"""Generate ``docs/hook_points.md`` from the code (``make docs``)."""

from __future__ import annotations

import re

from workbench.arch import ADAPTERS
from workbench.hooks.points import POINTS
from workbench.models.backends import tl_maps

_LAYER = re.compile(r"^blocks\.\d+\.")


STATS = [  # streamed statistics: name, shape, meaning, whether the fused route computes them
    ("sink_mass", "[batch, head, pos]", "mass on the first `sink_tokens` real tokens", "yes"),
    ("key_mass", "[batch, head, k_pos]", "attention each key receives (H2O)", "yes"),
    ("entropy", "[batch, head, pos]", "entropy of each query's attention, nats", "yes"),
    ("set_mass", "[batch, head, pos]", "mass on the keys holding `key_tokens`", "yes"),
    ("distance", "[batch, head, pos]", "mean look-back `sum_k p (i - k)`, tokens", "yes"),
    ("top_keys", "[batch, head, pos, top_k]", "positions of the `top_k` highest-scoring keys", "chunked"),
    ("tail_pattern", "[batch, head, tail, k_pos]", "pattern rows of the last `tail` real queries", "chunked"),
]


def _family_points() -> tuple[dict[str, set[str]], set[str]]:
    """Point templates each family offers (read from tiny random-init models of its real HF class), and
    the templates served by the attention tap rather than a module boundary."""
    import workbench
    from workbench.models.tiny import TINY_FAMILIES, build_tiny

    offered, taps = {}, set()
    for family in TINY_FAMILIES:
        model = workbench.load(build_tiny(family))
        offered[family] = {_LAYER.sub("blocks.{L}.", name) for name in model.points}
        taps |= {_LAYER.sub("blocks.{L}.", n) for n, p in model.points.items() if p.site.kind == "tap"}
    return offered, taps


def _backends(template: str, taps: set[str]) -> str:
    served = (("hf", True), ("tl", tl_maps(template)), ("nnsight", template not in taps))
    return ", ".join(b for b, ok in served if ok)


def render() -> str:
    """The markdown page."""
    offered, taps = _family_points()
    families = list(offered)
    lines = [
        "# Hook points",
        "",
        "Generated from `workbench/hooks/points.py` and the adapters by `make docs`;",
        "a test keeps it current.",
        "",
        "Names follow TransformerLens (`blocks.{L}.hook_resid_pre` ...); `moe.*` and `kv.*` are the",
        "workbench's additions. A hook function `fn(tensor, name)` returning a tensor replaces the value,",
        "except on read-only points. `tokens` is `batch x pos` flattened row-major, as routers see them.",
        "`tl` serves a point where the family's TransformerBridge has its hook (DeepSeek's bridge hooks the",
        "router logits but not the expert ids and weights); any other point raises `HookPointError`.",
        "",
        "| point | shape | meaning | backends |",
        "|---|---|---|---|",
    ]
    lines += [f"| `{p.name}` | {p.shape} | {p.meaning} | {_backends(p.name, taps)} |" for p in POINTS]
    lines += [
        "",
        "## Streamed statistics",
        "",
        "`CaptureSpec(stats=[...])` adds per-layer statistics computed from the tapped q and k while the",
        "forward pass keeps sdpa; no T x T pattern is held. Captures store them per prompt without the",
        "batch axis. Each is exact (fp32) against the eager pattern; formulas in",
        "`workbench/capture/streamed.py`, routes in `workbench/capture/stat_taps.py`.",
        "",
        "| point | shape | meaning | fused route |",
        "|---|---|---|---|",
        *(
            f"| `blocks.{{L}}.attn.stat_{name}` | {shape} | {meaning} | {route} |"
            for name, shape, meaning, route in STATS
        ),
        "",
        'The fused route (`stat_route="fused"`, the default) takes the fused attention kernel\'s',
        "log-sum-exp where its identities are exact (a mask that shows or hides keys, no soft-capping), in",
        "float64 where the scores are large enough for fp32 rounding to show; soft-capped (Gemma 2) and",
        "biased (ALiBi) calls take the chunked path; on a plain CPU float32 sdpa call its first kernel call",
        "also returns the model's attention output. `capture.meta[\"stat_routes\"]` records each layer's.",
    ]
    lines += ["", "## Points per family", "", "| point | " + " | ".join(families) + " |"]
    lines += ["|---|" + "---|" * len(families)]
    for point in POINTS:
        marks = ["x" if point.name in offered[f] else "" for f in families]
        lines.append(f"| `{point.name}` | " + " | ".join(marks) + " |")
    lines += ["", "## Adapters", ""]
    for adapter in ADAPTERS:
        path = f"workbench/arch/{adapter.__module__.split('.')[-1]}.py"
        lines.append(f"- `{adapter.family}` ({', '.join(adapter.model_types)}): `{path}`")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(render(), end="")
