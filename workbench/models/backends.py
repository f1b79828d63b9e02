"""Serving hook points through TransformerLens's TransformerBridge and through nnsight.

The HF path (plain forward hooks) is the reference; these backends read the *same* canonical points from
the neighbouring libraries so results can be cross-checked and users can stay in the tool they know.

- ``tl``: the bridge's TransformerLens names (``attn.hook_rot_q`` for post-RoPE queries, ``mlp.gate.hook_out``
  for router logits, ``mlp.shared_expert(s).hook_out`` for shared experts ...) mapped to the canonical
  vocabulary, layouts converted where they differ. A point whose bridge hook the bridge of this family
  lacks (e.g. DeepSeek's expert ids and weights) raises ``HookPointError``.
- ``nnsight``: module inputs and outputs read with ``.input`` / ``.output`` inside one trace, requested in
  the order the modules run (nnsight refuses out-of-order reads). Attention-function taps (q, k, v,
  scores, KV) are not module boundaries, so nnsight does not serve them.

Both rank the top-k of routers that return it unsorted as the HF path does (:mod:`workbench.hooks.topk`),
reading the router's logits and ids alongside.
"""

from __future__ import annotations

import re
from typing import Any, Protocol

import torch
from torch import nn

from workbench.arch import ArchAdapter
from workbench.arch.cfg import ModelCfg
from workbench.errors import HookPointError, WorkbenchError
from workbench.hooks.implementation import attention_implementation
from workbench.hooks.points import ResolvedPoint
from workbench.hooks.topk import dense_topk, rank


class Served(Protocol):
    """What a backend reads of a loaded model (``WorkbenchModel`` has all of it)."""

    hf: nn.Module
    tokenizer: Any
    adapter: ArchAdapter
    backend: str

    @property
    def config(self) -> Any: ...
    @property
    def cfg(self) -> ModelCfg: ...
    @property
    def points(self) -> dict[str, ResolvedPoint]: ...
    @property
    def native(self) -> Any: ...
    @property
    def device(self) -> torch.device: ...


# canonical block suffix -> bridge suffix; RoPE families read post-rotary q/k (MLA: see _tl_suffix)
_TL_BLOCK: dict[str, str] = {
    "hook_resid_pre": "hook_resid_pre",
    "hook_resid_mid": "hook_resid_mid",
    "hook_resid_post": "hook_resid_post",
    "attn.hook_v": "attn.hook_v",
    "attn.hook_attn_scores": "attn.hook_attn_scores",
    "attn.hook_pattern": "attn.hook_pattern",
    "attn.hook_z": "attn.hook_z",
    "hook_attn_out": "hook_attn_out",
    "mlp.hook_post": "mlp.hook_post",
    "hook_mlp_out": "hook_mlp_out",
    "moe.hook_router_logits": "mlp.gate.hook_out",
    "moe.hook_expert_indices": "mlp.hook_expert_indices",
    "moe.hook_expert_weights": "mlp.hook_expert_weights",
}
_TL_MODEL: dict[str, str] = {
    "hook_embed": "hook_embed",
    "hook_pos_embed": "hook_pos_embed",
    "ln_final.hook_normalized": "ln_final.hook_out",
}
_TL_DERIVED = ("attn.hook_q", "attn.hook_k", "moe.hook_shared_out")  # named by _tl_suffix per family
_BLOCK = re.compile(r"^blocks\.(\d+)\.(.+)$")


def tl_maps(template: str) -> bool:
    """Whether the bridge backend maps a point template (a family's bridge may still lack the hook)."""
    suffix = template.removeprefix("blocks.{L}.")
    return suffix in _TL_BLOCK or suffix in _TL_DERIVED or template in _TL_MODEL


def _is_mla(model: Served) -> bool:
    return model.adapter.family != "generic" and model.cfg.kv_layout == "MLA"


def _tl_suffix(model: Served, suffix: str) -> str | None:
    """The bridge's name for a canonical block suffix (None: no bridge counterpart)."""
    if suffix in ("attn.hook_q", "attn.hook_k") and _is_mla(model):
        return suffix  # the MLA bridge's hook_rot_q / hook_rot_k hold only the RoPE slice
    if suffix in ("attn.hook_q", "attn.hook_k"):
        rotary = "hook_rot_" if model.adapter.positional == "rope" else "hook_"
        return f"attn.{rotary}{suffix[-1]}"
    if suffix == "moe.hook_shared_out" and model.adapter.shared_experts:
        return f"{model.adapter.shared_experts}.hook_out"  # bridge components keep the HF module names
    return _TL_BLOCK.get(suffix)


def _tl_name(model: Served, name: str) -> str:
    """The bridge hook serving a canonical point.

    Raises:
        HookPointError: The point has no counterpart in the bridge built for this family.
    """
    match = _BLOCK.match(name)
    if match is None:
        tl_name = _TL_MODEL.get(name)
    else:
        layer, suffix = match.groups()
        tl_suffix = _tl_suffix(model, suffix)
        tl_name = f"blocks.{layer}.{tl_suffix}" if tl_suffix else None
    if tl_name is None or tl_name not in model.native.hook_dict:
        missing = f" (the bridge has no {tl_name})" if tl_name else ""
        raise HookPointError(
            f"{name} is not served by the TransformerBridge backend for {model.adapter.family}{missing}; "
            "use backend='hf'"
        )
    return tl_name


def _tl_layout(model: Served, name: str, value: torch.Tensor) -> torch.Tensor:
    """A bridge tensor in the canonical layout: the MLA bridge keeps q, k, v as [batch, head, pos, d] and
    splits ``hook_z`` into heads of its own; the other bridges already match."""
    if not _is_mla(model):
        return value
    if name.endswith(("attn.hook_q", "attn.hook_k", "attn.hook_v")):
        return value.transpose(1, 2)
    if name.endswith("attn.hook_z"):
        return value.flatten(-2).unflatten(-1, (model.cfg.n_heads, -1))
    return value


