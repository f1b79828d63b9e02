"""``workbench.load``: one entry point for local directories, hub ids, zoo names and built models.

For a local directory the files transformers would load are checked first: pickle weights
(``pytorch_model.bin`` or its shards) are refused unless ``allow_pickle=True``, truncated safetensors and
configs transformers cannot read fail in one line. ``trust_remote_code`` stays off unless asked for. A
bare name close to a zoo name is taken for a typo and never sent to the hub; when the hub cannot be
reached only cached copies are tried (no retries), and the error says which id failed and how to point at
a local directory instead.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import socket
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import torch
from torch import nn

from workbench.arch import discoverable, unsupported_message
from workbench.errors import (
    CheckpointError,
    ModelNotFoundError,
    UnsafeCheckpointError,
    UnsupportedFamilyError,
    WorkbenchError,
)
from workbench.models.gguf import gguf_file
from workbench.models.memory import check_fits, estimate
from workbench.models.model import WorkbenchModel
from workbench.models.quantize import (
    check_quantised,
    loaded_quantised,
    quantization_config,
    use_reference_kernels,
)
from workbench.zoo.registry import resolve_zoo, zoo

Backend = Literal["hf", "tl", "nnsight"]
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
ZOO_TYPO_CUTOFF = 0.8  # difflib ratio above which a bare name is taken for a misspelt zoo name
PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")


def _weight_files(directory: Path) -> list[Path]:
    """The files ``from_pretrained(directory, use_safetensors=None)`` would load, in transformers' order.

    Mirrors ``_get_resolved_checkpoint_files`` (transformers/modeling_utils.py) for a local folder without
    variant or subfolder: the config's ``transformers_weights``, else ``model.safetensors``, its index,
    ``pytorch_model.bin``, its index. An index stands for the shards its ``weight_map`` names.

    Raises:
        CheckpointError: The chosen index is unreadable or names a shard outside the directory.
    """
    from transformers.utils import (
        CONFIG_NAME,
        SAFE_WEIGHTS_INDEX_NAME,
        SAFE_WEIGHTS_NAME,
        WEIGHTS_INDEX_NAME,
        WEIGHTS_NAME,
    )

    explicit = _read_json(directory / CONFIG_NAME).get("transformers_weights")
    names = (
        [explicit]
        if explicit
        else [SAFE_WEIGHTS_NAME, SAFE_WEIGHTS_INDEX_NAME, WEIGHTS_NAME, WEIGHTS_INDEX_NAME]
    )
    chosen = next((directory / n for n in names if (directory / n).is_file()), None)
    if chosen is None:
        return []
    files = [chosen]
    if chosen.name.endswith(".index.json"):
        weight_map = _read_json(chosen).get("weight_map")
        if not isinstance(weight_map, dict):
            raise CheckpointError(f"{chosen} has no weight_map")
        files = [directory / name for name in dict.fromkeys(weight_map.values())]
    outside = [f for f in files if f.resolve().parent != directory.resolve()]
    if outside:
        raise CheckpointError(f"{directory}: weights outside the directory named ({outside[0]})")
    return files


def _read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path} is not readable JSON ({exc})") from exc
    if not isinstance(value, dict):
        raise CheckpointError(f"{path} does not hold a JSON object")
    return value


def _check_weights(directory: Path, allow_pickle: bool) -> None:
    """Refuse what transformers would load from ``directory`` when it is a pickle (unless allowed) or broken.

    Raises:
        ModelNotFoundError: No weight file transformers would pick, or a shard is missing.
        UnsafeCheckpointError: The chosen weights are pickle and ``allow_pickle`` is False.
        CheckpointError: A chosen safetensors file is truncated or corrupt.
    """
    from safetensors import SafetensorError, safe_open

    files = _weight_files(directory)
    if not files:
        raise ModelNotFoundError(
            f"{directory} has no model weights (model.safetensors, model.safetensors.index.json or, with "
            "--allow-pickle, pytorch_model.bin)"
        )
    missing = [f for f in files if not f.is_file()]
    if missing:
        raise ModelNotFoundError(f"{directory} lacks the weight shard {missing[0].name}")
    pickles = [f for f in files if f.suffix != ".safetensors"]
    if pickles and not allow_pickle:
        raise UnsafeCheckpointError(
            f"{directory} would load pickle weights ({pickles[0].name}); pass allow_pickle=True "
            "(--allow-pickle) if you trust them"
        )
    for file in files:
        if file.suffix == ".safetensors":
            try:  # reads and validates the header only: a truncated file fails here
                with safe_open(file, framework="pt"):
                    pass
            except (SafetensorError, OSError) as exc:
                raise CheckpointError(f"{file} is not a valid safetensors file (truncated?): {exc}") from exc


def _hub_reachable(timeout: float = 2.0) -> bool:
    """False when the hub is offline by setting or its endpoint cannot be connected to (no retries)."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False
    if any(os.environ.get(v) for v in PROXY_VARIABLES):  # a proxy decides; let the hub client try
        return True
    endpoint = urlsplit(constants.ENDPOINT)
    port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    try:
        socket.create_connection((endpoint.hostname, port), timeout=timeout).close()
    except OSError:
        return False
    return True


