"""The architecture-adapter contract: where a family keeps each part, and how its router decides.

An adapter is the only place that knows a family's module paths. Every path is a dotted attribute path
relative to the *base* model (``hf_model.base_model``) for model-level parts, or relative to one decoder
block for block-level parts. Hook points (``workbench.hooks.points``) are resolved to :class:`Site`
objects through :meth:`ArchAdapter.block_sites` and :meth:`ArchAdapter.model_sites`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
from torch import nn

from workbench.arch.cfg import ModelCfg, attention_kind
from workbench.arch.interface import eager_of

SiteKind = Literal["input", "output", "tap"]
KVLayout = Literal["MHA", "GQA", "MQA", "MLA"]


@dataclass(frozen=True)
class Site:
    """Where a hook point's tensor lives.

    Attributes:
        path: Dotted module path (relative to the block for block sites, to the base model otherwise).
        kind: ``"output"`` (forward hook), ``"input"`` (forward pre-hook, positional argument ``arg`` or
            ``hidden_states``) or ``"tap"`` (tensors the attention module hands to its attention function).
        index: Element of a tuple output (``None`` when the output is a tensor).
        field: For taps, which tensor: ``"q"``, ``"k"``, ``"v"``, ``"scores"``, ``"kv_key"``, ``"kv_value"``.
        split_heads: Reshape the last dimension into ``[head, d_head]`` with this many heads
            (``"attn"`` for query heads); used for ``hook_z``.
        read_only: Replacing the value would not change the computation (e.g. the attention pattern is
            an output of the attention function, not an input to anything).
        rank_topk: The value is the router's top-k ids or weights and the router returns them unsorted:
            they are served ranked by its selection score (:meth:`ArchAdapter.topk_order`), and a
            replacement goes back in the router's own column order.
        arg: For inputs, which positional argument (the experts module's ids and weights: DBRX).
        flat: The module sees batch and positions flattened (``[batch * pos, d]``: OPT's MLP, Llama 4's
            MoE): the value is served as ``[batch, pos, d]`` (the block input's leading shape) and a
            replacement flattened back.
        dense_topk: ``("values" | "indices", k)``: the module returns its choice as a dense
            ``[tokens, n_experts]`` tensor, zero off the chosen experts (Llama 4's router scores); the
            value served is that tensor's top-k weights or ids, descending (read-only).
    """

    path: str
    kind: SiteKind = "output"
    index: int | None = None
    field: str | None = None
    split_heads: bool = False
    read_only: bool = False
    rank_topk: bool = False
    arg: int = 0
    flat: bool = False
    dense_topk: tuple[str, int] | None = None


@dataclass(frozen=True)
class RouterConvention:
    """How a family's router turns logits into the expert ids and weights it applies.

    These facts are read from the HF modeling code of each family and tested against the router module's
    own output; the workbench never recomputes top-k, it reads what the router returned.

    Attributes:
        scoring: ``"softmax"`` over all experts, ``"sigmoid"`` per expert, ``"softmax_over_topk"``
            (top-k on raw logits, then softmax over the k selected logits), or ``"unknown"`` (a discovered
            router whose weights matched none of these; its ids are ranked by logit).
        topk_on: What top-k ranks: ``"probs"``, ``"logits"`` or ``"biased_scores"`` (sigmoid scores plus
            the ``e_score_correction_bias``).
        renormalise: ``"always"``, ``"never"``, or ``"flag"`` (renormalised when ``config.norm_topk_prob``).
        correction_bias: The router adds a learned bias for selection only (DeepSeek-V3).
        group_limited: Experts are chosen inside the top ``topk_group`` of ``n_group`` groups.
        scaling_factor_attr: Config attribute multiplying the applied weights (``routed_scaling_factor``).
        router_bias: The router linear layer has a bias (GPT-OSS).
        output_order: Names of the router module's tuple elements, in order.
        ranked: The router returns its k ids (and their weights) sorted by selection score, descending
            (``torch.topk`` with ``sorted=True``). False where it calls ``topk(..., sorted=False)``
            (DeepSeek-V2/V3): the workbench then ranks them when they are read, so that for every family
            column 0 of ``moe.hook_expert_indices`` is the top choice.
        discovered: Read off the router's output on the dry forward of discovery (scoring and
            renormalisation matched numerically), not from the family's modeling code.
    """

    scoring: Literal["softmax", "sigmoid", "softmax_over_topk", "unknown"]
    topk_on: Literal["probs", "logits", "biased_scores"]
    renormalise: Literal["always", "never", "flag"]
    correction_bias: bool = False
    group_limited: bool = False
    scaling_factor_attr: str | None = None
    router_bias: bool = False
    output_order: tuple[str, str, str] = ("logits", "weights", "indices")
    ranked: bool = True
    discovered: bool = False

    def index_of(self, name: str) -> int:
        """Position of ``name`` (``logits``, ``weights`` or ``indices``) in the router's output tuple."""
        return self.output_order.index(name)

    def selection_scores(self, logits: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        """The score top-k ranks, per expert [tokens, n_experts], from the router's logits.

        Used only to *order* the ids the router chose, never to choose them. Group limits mask experts
        out of the choice but do not change the order of those chosen, so they are left out.

        Args:
            logits: Router logits [tokens, n_experts].
            bias: The router's ``e_score_correction_bias`` when :attr:`correction_bias`.
        """
        logits = logits.float()
        if self.topk_on == "logits":
            return logits
        if self.scoring == "sigmoid":
            scores = logits.sigmoid()
            return scores + bias if self.correction_bias and bias is not None else scores
        return logits.softmax(-1)

    def renormalises(self, config: Any) -> bool:
        """Whether the top-k weights are renormalised to sum to one for this config."""
        if self.renormalise == "flag":
            return bool(getattr(config, "norm_topk_prob", False))
        return self.renormalise == "always"


def get_submodule(root: nn.Module, path: str) -> nn.Module:
    """Resolve a dotted path (``""`` is the root itself); raise ``AttributeError`` if any part is missing."""
    return root.get_submodule(path) if path else root


def has_submodule(root: nn.Module, path: str) -> bool:
    """Whether a dotted path resolves under ``root``."""
    try:
        get_submodule(root, path)
    except AttributeError:
        return False
    return True


class ArchAdapter:
    """Base adapter. Families subclass it and override class attributes and the few quirk methods.

    The defaults describe the Llama layout (pre-norm, RMSNorm, RoPE, ``self_attn.{q,k,v,o}_proj``).
    """

    family: ClassVar[str] = "base"
    model_types: ClassVar[tuple[str, ...]] = ()

    # model-level paths, relative to hf_model.base_model
    embed: ClassVar[str] = "embed_tokens"
    pos_embed: ClassVar[str | None] = None
    blocks: ClassVar[str] = "layers"
    final_norm: ClassVar[str | None] = "norm"

    # block-level paths
    attn: ClassVar[str] = "self_attn"
    q_proj: ClassVar[str | None] = "self_attn.q_proj"
    k_proj: ClassVar[str | None] = "self_attn.k_proj"
    v_proj: ClassVar[str | None] = "self_attn.v_proj"
    o_proj: ClassVar[str] = "self_attn.o_proj"
    ln1: ClassVar[str | None] = "input_layernorm"
    ln2: ClassVar[str | None] = "post_attention_layernorm"
    mlp: ClassVar[str] = "mlp"
    mlp_down: ClassVar[str | None] = "mlp.down_proj"
    router: ClassVar[str | None] = None
    experts: ClassVar[str | None] = None
    shared_experts: ClassVar[str | None] = None
    learned_sinks: ClassVar[str | None] = None
    mlp_output_index: ClassVar[int | None] = None

    # facts for the card
    positional: ClassVar[str] = "rope"
    norm_type: ClassVar[str] = "RMSNorm"
    norm_placement: ClassVar[Literal["pre", "post"]] = "pre"
    causal: ClassVar[bool] = True
    router_convention: ClassVar[RouterConvention | None] = None
    n_experts_attr: ClassVar[str | None] = None  # config attribute holding the routed expert count

    # ----------------------------------------------------------------- config facts
    def n_layers(self, config: Any) -> int:
        """Number of decoder blocks."""
        return int(config.num_hidden_layers)

    def n_heads(self, config: Any) -> int:
        """Number of query heads."""
        return int(config.num_attention_heads)

    def n_kv_heads(self, config: Any) -> int:
        """Number of key/value heads (equal to query heads for MHA)."""
        return int(getattr(config, "num_key_value_heads", None) or self.n_heads(config))

    def d_model(self, config: Any) -> int:
        """Residual stream width."""
        return int(config.hidden_size)

    def head_dim(self, config: Any) -> int:
        """Query/key head dimension."""
        return int(getattr(config, "head_dim", None) or self.d_model(config) // self.n_heads(config))

    def v_head_dim(self, config: Any) -> int:
        """Value head dimension (differs from ``head_dim`` only for MLA)."""
        return self.head_dim(config)

    def kv_layout(self, config: Any) -> KVLayout:
        """MHA, GQA or MQA from the head counts (MLA families override)."""
        kv, q = self.n_kv_heads(config), self.n_heads(config)
        if kv == q:
            return "MHA"
        return "MQA" if kv == 1 else "GQA"

    def kv_elements_per_token(self, config: Any) -> int:
        """Cache elements one token adds across all layers: ``layers x kv_heads x (d_k + d_v)``."""
        per_layer = self.n_kv_heads(config) * (self.head_dim(config) + self.v_head_dim(config))
        return self.n_layers(config) * per_layer

    def n_shared_experts(self, config: Any) -> int:
        """Shared (always-on) experts per MoE layer."""
        return 0

    def n_dense_layers(self, config: Any) -> int:
        """Layers of an MoE model that keep a dense MLP."""
        return 0

    def moe_facts(self, config: Any) -> dict[str, Any]:
        """MoE fields of the card: experts, top-k, shared experts, dense layers (empty for dense families)."""
        if self.n_experts_attr is None:
            return {}
        return {
            "experts": getattr(config, self.n_experts_attr),
            "top_k": config.num_experts_per_tok,
            "shared_experts": self.n_shared_experts(config),
            "dense_layers": self.n_dense_layers(config),
        }

    def sliding_window(self, config: Any) -> int | None:
        """Sliding-window size if any layer uses one."""
        return getattr(config, "sliding_window", None)

    def activation(self, config: Any) -> str:
        """Name of the MLP activation."""
        return str(getattr(config, "hidden_act", None) or getattr(config, "activation_function", "?"))

    def context_length(self, config: Any) -> int | None:
        """Maximum number of positions the model was configured for."""
        for attr in ("max_position_embeddings", "n_positions", "n_ctx"):
            if getattr(config, attr, None):
                return int(getattr(config, attr))
        return None

    def describe(self, hf_model: nn.Module) -> ModelCfg:
        """The model's :class:`~workbench.arch.cfg.ModelCfg` (``WorkbenchModel.cfg`` computes it once)."""
        config, base = hf_model.config, hf_model.base_model
        blocks = self.block_modules(base)
        types = getattr(config, "layer_types", None)
        types = (
            types if isinstance(types, list | tuple) and len(types) == len(blocks) else [None] * len(blocks)
        )
        window = self.sliding_window(config)
        kinds = tuple(
            attention_kind(t, self.attention_module(b) is not None, window)
            for t, b in zip(types, blocks, strict=True)
        )
        facts = self.moe_facts(config)
        common = ("experts", "top_k", "shared_experts", "dense_layers")
        return ModelCfg(
            family=self.family,
            model_type=str(getattr(config, "model_type", "")),
            n_layers=self.n_layers(config),
            d_model=self.d_model(config),
            n_heads=self.n_heads(config),
            n_kv_heads=self.n_kv_heads(config),
            d_head=self.head_dim(config),
            d_head_v=self.v_head_dim(config),
            d_vocab=int(config.get_text_config().vocab_size),
            n_ctx=self.context_length(config),
            kv_layout=self.kv_layout(config),
            kv_elements_per_token=self.kv_elements_per_token(config),
            attention_kinds=kinds,
            sliding_window=window,
            causal=self.causal,
            lm_head=hf_model.get_output_embeddings() is not None,
            positional=self.positional,
            norm=f"{self.norm_type} ({self.norm_placement}-norm)",
            activation=self.activation(config),
            n_experts=int(facts.get("experts", 0)),
            top_k=int(facts.get("top_k", 0)),
            n_shared_experts=int(facts.get("shared_experts", 0)),
            n_dense_layers=int(facts.get("dense_layers", 0)),
            moe_layers=tuple(i for i, b in enumerate(blocks) if self.is_moe_block(b)) if facts else (),
            moe_notes=tuple((k, v) for k, v in facts.items() if k not in common),
        )

    # ----------------------------------------------------------------- structure
    def block_modules(self, base: nn.Module) -> list[nn.Module]:
        """The decoder blocks in order."""
        return list(get_submodule(base, self.blocks))

    def attention_module(self, block: nn.Module) -> nn.Module | None:
        """The block's attention module, or None where the block has none (a hybrid's SSM layer)."""
        return get_submodule(block, self.attn) if has_submodule(block, self.attn) else None

    def is_moe_block(self, block: nn.Module) -> bool:
        """Whether this block routes tokens to experts (some families keep dense layers)."""
        return self.router is not None and has_submodule(block, self.router)

    def eager_attention(self, attn_module: nn.Module) -> Callable[..., tuple[torch.Tensor, torch.Tensor]]:
        """The family's own eager attention function (what HF runs under ``attn_implementation="eager"``)."""
        return eager_of(attn_module)

    def sink_logits(self, attn_module: nn.Module) -> torch.Tensor | None:
        """Learned per-head sink logits that join the attention softmax (None for most families)."""
        return None

    def correction_bias(self, router: nn.Module) -> torch.Tensor | None:
        """The router's selection-only bias added to its scores before top-k (None for most families)."""
        return None

    def topk_order(self, router: nn.Module, logits: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        """Column order [tokens, k] that ranks the ids the router chose by its selection score, descending.

        ``indices.gather(-1, order)`` is the ranked list; ties keep the router's own order.

        Args:
            router: The router module (holds the correction bias where the family has one).
            logits: Its logits [tokens, n_experts].
            indices: The ids it returned [tokens, k].
        """
        conv = self.router_convention
        assert conv is not None
        scores = conv.selection_scores(logits, self.correction_bias(router)).gather(-1, indices)
        return scores.argsort(dim=-1, descending=True, stable=True)

    def tl_module(self, hf_model: nn.Module) -> tuple[nn.Module, str]:
        """The module and architecture name to hand TransformerLens's bridge (default: the model itself)."""
        return hf_model, type(hf_model).__name__

    def model_sites(self) -> dict[str, Site]:
        """Model-level hook points and where they live."""
        sites = {"hook_embed": Site(self.embed)}
        if self.pos_embed:
            sites["hook_pos_embed"] = Site(self.pos_embed)
        if self.final_norm:
            sites["ln_final.hook_normalized"] = Site(self.final_norm)
        return sites

    def block_sites(self, block: nn.Module) -> dict[str, Site]:
        """Block-level hook points (suffixes after ``blocks.{L}.``) and where they live in ``block``."""
        sites: dict[str, Site] = {
            "hook_resid_pre": Site("", "input"),
            "hook_resid_post": Site(""),
            "attn.hook_q": Site(self.attn, "tap", field="q"),
            "attn.hook_k": Site(self.attn, "tap", field="k"),
            "attn.hook_v": Site(self.attn, "tap", field="v"),
            "attn.hook_attn_scores": Site(self.attn, "tap", field="scores", read_only=True),
            "attn.hook_pattern": Site(self.attn, "output", index=1, read_only=True),
            "attn.hook_z": Site(self.o_proj, "input", split_heads=True),
            "hook_attn_out": Site(self.attn, "output", index=0),
            "hook_mlp_out": Site(self.mlp, "output", index=self.mlp_output_index),
            "kv.key": Site(self.attn, "tap", field="kv_key", read_only=True),
            "kv.value": Site(self.attn, "tap", field="kv_value", read_only=True),
        }
        if self.ln2:
            sites["hook_resid_mid"] = Site(self.ln2, "input")
        if self.is_moe_block(block):
            conv = self.router_convention
            assert conv is not None and self.router is not None
            rank = not conv.ranked
            sites["moe.hook_router_logits"] = Site(self.router, index=conv.index_of("logits"), read_only=True)
            sites["moe.hook_expert_weights"] = Site(
                self.router, index=conv.index_of("weights"), rank_topk=rank
            )
            sites["moe.hook_expert_indices"] = Site(
                self.router, index=conv.index_of("indices"), rank_topk=rank
            )
            if self.experts and has_submodule(block, self.experts):
                sites["moe.hook_routed_out"] = Site(self.experts)
            if self.shared_experts and has_submodule(block, self.shared_experts):
                sites["moe.hook_shared_out"] = Site(self.shared_experts)
        elif self.mlp_down and has_submodule(block, self.mlp_down):
            sites["mlp.hook_post"] = Site(self.mlp_down, "input")
        return sites
