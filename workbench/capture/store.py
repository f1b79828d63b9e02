"""``Capture``: captured tensors per hook point and prompt, with safetensors shards and a JSON manifest.

On disk a capture is a directory::

    manifest.json              model, revision, prompts, spec, dtypes, library versions, shard index
    shard-00000.safetensors    tensors keyed "NAME|PROMPT_INDEX" (and "__tokens__|PROMPT_INDEX")

Shards are written atomically (temporary file, then rename) batch by batch, so a capture can spill to disk
while it runs; reading is lazy: a tensor is read from its memory-mapped shard only when asked for.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from workbench.errors import WorkbenchError

MANIFEST = "manifest.json"
TOKENS = "__tokens__"


class CorruptStoreError(WorkbenchError):
    """A capture directory is missing files or does not match its manifest."""


def _versions() -> dict[str, str]:
    import transformers

    import workbench

    return {
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "workbench": workbench.__version__,
    }


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


class Capture:
    """Captured values: ``capture[name]`` is a list with one tensor per prompt (pad positions removed).

    Attributes:
        names: Captured hook points and streamed statistics, in model order.
        prompts: The prompts (None when token ids were given).
        tokens: Token ids per prompt.
        meta: Model, spec and versions.
    """

    def __init__(self, names: list[str], meta: dict[str, Any], directory: Path | None = None) -> None:
        self.names = names
        self.meta = meta
        self.prompts: list[str] | None = meta.get("prompts")
        self.tokens: list[torch.Tensor] = []
        self.directory = directory
        self._memory: dict[str, list[torch.Tensor]] = {n: [] for n in names}
        self._shards: list[dict[str, Any]] = []  # {"file": str, "prompts": [start, stop]}
        self._handles: dict[str, Any] = {}
        self._flushed = 0  # prompts already written to shards

    # ------------------------------------------------------------------ building
    def append(self, values: dict[str, list[torch.Tensor]], tokens: list[torch.Tensor]) -> None:
        """Add one batch: per-name lists of per-prompt tensors, and the prompts' token ids."""
        for name in self.names:
            self._memory[name].extend(values[name])
        self.tokens.extend(tokens)

    def resident_bytes(self) -> int:
        """Bytes held in memory (not yet spilled)."""
        return sum(t.numel() * t.element_size() for ts in self._memory.values() for t in ts)

    def spill(self) -> None:
        """Write the in-memory prompts to a new shard and drop them from memory."""
        if self.directory is None:
            raise WorkbenchError("cannot spill a capture without a directory")
        count = len(self.tokens) - self._flushed
        if count == 0:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        tensors = {}
        for offset in range(count):
            index = self._flushed + offset
            tensors[f"{TOKENS}|{index}"] = self.tokens[index].contiguous()
            for name in self.names:
                tensors[f"{name}|{index}"] = self._memory[name][offset].contiguous()
        shard = f"shard-{len(self._shards):05d}.safetensors"
        tmp = self.directory / (shard + ".tmp")
        save_file(tensors, str(tmp))
        os.replace(tmp, self.directory / shard)
        self._handles[shard] = safe_open(str(self.directory / shard), framework="pt")
        self._shards.append({"file": shard, "prompts": [self._flushed, self._flushed + count]})
        self._flushed += count
        self._memory = {n: [] for n in self.names}
        self._write_manifest()

    def save(self, directory: str | Path) -> Path:
        """Write everything (remaining in-memory prompts included) to ``directory``."""
        directory = Path(directory)
        if self.directory is not None and self.directory != directory:
            raise WorkbenchError(f"this capture already lives in {self.directory}")
        self.directory = directory
        self.spill()
        self._write_manifest()
        return directory

    def _write_manifest(self) -> None:
        assert self.directory is not None
        manifest = {**self.meta, "names": self.names, "shards": self._shards, "versions": _versions()}
        _atomic_write_text(self.directory / MANIFEST, json.dumps(manifest, indent=2, default=str))

    # ------------------------------------------------------------------ reading
    @classmethod
    def load(cls, directory: str | Path) -> Capture:
        """Open a saved capture lazily.

        Raises:
            CorruptStoreError: Missing manifest or shards, or a shard without the keys it should hold.
        """
        directory = Path(directory)
        try:
            manifest = json.loads((directory / MANIFEST).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise CorruptStoreError(f"{directory} is not a readable capture ({MANIFEST}: {exc})") from exc
        names = manifest.pop("names")
        shards = manifest.pop("shards")
        manifest.pop("versions", None)
        result = cls(names, manifest, directory)
        result._shards = shards
        result._memory = {n: [] for n in names}
        for shard in shards:
            path = directory / shard["file"]
            try:
                handle = safe_open(str(path), framework="pt")
            except Exception as exc:
                raise CorruptStoreError(f"capture shard {path} is unreadable: {exc}") from exc
            result._handles[shard["file"]] = handle
            start, stop = shard["prompts"]
            keys = set(handle.keys())
            missing = [
                f"{n}|{i}" for i in range(start, stop) for n in [TOKENS, *names] if f"{n}|{i}" not in keys
            ]
            if missing:
                raise CorruptStoreError(f"capture shard {path} lacks {missing[0]}")
            result.tokens.extend(handle.get_tensor(f"{TOKENS}|{i}") for i in range(start, stop))
        result._flushed = len(result.tokens)
        return result

    def __len__(self) -> int:
        return len(self.tokens)

    def __contains__(self, name: str) -> bool:
        return name in self._memory

    def __iter__(self) -> Iterator[str]:
        return iter(self.names)

    def __getitem__(self, name: str) -> list[torch.Tensor]:
        """Per-prompt tensors of one point (read from shards on demand)."""
        if name not in self._memory:
            raise KeyError(f"{name} was not captured; captured: {', '.join(self.names[:6])} ...")
        stored = [
            self._handles[shard["file"]].get_tensor(f"{name}|{i}")
            for shard in self._shards
            for i in range(*shard["prompts"])
        ]
        return stored + self._memory[name]

    def stack(self, name: str) -> torch.Tensor:
        """All prompts of one point stacked on a new batch axis (prompts must have equal shapes)."""
        values = self[name]
        shapes = {tuple(v.shape) for v in values}
        if len(shapes) != 1:
            raise WorkbenchError(
                f"{name} has prompts of different lengths {sorted(shapes)[:3]}; index per prompt"
            )
        return torch.stack(values)

    def token_strings(self, tokenizer: Any) -> list[list[str]]:
        """Token strings per prompt."""
        return [tokenizer.convert_ids_to_tokens(ids.tolist()) for ids in self.tokens]