def wrap_native(model: Served) -> Any:
    """Build the backend object around the HF model (the bridge replaces submodules in place)."""
    if model.backend == "tl":
        from transformer_lens.model_bridge.sources._bridge_builder import build_bridge_from_module

        module, architecture = model.adapter.tl_module(model.hf)
        try:
            return build_bridge_from_module(
                module, architecture, hf_config=model.config, tokenizer=model.tokenizer
            )
        except Exception as exc:
            raise WorkbenchError(f"TransformerBridge cannot wrap {architecture}: {exc}") from exc
    if model.backend == "nnsight":
        from nnsight import NNsight

        return NNsight(model.hf)
    raise WorkbenchError(f"unknown backend {model.backend!r}; use 'hf', 'tl' or 'nnsight'")


def _read_tl(model: Served, batch: dict[str, torch.Tensor], names: list[str]) -> dict[str, torch.Tensor]:
    tl_names = {name: _tl_name(model, name) for name in names}
    wanted = set(tl_names.values())
    for name in names:  # expert weights come back dense over experts; gather needs the indices
        if name.endswith("moe.hook_expert_weights"):
            wanted.add(_tl_name(model, name.replace("weights", "indices")))
    with torch.no_grad():
        _, cache = model.native.run_with_cache(
            batch["input_ids"], attention_mask=batch.get("attention_mask"), names_filter=sorted(wanted)
        )
    out: dict[str, torch.Tensor] = {}
    for name, tl_name in tl_names.items():
        value = cache[tl_name]
        if name.endswith("moe.hook_expert_weights") and value.shape[-1] == model.cfg.n_experts:
            value = value.gather(-1, cache[_tl_name(model, name.replace("weights", "indices"))])
        out[name] = _tl_layout(model, name, value)
    return out


def _execution_order(model: Served, names: list[str]) -> list[tuple[str, bool]]:
    """Names sorted by when their module boundary fires, with whether the module's output is a tuple."""
    fired: dict[str, tuple[int, bool]] = {}
    handles = []
    counter = iter(range(1 << 30))
    for name in names:
        point = model.points[name]
        if point.site.kind == "tap":
            raise HookPointError(
                f"{name} is inside the attention function; nnsight serves module points only"
            )

        def record(*args: Any, name: str = name) -> None:
            output = args[-1]
            fired.setdefault(name, (next(counter), isinstance(output, tuple | list)))

        if point.site.kind == "input":
            handles.append(point.module.register_forward_pre_hook(record))
        else:
            handles.append(point.module.register_forward_hook(record))
    try:
        with torch.no_grad():
            model.hf(input_ids=torch.zeros(1, 2, dtype=torch.long, device=model.device))
    finally:
        for handle in handles:
            handle.remove()
    return sorted(((n, fired[n][1]) for n in names if n in fired), key=lambda item: fired[item[0]][0])


def _read_nnsight(model: Served, batch: dict[str, torch.Tensor], names: list[str]) -> dict[str, torch.Tensor]:

    module_names = {id(m): n for n, m in model.hf.named_modules()}
    needs_eager = any(n.endswith("attn.hook_pattern") for n in names)
    impl = "eager" if needs_eager else model.config._attn_implementation
    saved: dict[str, Any] = {}
    with attention_implementation(model.hf, impl):
        order = _execution_order(model, names)
        with torch.no_grad(), model.native.trace(**batch):
            for name, is_tuple in order:
                point = model.points[name]
                envoy = model.native.get(module_names[id(point.module)])
                if point.site.kind == "input":
                    value = envoy.inputs[0][point.site.arg] if point.site.arg else envoy.input
                else:
                    value = envoy.output
                    if is_tuple:
                        value = value[point.site.index or 0]
                saved[name] = value.save()
    n_heads = model.cfg.n_heads
    out = {}
    for name, _ in order:
        value = saved[name]
        site = model.points[name].site
        if site.dense_topk is not None:
            value = dense_topk(value, site.dense_topk)
        if site.flat and value.dim() == 2:  # [batch * pos, d] -> [batch, pos, d]
            value = value.unflatten(0, (next(iter(batch.values())).shape[0], -1))
        out[name] = value.unflatten(-1, (n_heads, -1)) if site.split_heads else value
    return out


def _router_companions(model: Served, names: list[str]) -> list[str]:
    """The names plus the logits and ids of each router whose top-k must be ranked after reading."""
    wanted = dict.fromkeys(names)
    for name in names:
        if model.points[name].site.rank_topk:
            prefix = name.rsplit(".", 1)[0]
            wanted.update(dict.fromkeys((f"{prefix}.hook_router_logits", f"{prefix}.hook_expert_indices")))
    return list(wanted)


def _rank_topk(model: Served, values: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Unsorted routers' ids and weights ranked by selection score, as the HF path serves them."""
    ranked = dict(values)
    for name, value in values.items():
        point = model.points[name]
        if point.site.rank_topk:
            prefix = name.rsplit(".", 1)[0]
            logits, indices = values[f"{prefix}.hook_router_logits"], values[f"{prefix}.hook_expert_indices"]
            ranked[name] = rank(value, model.adapter.topk_order(point.module, logits, indices))
    return ranked


def read_native(model: Served, batch: dict[str, torch.Tensor], names: list[str]) -> dict[str, torch.Tensor]:
    """Read canonical hook points through the model's non-HF backend."""
    read = _read_tl if model.backend == "tl" else _read_nnsight
    values = _rank_topk(model, read(model, batch, _router_companions(model, names)))
    return {name: values[name] for name in names if name in values}
