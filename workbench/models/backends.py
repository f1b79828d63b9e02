"""Serving hook points through TransformerLens's TransformerBridge and through nnsight.

The HF path (plain forward hooks) is the reference; these backends read the *same* canonical points from
the neighbouring libraries so results can be cross-checked and users can stay in the tool they know.

- ``tl``: the bridge's TransformerLens names (``attn.hook_rot_q`` for post-RoPE queries, ``mlp.gate.hook_out``
  for router logits ...) mapped to the canonical vocabulary, layouts converted where they differ.
- ``nnsight``: module inputs and outputs read with ``.input`` / ``.output`` inside one trace, requested in
  the order the modules run (nnsight refuses out-of-order reads). Attention-function taps (q, k, v,
  scores, KV) are not module boundaries, so nnsight does not serve them.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch

from workbench.errors import HookPointError, WorkbenchError

if TYPE_CHECKING:
    from workbench.models.model import WorkbenchModel

Convert = Callable[[torch.Tensor, dict[str, torch.Tensor]], torch.Tensor]

# canonical block suffix -> (bridge suffix, conversion); RoPE families read post-rotary q/k
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
_BLOCK = re.compile(r"^blocks\.(\d+)\.(.+)$")


def _tl_name(model: WorkbenchModel, name: str) -> str:
    match = _BLOCK.match(name)
    if match is None:
        if name in _TL_MODEL:
            return _TL_MODEL[name]
        raise HookPointError(f"{name} is not served by the TransformerBridge backend")
    layer, suffix = match.groups()
    if suffix in ("attn.hook_q", "attn.hook_k"):
        rotary = "hook_rot_" if model.adapter.positional == "rope" else "hook_"
        return f"blocks.{layer}.attn.{rotary}{suffix[-1]}"
    if suffix not in _TL_BLOCK:
        raise HookPointError(f"{name} is not served by the TransformerBridge backend (use backend='hf')")
    return f"blocks.{layer}.{_TL_BLOCK[suffix]}"


def wrap_native(model: WorkbenchModel) -> Any:
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


def _read_tl(
    model: WorkbenchModel, batch: dict[str, torch.Tensor], names: list[str]
) -> dict[str, torch.Tensor]:
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
        if (
            name.endswith("moe.hook_expert_weights")
            and value.shape[-1] == model.adapter.moe_facts(model.config)["experts"]
        ):
            value = value.gather(-1, cache[_tl_name(model, name.replace("weights", "indices"))])
        out[name] = value
    return out


def _execution_order(model: WorkbenchModel, names: list[str]) -> list[tuple[str, bool]]:
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
            fired.setdefault(name, (next(counter), isinstance(output, tuple)))

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


def _read_nnsight(
    model: WorkbenchModel, batch: dict[str, torch.Tensor], names: list[str]
) -> dict[str, torch.Tensor]:
    from workbench.models.model import attention_implementation

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
                    value = envoy.input
                else:
                    value = envoy.output
                    if is_tuple:
                        value = value[point.site.index or 0]
                saved[name] = value.save()
    n_heads = model.adapter.n_heads(model.config)
    out = {}
    for name, _ in order:
        value = saved[name]
        out[name] = value.unflatten(-1, (n_heads, -1)) if model.points[name].site.split_heads else value
    return out


def read_native(
    model: WorkbenchModel, batch: dict[str, torch.Tensor], names: list[str]
) -> dict[str, torch.Tensor]:
    """Read canonical hook points through the model's non-HF backend."""
    if model.backend == "tl":
        return _read_tl(model, batch, names)
    return _read_nnsight(model, batch, names)
