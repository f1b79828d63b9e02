"""The canonical hook-point vocabulary (TransformerLens-style names) and its resolution to modules.

Names follow TransformerLens where TL has the point (``blocks.{L}.hook_resid_pre``,
``blocks.{L}.attn.hook_pattern`` ...) and add ``moe.*`` and ``kv.*`` names for what TL lacks. Each point
has one documented shape; ``docs/hook_points.md`` is generated from :data:`POINTS`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from torch import nn

from workbench.arch.base import ArchAdapter, Site, get_submodule
from workbench.errors import HookPointError


@dataclass(frozen=True)
class PointDoc:
    """Documentation of one canonical hook point."""

    name: str
    shape: str
    meaning: str


POINTS: tuple[PointDoc, ...] = (
    PointDoc("hook_embed", "[batch, pos, d_model]", "Token embedding output (before positions are added)."),
    PointDoc("hook_pos_embed", "[batch, pos, d_model]", "Learned position embedding output (GPT-2, BERT)."),
    PointDoc("blocks.{L}.hook_resid_pre", "[batch, pos, d_model]", "Residual stream entering block L."),
    PointDoc(
        "blocks.{L}.hook_resid_mid",
        "[batch, pos, d_model]",
        "Residual stream after the attention sub-layer (input of ln2; post-norm families: normalised).",
    ),
    PointDoc("blocks.{L}.hook_resid_post", "[batch, pos, d_model]", "Residual stream leaving block L."),
    PointDoc(
        "blocks.{L}.attn.hook_q", "[batch, pos, head, d_head]", "Queries as attention uses them (post-RoPE)."
    ),
    PointDoc(
        "blocks.{L}.attn.hook_k",
        "[batch, pos, kv_head, d_head]",
        "Keys of this call's new positions (post-RoPE).",
    ),
    PointDoc(
        "blocks.{L}.attn.hook_v", "[batch, pos, kv_head, d_head_v]", "Values of this call's new positions."
    ),
    PointDoc(
        "blocks.{L}.attn.hook_attn_scores",
        "[batch, head, q_pos, k_pos]",
        "Pre-softmax scores q k^T * scaling + mask, as eager attention computes them (read-only).",
    ),
    PointDoc(
        "blocks.{L}.attn.hook_pattern",
        "[batch, head, q_pos, k_pos]",
        "Attention weights the module returns; needs eager attention (switched on while requested). "
        "With learned sinks rows sum to less than one (read-only).",
    ),
    PointDoc(
        "blocks.{L}.attn.hook_z", "[batch, pos, head, d_head_v]", "Per-head attention output before o_proj."
    ),
    PointDoc(
        "blocks.{L}.attn.hook_gate",
        "[batch, pos, head or head*d_head_v]",
        "Output gate's projection of the attention input, before its sigmoid or softplus (gated attention: "
        "Laguna, LFM3, Dots; z is the gated output).",
    ),
    PointDoc(
        "blocks.{L}.hook_attn_out", "[batch, pos, d_model]", "Attention sub-layer output (after o_proj)."
    ),
    PointDoc(
        "blocks.{L}.mlp.hook_post", "[batch, pos, d_mlp]", "Dense MLP hidden activation (input of down_proj)."
    ),
    PointDoc("blocks.{L}.hook_mlp_out", "[batch, pos, d_model]", "MLP or MoE sub-layer output."),
    PointDoc(
        "blocks.{L}.moe.hook_router_logits",
        "[tokens, n_experts]",
        "Router logits as the router module returned them; tokens = batch*pos, row-major (read-only).",
    ),
    PointDoc(
        "blocks.{L}.moe.hook_expert_indices",
        "[tokens, k]",
        "Expert ids the router selected (its own output, never recomputed), ranked by selection score, "
        "descending: column 0 is the top choice (DeepSeek's unsorted top-k is ranked when read).",
    ),
    PointDoc(
        "blocks.{L}.moe.hook_expert_weights",
        "[tokens, k]",
        "Weights the family applies to the selected experts (after its renormalisation and scaling), in the "
        "order of hook_expert_indices.",
    ),
    PointDoc(
        "blocks.{L}.moe.hook_routed_out",
        "[tokens, d_model]",
        "Weighted sum of the routed experts' outputs (the experts module's output, before shared experts).",
    ),
    PointDoc(
        "blocks.{L}.moe.hook_shared_out",
        "[batch, pos, d_model] or [tokens, d_model]",
        "Shared-expert output (Qwen2-MoE: before its sigmoid gate; DeepSeek: as added).",
    ),
    PointDoc(
        "blocks.{L}.kv.key",
        "[batch, kv_head, kv_pos, d_head]",
        "Keys this call attends to: the KV cache after its update (read-only).",
    ),
    PointDoc(
        "blocks.{L}.kv.value",
        "[batch, kv_head, kv_pos, d_head_v]",
        "Values this call attends to (read-only).",
    ),
    PointDoc(
        "blocks.{L}.kv.latent",
        "[batch, 1, kv_pos, kv_lora_rank]",
        "MLA only: the normalised compressed KV as the cache holds it (input of kv_b_proj).",
    ),
    PointDoc(
        "ln_final.hook_normalized",
        "[batch, pos, d_model]",
        "Output of the final norm (input of the unembedding).",
    ),
)

_BLOCK_NAME = re.compile(r"^blocks\.(\d+)\.(.+)$")


@dataclass(frozen=True)
class ResolvedPoint:
    """A hook point bound to a module of one model."""

    name: str
    module: nn.Module
    site: Site
    layer: int | None
    attn_module: nn.Module | None = None
    block: nn.Module | None = None


def resolve_points(base: nn.Module, adapter: ArchAdapter) -> dict[str, ResolvedPoint]:
    """All hook points of a model, by canonical name, in execution order within each block.

    Args:
        base: The HF base model (``hf_model.base_model``).
        adapter: The family's adapter.
    """
    points: dict[str, ResolvedPoint] = {}
    for name, site in adapter.model_sites().items():
        points[name] = ResolvedPoint(name, get_submodule(base, site.path), site, None)
    for layer, block in enumerate(adapter.block_modules(base)):
        attn = adapter.attention_module(block) if adapter.family != "generic" else None
        for suffix, site in adapter.block_sites(block).items():
            name = f"blocks.{layer}.{suffix}"
            points[name] = ResolvedPoint(name, get_submodule(block, site.path), site, layer, attn, block)
    return points


def doc_for(name: str) -> PointDoc:
    """The documentation entry of a concrete point name (``blocks.3.hook_resid_post`` -> its template)."""
    match = _BLOCK_NAME.match(name)
    template = f"blocks.{{L}}.{match.group(2)}" if match else name
    for doc in POINTS:
        if doc.name == template:
            return doc
    raise HookPointError(f"unknown hook point {name!r}")


def point_rows(names: list[str]) -> list[dict[str, str]]:
    """``name, shape, meaning`` of each point name, for the CLI's and the app's hook-point tables."""
    return [{"name": n, "shape": (doc := doc_for(n)).shape, "meaning": doc.meaning} for n in names]


def select(
    points: dict[str, ResolvedPoint], patterns: list[str] | str, missing_ok: bool = False
) -> list[str]:
    """Names matching any of the patterns (exact names or regular expressions), in model order.

    Args:
        points: The model's resolved points.
        patterns: Names or regular expressions.
        missing_ok: Skip patterns that match nothing (e.g. MoE points on a dense model) instead of raising.

    Raises:
        HookPointError: A pattern is not a valid regular expression, or matches nothing and ``missing_ok``
            is False.
    """
    patterns = [patterns] if isinstance(patterns, str) else patterns
    chosen: list[str] = []
    for pattern in patterns:
        if pattern in points:
            hits = [pattern]
        else:
            try:
                regex = re.compile(pattern)
            except re.error as exc:
                raise HookPointError(f"invalid hook point pattern {pattern!r}: {exc}") from exc
            hits = [n for n in points if regex.fullmatch(n)]
        if not hits and not missing_ok:
            examples = ", ".join(list(points)[:6])
            raise HookPointError(f"no hook point matches {pattern!r} (examples: {examples}, ...)")
        chosen.extend(h for h in hits if h not in chosen)
    order = {n: i for i, n in enumerate(points)}
    return sorted(chosen, key=order.__getitem__)
