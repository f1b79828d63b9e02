"""BERT (and the real all-MiniLM-L6-v2): bidirectional encoder, post-norm LayerNorm, learned positions.

The base model is ``bert`` for heads (``BertModel`` is its own base): ``embeddings.word_embeddings``,
``embeddings.position_embeddings`` and token types, summed and normalised by ``embeddings.LayerNorm``;
blocks ``encoder.layer``. Each block: ``attention.self`` (q/k/v and the attention function),
``attention.output`` (dense, then LayerNorm of the residual sum), ``intermediate`` (dense + GELU),
``output`` (dense, then LayerNorm of the residual sum). Post-norm means ``hook_resid_mid`` is the
normalised stream after the attention sub-layer and ``hook_resid_post`` the block output; there is no
final norm. No KV cache in encoder use.

TransformerLens's bridge knows BERT only with its masked-LM head (``BertForMaskedLM``). A head-less
``BertModel`` (such as all-MiniLM-L6-v2) is handed to it inside a ``BertForMaskedLM`` whose ``bert`` is the
model itself: every encoder hook point reads the real weights; the bridge's logits come from an untrained
head and mean nothing.
"""

from __future__ import annotations

from typing import ClassVar

import transformers as tf
from torch import nn

from workbench.arch.base import ArchAdapter, Site


class BertAdapter(ArchAdapter):
    """Post-norm encoder; attention outputs read before the residual LayerNorm."""

    family: ClassVar[str] = "bert"
    model_types: ClassVar[tuple[str, ...]] = ("bert",)
    embed: ClassVar[str] = "embeddings.word_embeddings"
    pos_embed: ClassVar[str | None] = "embeddings.position_embeddings"
    blocks: ClassVar[str] = "encoder.layer"
    final_norm: ClassVar[str | None] = None
    attn: ClassVar[str] = "attention.self"
    q_proj: ClassVar[str | None] = "attention.self.query"
    k_proj: ClassVar[str | None] = "attention.self.key"
    v_proj: ClassVar[str | None] = "attention.self.value"
    o_proj: ClassVar[str] = "attention.output.dense"
    ln1: ClassVar[str | None] = None
    ln2: ClassVar[str | None] = None
    mlp: ClassVar[str] = "output"
    mlp_down: ClassVar[str | None] = "output.dense"
    positional: ClassVar[str] = "learned absolute"
    norm_type: ClassVar[str] = "LayerNorm"
    norm_placement: ClassVar[str] = "post"
    causal: ClassVar[bool] = False

    def tl_module(self, hf_model: nn.Module) -> tuple[nn.Module, str]:
        """Wrap a head-less ``BertModel`` in ``BertForMaskedLM`` (see the module docstring)."""
        if not isinstance(hf_model, tf.BertModel):
            return super().tl_module(hf_model)
        wrapper = tf.BertForMaskedLM(hf_model.config).eval()
        wrapper.bert = hf_model
        return wrapper, "BertForMaskedLM"

    def block_sites(self, block: nn.Module) -> dict[str, Site]:
        """Post-norm: attention and MLP outputs are the dense outputs before the residual LayerNorm."""
        sites = super().block_sites(block)
        sites["hook_resid_mid"] = Site("attention", index=0)
        sites["hook_attn_out"] = Site("attention.output.dense")
        sites["hook_mlp_out"] = Site("output.dense")
        return sites
