"""``workbench.load``: one entry point for local directories, hub ids, zoo names and built models.

Safetensors are preferred and pickle checkpoints (``.bin``, ``.pt``, ``.ckpt``) refused unless
``allow_pickle=True``; ``trust_remote_code`` stays off unless asked for. When the hub cannot be reached
the error says which id failed and how to point at a local directory instead.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from workbench.arch import SUPPORTED_MODEL_TYPES, unsupported_message
from workbench.errors import ModelNotFoundError, UnsafeCheckpointError, UnsupportedFamilyError, WorkbenchError
from workbench.models.model import WorkbenchModel
from workbench.zoo.registry import resolve_zoo, zoo

Backend = Literal["hf", "tl", "nnsight"]
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def _check_weights(directory: Path, allow_pickle: bool) -> None:
    files = [p for p in directory.iterdir() if p.is_file()]
    if any(p.suffix == ".safetensors" for p in files):
        return
    pickles = [p.name for p in files if p.suffix in PICKLE_SUFFIXES]
    if pickles and not allow_pickle:
        raise UnsafeCheckpointError(
            f"{directory} holds only pickle weights ({pickles[0]}); pass allow_pickle=True (--allow-pickle) "
            "if you trust them"
        )
    if not pickles:
        raise ModelNotFoundError(f"{directory} has no model weights (*.safetensors)")


def _model_class(config: Any) -> Any:
    import transformers

    for arch in getattr(config, "architectures", None) or []:
        cls = getattr(transformers, arch, None)
        if cls is not None:
            return cls
    if type(config) in transformers.AutoModelForCausalLM._model_mapping:
        return transformers.AutoModelForCausalLM
    return transformers.AutoModel


def _from_pretrained(
    location: str,
    *,
    dtype: torch.dtype | None,
    device_map: Any,
    trust_remote_code: bool,
    revision: str | None,
    allow_generic: bool,
) -> tuple[nn.Module, Any]:
    from transformers import AutoConfig, AutoTokenizer

    common = {"trust_remote_code": trust_remote_code, "revision": revision}
    config = AutoConfig.from_pretrained(location, **common)
    if not allow_generic and config.model_type not in SUPPORTED_MODEL_TYPES:  # fail before loading weights
        raise UnsupportedFamilyError(unsupported_message(config.model_type))
    model = _model_class(config).from_pretrained(
        location, config=config, dtype=dtype or "auto", device_map=device_map, use_safetensors=None, **common
    )
    try:
        tokenizer = AutoTokenizer.from_pretrained(location, **common)
    except (OSError, ValueError):
        tokenizer = None
    return model, tokenizer


def _load_source(
    source: str | Path,
    *,
    dtype: torch.dtype | None,
    device_map: Any,
    trust_remote_code: bool,
    allow_pickle: bool,
    revision: str | None,
    allow_generic: bool,
) -> tuple[nn.Module, Any, str]:
    text = str(source)
    if text in zoo():
        location, label = str(resolve_zoo(text)), text
    elif Path(text).expanduser().is_dir():
        directory = Path(text).expanduser()
        if not (directory / "config.json").is_file():
            raise ModelNotFoundError(f"{directory} is not a model directory (no config.json)")
        _check_weights(directory, allow_pickle)
        location, label = str(directory), str(directory)
    elif Path(text).expanduser().exists() or not HUB_ID.match(text):
        raise ModelNotFoundError(
            f"{text!r} is neither a zoo name ({', '.join(zoo())}), a model directory nor a hub id"
        )
    else:
        location, label = text, text
    try:
        model, tokenizer = _from_pretrained(
            location,
            dtype=dtype,
            device_map=device_map,
            trust_remote_code=trust_remote_code,
            revision=revision,
            allow_generic=allow_generic,
        )
    except OSError as exc:
        if location == text and not Path(text).exists():
            raise ModelNotFoundError(
                f"could not load hub id {text!r} (hub unreachable or no such model); download it where the "
                "hub is reachable and pass its local directory instead, e.g. `workbench card ./models/NAME`"
            ) from exc
        raise ModelNotFoundError(f"could not load {label!r}: {str(exc).splitlines()[0]}") from exc
    except ValueError as exc:
        if "trust_remote_code" in str(exc):
            raise WorkbenchError(
                f"{label!r} needs custom code; pass trust_remote_code=True if you trust it"
            ) from exc
        raise
    return model, tokenizer, label


def _is_nnsight(source: Any) -> bool:
    try:
        from nnsight import NNsight
    except ImportError:
        return False
    return isinstance(source, NNsight)


def load(
    source: Any,
    *,
    backend: Backend = "hf",
    tokenizer: Any = None,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    device_map: str | dict | None = None,
    trust_remote_code: bool = False,
    allow_pickle: bool = False,
    revision: str | None = None,
    allow_generic: bool = False,
) -> WorkbenchModel:
    """Load a model and wrap it with its architecture adapter.

    Args:
        source: Zoo name, local directory, hub id, a built HF ``PreTrainedModel``, a TransformerLens
            ``TransformerBridge`` or an nnsight ``LanguageModel``.
        backend: Which library serves hook points: ``"hf"`` (plain forward hooks), ``"tl"``
            (TransformerBridge) or ``"nnsight"``.
        tokenizer: Tokenizer for a built model (loaded from the source directory otherwise).
        device: Device to move the model to (ignored with ``device_map``).
        dtype: Parameter dtype (default: the checkpoint's).
        device_map: accelerate device map (e.g. ``"auto"``) to spread a model over devices.
        trust_remote_code: Allow a repository's own modeling code.
        allow_pickle: Allow pickle checkpoints when no safetensors exist.
        revision: Hub revision (branch, tag or commit).
        allow_generic: Accept an unsupported family with structure-found residual points only.

    Raises:
        ModelNotFoundError: The source cannot be resolved or has no weights.
        UnsupportedFamilyError: No adapter for the family and ``allow_generic`` is False.
    """
    label = type(source).__name__
    native: Any = None
    if isinstance(source, str | Path):
        model, loaded_tok, label = _load_source(
            source,
            dtype=dtype,
            device_map=device_map,
            trust_remote_code=trust_remote_code,
            allow_pickle=allow_pickle,
            revision=revision,
            allow_generic=allow_generic,
        )
        tokenizer = tokenizer or loaded_tok
    elif type(source).__name__ == "TransformerBridge":
        native, model, backend = source, source.original_model, "tl"
        tokenizer = tokenizer or getattr(source, "tokenizer", None)
    elif _is_nnsight(source):
        native, model, backend = source, source._module, "nnsight"
        tokenizer = tokenizer or getattr(source, "tokenizer", None)
    elif isinstance(source, nn.Module) and hasattr(source, "config"):
        model = source
    else:
        raise ModelNotFoundError(f"cannot load a {type(source).__name__}; pass a name, directory or HF model")
    if device is not None and device_map is None:
        model = model.to(device)
    if dtype is not None and device_map is None:
        model = model.to(dtype)
    model.eval()
    return WorkbenchModel(
        model, tokenizer, source=label, backend=backend, native=native, allow_generic=allow_generic
    )
