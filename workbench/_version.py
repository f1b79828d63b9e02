"""The workbench's version (read by the package metadata) and the versions a result depends on."""

from __future__ import annotations

__version__ = "0.1.0"


def versions() -> dict[str, str]:
    """Versions recorded with every capture store and battery run: torch, transformers, the workbench."""
    import torch
    import transformers

    return {"torch": torch.__version__, "transformers": transformers.__version__, "workbench": __version__}
