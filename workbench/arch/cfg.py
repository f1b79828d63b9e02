"""``model.cfg``: one typed, frozen description of a loaded model's layout, computed once by its adapter.

The names follow TransformerLens's ``HookedTransformerConfig`` where it has one (``n_layers``,
``d_model``, ``n_heads``, ``d_head``, ``d_vocab``, ``n_ctx``); the rest are the workbench's (KV layout,
experts, attention kind per layer). Every fact about a model that a probe, the card, the capture engine or
the app needs is read from here, never recomputed from the HF config.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

ATTENTION_KINDS = ("full", "sliding", "chunked", "linear", "none")


@dataclass(frozen=True)
class ModelCfg:
    """What the workbench knows about a loaded model.

    Attributes:
        family: The adapter's family (``llama``, ``mixtral`` ... or the model type of a discovered one).
        model_type: ``config.model_type``.
        n_layers: Decoder (or encoder) blocks.
        d_model: Residual stream width.
        n_heads: Query heads per attention layer.
        n_kv_heads: Key / value heads (equal to ``n_heads`` for MHA).
        d_head: Query / key head size.
        d_head_v: Value head size (differs from ``d_head`` only for MLA).
        d_vocab: Vocabulary size of the embedding.
        n_ctx: Positions the model was configured for (None when the config does not say).
        kv_layout: ``MHA``, ``GQA``, ``MQA`` or ``MLA``.
        kv_elements_per_token: Cache elements one token adds across all layers.
        attention_kinds: Per layer: ``full``, ``sliding``, ``chunked``, ``linear`` (or another mixer that
            is not softmax attention) or ``none`` (a block without attention).
        sliding_window: Window of the sliding layers (None when no layer slides).
        causal: Whether attention is causal (a decoder).
        lm_head: Whether the model has an output embedding (an LM head).
        positional: ``rope``, ``learned absolute``, ``alibi`` ...
        norm: Norm class and placement (``RMSNorm (pre-norm)``).
        activation: The MLP activation's name.
        n_experts: Routed experts per MoE layer (0: dense).
        top_k: Experts chosen per token.
        n_shared_experts: Always-on experts per MoE layer.
        n_dense_layers: Layers of an MoE model that keep a dense MLP.
        moe_layers: Indices of the blocks that route tokens.
        moe_notes: Further router facts for the card (group limits, scaling, multipliers), in order.
    """

    family: str
    model_type: str
    n_layers: int
    d_model: int
    n_heads: int
    n_kv_heads: int
    d_head: int
    d_head_v: int
    d_vocab: int
    n_ctx: int | None
    kv_layout: str
    kv_elements_per_token: int
    attention_kinds: tuple[str, ...]
    sliding_window: int | None
    causal: bool
    lm_head: bool
    positional: str
    norm: str
    activation: str
    n_experts: int = 0
    top_k: int = 0
    n_shared_experts: int = 0
    n_dense_layers: int = 0
    moe_layers: tuple[int, ...] = ()
    moe_notes: tuple[tuple[str, Any], ...] = ()

    @property
    def is_moe(self) -> bool:
        """Whether any layer routes tokens to experts."""
        return self.n_experts > 0

    @property
    def causal_lm(self) -> bool:
        """A causal language model: causal attention and an LM head (what generation, lenses and loss
        need)."""
        return self.causal and self.lm_head


def attention_kind(layer_type: str | None, has_attention: bool, sliding_window: int | None) -> str:
    """One layer's kind from the config's ``layer_types`` entry (``sliding_attention`` ...) when it has
    one, else from whether the block has attention and the config's window."""
    if not has_attention:
        return "none" if layer_type is None else _kind(layer_type)
    if layer_type is not None:
        return _kind(layer_type)
    return "sliding" if sliding_window else "full"


def _kind(layer_type: str) -> str:
    name = layer_type.removesuffix("_attention")
    return name if name in ATTENTION_KINDS else "linear"
