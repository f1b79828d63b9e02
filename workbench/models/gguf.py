"""GGUF files (the format of llama.cpp, Ollama and LM Studio): finding one, reading its tensor types per
tensor kind for the card, and writing one from a loaded Llama-family model (the zoo's ground truth for the
GGUF loader).

Loading goes through transformers' own GGUF support (``from_pretrained(directory, gguf_file=name)``),
which dequantises every tensor to float32. The writer follows llama.cpp's ``convert_hf_to_gguf.py``: the
``llama`` architecture's metadata, the byte-level BPE vocabulary as ``gpt2`` tokens and merges, q / k rows
permuted into llama.cpp's rotary layout, and each matrix in the requested type where its rows split into
whole quantisation blocks (others in F16, as llama.cpp falls back); vectors stay F32.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import torch

from workbench.errors import CheckpointError, ModelNotFoundError, WorkbenchError
from workbench.models.model import WorkbenchModel

SUFFIX = ".gguf"
WRITABLE = ("F32", "F16", "Q8_0", "Q4_0")
KINDS = {  # GGUF tensor-name stems by kind (llama.cpp's names)
    "embedding": ("token_embd",),
    "unembedding": ("output",),
    "attention": ("attn_q", "attn_k", "attn_v", "attn_output", "attn_qkv"),
    "mlp": ("ffn_gate", "ffn_up", "ffn_down"),
    "norm": ("attn_norm", "ffn_norm", "output_norm"),
}
BLOCK_NAMES = {
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
    "input_layernorm": "attn_norm",
    "post_attention_layernorm": "ffn_norm",
}


def gguf_file(source: str | Path) -> Path | None:
    """The GGUF file a source names: the file itself, or the one ``.gguf`` of a directory without a
    ``config.json``; None when the source is not GGUF.

    Raises:
        ModelNotFoundError: A directory holding several GGUF files (name the one to load).
    """
    path = Path(str(source)).expanduser()
    if path.suffix == SUFFIX and path.is_file():
        return path
    if not path.is_dir() or (path / "config.json").is_file():
        return None
    found = sorted(path.glob(f"*{SUFFIX}"))
    if len(found) > 1:
        names = ", ".join(p.name for p in found)
        raise ModelNotFoundError(f"{path} holds several GGUF files ({names}); pass the one to load")
    return found[0] if found else None


def _kind(name: str) -> str:
    stem = name.split(".")[-2]
    return next((kind for kind, stems in KINDS.items() if stem in stems), "other")


def tensor_types(path: Path) -> dict[str, dict[str, int]]:
    """Per tensor kind, how many tensors the file stores in each GGML type (``{"mlp": {"Q8_0": 8, ...}}``).

    Raises:
        CheckpointError: Not a readable GGUF file.
    """
    from gguf import GGUFReader

    try:
        reader = GGUFReader(str(path))
    except (ValueError, OSError, KeyError) as error:
        raise CheckpointError(f"{path.name} is not a readable GGUF file: {error}") from None
    counts: dict[str, Counter[str]] = {}
    for tensor in reader.tensors:
        counts.setdefault(_kind(tensor.name), Counter())[tensor.tensor_type.name] += 1
    return {kind: dict(sorted(c.items())) for kind, c in counts.items()}


def _rotary_rows(weight: np.ndarray, heads: int) -> np.ndarray:
    """llama.cpp's row order for q / k: each head's two rotary halves interleaved (the inverse of
    transformers' ``_reverse_permute_weights``)."""
    half = weight.shape[0] // heads // 2
    return weight.reshape(heads, 2, half, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


def _tokens(tokenizer: Any) -> tuple[list[str], list[int], list[str]]:
    vocab = tokenizer.get_vocab()
    tokens = [""] * len(vocab)
    for text, index in vocab.items():
        tokens[index] = text
    special = set(tokenizer.all_special_tokens)
    types = [3 if t in special else 1 for t in tokens]  # llama.cpp: 1 normal, 3 control
    model = json.loads(tokenizer.backend_tokenizer.to_str())["model"]
    if model.get("type") != "BPE":
        raise WorkbenchError("the GGUF writer takes byte-level BPE tokenizers only")
    merges = [" ".join(m) if isinstance(m, list) else m for m in model["merges"]]
    return tokens, types, merges


def write_gguf(model: WorkbenchModel, path: str | Path, qtype: str = "F16") -> Path:
    """Write a Llama-family model with its tokenizer as one GGUF file.

    Args:
        model: A loaded ``llama`` model with a byte-level BPE tokenizer.
        path: The file to write.
        qtype: The matrices' GGML type (one of :data:`WRITABLE`).

    Raises:
        WorkbenchError: Another family, tokenizer or type.
    """
    import gguf
    from gguf.quants import quantize

    config, hf = model.config, model.hf
    if config.model_type != "llama" or model.tokenizer is None:
        raise WorkbenchError("the GGUF writer takes Llama-family models with a tokenizer")
    if qtype not in WRITABLE:
        raise WorkbenchError(f"GGUF type {qtype!r}: expected one of {', '.join(WRITABLE)}")
    kind = gguf.GGMLQuantizationType[qtype]
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_rope_freq_base(config.rope_parameters["rope_theta"])
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_rope_dimension_count(config.head_dim)
    writer.add_vocab_size(config.vocab_size)
    tokens, types, merges = _tokens(model.tokenizer)
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    bos = model.tokenizer.bos_token_id  # what encoding does, not the attribute (a post-processor may add it)
    writer.add_add_bos_token(bos is not None and model.tokenizer("a")["input_ids"][:1] == [bos])
    for add, value in (
        (writer.add_bos_token_id, config.bos_token_id),
        (writer.add_eos_token_id, config.eos_token_id),
        (writer.add_pad_token_id, config.pad_token_id),
    ):
        if value is not None:
            add(value)

    def add_tensor(name: str, tensor: torch.Tensor, heads: int | None = None) -> None:
        array = tensor.detach().float().cpu().numpy()
        if heads:
            array = np.ascontiguousarray(_rotary_rows(array, heads))
        if array.ndim == 1 or kind == gguf.GGMLQuantizationType.F32:
            writer.add_tensor(name, array.astype(np.float32))
        elif kind == gguf.GGMLQuantizationType.F16 or array.shape[-1] % gguf.GGML_QUANT_SIZES[kind][0]:
            writer.add_tensor(name, array.astype(np.float16))
        else:
            packed = quantize(array, kind)
            writer.add_tensor(name, packed, raw_shape=packed.shape, raw_dtype=kind)

    add_tensor("token_embd.weight", hf.model.embed_tokens.weight)
    for i, layer in enumerate(hf.model.layers):
        for hf_name, gguf_name in BLOCK_NAMES.items():
            heads = {"attn_q": config.num_attention_heads, "attn_k": config.num_key_value_heads}.get(
                gguf_name
            )
            add_tensor(f"blk.{i}.{gguf_name}.weight", layer.get_submodule(hf_name).weight, heads)
    add_tensor("output_norm.weight", hf.model.norm.weight)
    add_tensor("output.weight", hf.lm_head.weight)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return Path(path)