def _unknown_name_message(text: str, hub_id: bool) -> str:
    """Why ``text`` names no model, with the closest zoo name when there is one."""
    names = list(zoo())
    close = difflib.get_close_matches(text, names, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    if hub_id:  # a bare name close to a zoo name: the hub is not asked
        return f"no zoo model or directory {text!r}; {hint}(write a hub id as ORG/NAME to ask the hub)"
    return f"{text!r} is neither a zoo name nor a model directory nor a hub id; {hint}zoo: {', '.join(names)}"


def _model_class(config: Any) -> Any:
    import transformers

    for arch in getattr(config, "architectures", None) or []:
        cls = getattr(transformers, arch, None)
        if cls is not None:
            return cls
    if type(config) in transformers.AutoModelForCausalLM._model_mapping:
        return transformers.AutoModelForCausalLM
    return transformers.AutoModel


def _on_meta(config: Any, dtype: torch.dtype | None) -> nn.Module:
    """The model built from its config on the meta device: shapes and structure, no weights in memory."""
    cls = _model_class(config)
    with torch.device("meta"):
        if hasattr(cls, "from_config"):
            return cls.from_config(config, dtype=dtype or getattr(config, "dtype", None) or torch.float32)
        return cls(config)


def config_only(source: str | Path) -> bool:
    """Whether ``source`` is a local model directory with a config but no weight files (``card`` and
    ``hooks`` then build the model on the meta device)."""
    path = Path(str(source)).expanduser()
    return path.is_dir() and (path / "config.json").is_file() and not _weight_files(path)


def _read_config(location: str, label: str, common: dict[str, Any]) -> Any:
    """``AutoConfig.from_pretrained``, its value errors and unknown ``model_type`` turned into one line."""
    from transformers import CONFIG_MAPPING, AutoConfig, PreTrainedConfig
    from transformers import __version__ as transformers_version

    try:
        raw, _ = PreTrainedConfig.get_config_dict(location, **common)
        model_type = raw.get("model_type")
        if model_type and model_type not in CONFIG_MAPPING and "auto_map" not in raw:
            raise UnsupportedFamilyError(
                f"{label!r} has model_type {model_type!r}, which transformers {transformers_version} does "
                "not know"
            )
        return AutoConfig.from_pretrained(location, **common)
    except ValueError as exc:
        if "trust_remote_code" in str(exc):
            raise WorkbenchError(
                f"{label!r} needs custom code; pass trust_remote_code=True if you trust it"
            ) from exc
        raise CheckpointError(f"could not read the config of {label!r}: {_first_line(exc)}") from exc


def _first_line(exc: BaseException) -> str:
    """The first line (first sentence of a long one) of an exception's message."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text if len(text) <= 200 else text.split(". ")[0] + "."


def _from_pretrained(
    location: str,
    label: str,
    *,
    dtype: torch.dtype | None,
    placement: dict[str, Any],
    trust_remote_code: bool,
    revision: str | None,
    allow_generic: bool,
    local_files_only: bool,
    meta: bool = False,
    context: int | None = None,
    gguf_name: str | None = None,
) -> tuple[nn.Module, Any]:
    from safetensors import SafetensorError

    common = {
        "trust_remote_code": trust_remote_code,
        "revision": revision,
        "local_files_only": local_files_only,
    }
    if gguf_name is not None:  # transformers' GGUF loader: config, weights and tokenizer from the file
        common["gguf_file"] = gguf_name
    config = _read_config(location, label, common)
    if not allow_generic and not discoverable(config.model_type):  # fail before loading weights
        raise UnsupportedFamilyError(unsupported_message(config.model_type))
    if (
        not meta
        and placement.get("device_map") is None
        and getattr(config, "quantization_config", None) is None
        and "quantization_config" not in placement  # bytes per weight are the backend's
    ):
        shapes = WorkbenchModel(_on_meta(config, dtype), None, source=label, allow_generic=allow_generic)
        check_fits(estimate(shapes, dtype, context), label)  # before any weight is read
    try:
        model = (
            _on_meta(config, dtype)
            if meta
            else _model_class(config).from_pretrained(
                location,
                config=config,
                dtype=dtype or "auto",
                use_safetensors=None,
                **placement,
                **common,
            )
        )
    except SafetensorError as exc:  # a hub download or a shard the directory check could not see
        raise CheckpointError(f"could not read the weights of {label!r}: {_first_line(exc)}") from exc
    if meta:  # where the checkpoint's other files are (the card reads them), as from_pretrained records
        model.name_or_path = model.config._name_or_path = location
    if gguf_name is not None:
        model.config.gguf_file = gguf_name  # the card reads the file's tensor types
    return model, _tokenizer(location, label, common)


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "vocab.txt", "merges.txt")


def _tokenizer(location: str, label: str, common: dict[str, Any]) -> Any:
    """The source's tokenizer, or None when it has none (a local directory without tokenizer files is
    not asked: some families' tokenizer classes fail on a missing vocabulary with a TypeError).

    Raises:
        CheckpointError: The tokenizer needs a package that is not installed (XLM's sacremoses ...).
    """
    from transformers import AutoTokenizer

    path = Path(location)
    has_files = any((path / n).is_file() for n in TOKENIZER_FILES) or any(path.glob("*.model"))
    if path.is_dir() and not has_files and "gguf_file" not in common:
        return None
    try:
        return AutoTokenizer.from_pretrained(location, **common)
    except (OSError, ValueError):
        return None
    except ImportError as exc:
        raise CheckpointError(f"the tokenizer of {label!r} needs a package: {_first_line(exc)}") from exc


def _load_source(
    source: str | Path,
    *,
    dtype: torch.dtype | None,
    placement: dict[str, Any],
    trust_remote_code: bool,
    allow_pickle: bool,
    revision: str | None,
    allow_generic: bool,
    meta: bool = False,
    context: int | None = None,
) -> tuple[nn.Module, Any, str]:
    text = str(source)
    path = Path(text).expanduser()
    hub, gguf = False, None
    if not text.strip():
        raise ModelNotFoundError(
            f"the model name is empty; pass a zoo name ({', '.join(zoo())}), a directory or a hub id"
        )
    if text in zoo():
        location, label = str(resolve_zoo(text)), text
    elif (gguf := gguf_file(path)) is not None:
        location, label = str(gguf.parent), str(gguf)
    elif path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelNotFoundError(f"{path} is not a model directory (no config.json)")
        if not meta:  # on the meta device no weight is read
            _check_weights(path, allow_pickle)
        location, label = str(path), str(path)
    elif path.exists() or not HUB_ID.match(text):
        raise ModelNotFoundError(_unknown_name_message(text, hub_id=False))
    elif "/" not in text and difflib.get_close_matches(text, zoo(), n=1, cutoff=ZOO_TYPO_CUTOFF):
        raise ModelNotFoundError(_unknown_name_message(text, hub_id=True))  # misspelt zoo name: no hub
    else:
        location, label, hub = text, text, True
    try:
        model, tokenizer = _from_pretrained(
            location,
            label,
            dtype=dtype,
            placement=placement,
            trust_remote_code=trust_remote_code,
            revision=revision,
            allow_generic=allow_generic,
            local_files_only=hub
            and not _hub_reachable(),  # cached copies only; no retries against no network
            meta=meta,
            context=context,
            gguf_name=gguf.name if gguf is not None else None,
        )
    except OSError as exc:
        if hub:
            raise ModelNotFoundError(
                f"could not load hub id {text!r} (hub unreachable or no such model); download it where the "
                "hub is reachable and pass its local directory instead, e.g. `workbench card ./models/NAME`"
            ) from exc
        raise ModelNotFoundError(f"could not load {label!r}: {_first_line(exc)}") from exc
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
    max_memory: dict[Any, int | str] | None = None,
    offload_folder: str | Path | None = None,
    context: int | None = None,
    quantization: Any = None,
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
        device: Device to move the model to (ignored with ``device_map``). ``"meta"`` builds a named
            model from its config alone, no weights read or allocated (cards and hook listings of
            models that do not fit; a forward pass gives shapes only).
        dtype: Parameter dtype (default: the checkpoint's).
        device_map: accelerate device map (e.g. ``"auto"``) to spread a model over devices, the CPU and
            the disk; hooks, taps, capture, generation and interventions work on offloaded modules.
        max_memory: Per-device limits for ``device_map`` (``{"cpu": "2GB", 0: "20GB"}``); what does not fit
            goes to the disk.
        offload_folder: Where disk-offloaded weights are kept (needed when any are).
        quantization: Quantise on load: ``{"method": "quanto" | "torchao" | "bitsandbytes", "bits": 8}``
            (or a transformers quantisation config; :mod:`workbench.models.quantize`). A checkpoint saved
            with a ``quantization_config`` loads quantised without it.
        context: Tokens of KV cache the memory check counts (default :data:`memory.DEFAULT_CONTEXT`); without
            ``device_map`` a model whose weights and cache exceed the free memory is refused before any
            weight is read.
        trust_remote_code: Allow a repository's own modeling code.
        allow_pickle: Allow pickle weights when they are what transformers would load.
        revision: Hub revision (branch, tag or commit).
        allow_generic: Accept an unsupported family with structure-found residual points only.

    Raises:
        ModelNotFoundError: The source cannot be resolved or has no weights.
        UnsafeCheckpointError: The weights to load are pickle and ``allow_pickle`` is False.
        CheckpointError: The config or weights exist but cannot be read.
        UnsupportedFamilyError: transformers does not know the ``model_type``, or no adapter for the family
            and ``allow_generic`` is False.
        ModelTooLargeError: The model will not fit in the memory available (the message gives both numbers).
    """
    label = type(source).__name__
    native: Any = None
    if isinstance(source, str | Path):
        if device_map is None and (max_memory is not None or offload_folder is not None):
            raise WorkbenchError("max_memory and offload_folder place a model with device_map: give one")
        placement = {"device_map": device_map}
        if device_map is not None:
            placement |= {"max_memory": max_memory, "offload_folder": offload_folder}
        if quantization is not None:
            placement["quantization_config"] = quantization_config(quantization)
        model, loaded_tok, label = _load_source(
            source,
            dtype=dtype,
            placement=placement,
            context=context,
            trust_remote_code=trust_remote_code,
            allow_pickle=allow_pickle,
            revision=revision,
            allow_generic=allow_generic,
            meta=str(device) == "meta",
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
    if dtype is not None and device_map is None and not loaded_quantised(model):
        model = model.to(dtype)
    if quantization is not None:
        check_quantised(model, quantization)
    use_reference_kernels(model)
    model.eval()
    return WorkbenchModel(
        model, tokenizer, source=label, backend=backend, native=native, allow_generic=allow_generic
    )
