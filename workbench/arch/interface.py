"""Attention through transformers' interface for families whose modeling code computes it inline.

Bloom and Falcon compute their scores, softmax and weighted values inside the attention module's
forward, so nothing passes through ``ALL_ATTENTION_FUNCTIONS`` and the workbench's taps (q, k, v,
scores, streamed statistics, sink masks) cannot see them. Their family files give a forward that does
the same projections and cache update, folds what the family adds to the scores (ALiBi) into the
additive mask, and hands query, key and value to the interface, with :func:`eager_attention` (the eager
math every interface family uses) as the ``"eager"`` function. :func:`route_attention` installs it on
the model's own attention modules when the workbench loads it (the instances, not the classes: an HF
model built elsewhere is untouched); the coverage checks compare the routed model with an unrouted copy.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from types import MethodType
from typing import Any

import torch
from torch import nn
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

ROUTED_EAGER = "workbench_eager"  # instance attribute naming a routed module's eager function


def interface_of(module: nn.Module) -> Any:
    """The ``AttentionInterface`` the module's modeling file calls: transformers' own, or the family's
    instance (Doge declares one to add its flex attention)."""
    own = getattr(sys.modules.get(type(module).__module__), "ALL_ATTENTION_FUNCTIONS", None)
    return own if isinstance(own, type(ALL_ATTENTION_FUNCTIONS)) else ALL_ATTENTION_FUNCTIONS


def eager_of(module: nn.Module) -> Callable[..., Any]:
    """The eager attention function of an attention module: its modeling file's
    ``eager_attention_forward``, or :func:`eager_attention` for a routed module."""
    routed = getattr(module, ROUTED_EAGER, None)
    return routed if routed is not None else sys.modules[type(module).__module__].eager_attention_forward


def eager_attention(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    **kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``softmax(q k^T * scaling + mask) v`` with key/value heads repeated to the query heads.

    Args:
        module: The attention module (its ``training`` flag decides dropout).
        query: ``[batch, head, q_pos, d]``.
        key: ``[batch, kv_head, k_pos, d]``.
        value: ``[batch, kv_head, k_pos, d_v]``.
        attention_mask: Additive ``[batch or 1, head or 1, q_pos, k_pos]`` mask, or None.
        scaling: Softmax scaling.
        dropout: Attention dropout probability (training only).

    Returns:
        The output ``[batch, q_pos, head, d_v]`` and the pattern ``[batch, head, q_pos, k_pos]``.
    """
    n_rep = query.shape[1] // key.shape[1]
    if n_rep > 1:
        key, value = key.repeat_interleave(n_rep, dim=1), value.repeat_interleave(n_rep, dim=1)
    scores = torch.matmul(query, key.transpose(2, 3)) * scaling
    if attention_mask is not None:
        scores = scores + attention_mask
    pattern = nn.functional.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
    pattern = nn.functional.dropout(pattern, p=dropout, training=module.training)
    return torch.matmul(pattern, value).transpose(1, 2).contiguous(), pattern


def call_interface(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    mask: torch.Tensor | None,
    scaling: float,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Hand one attention computation to the interface for the model's implementation key."""
    module.num_key_value_groups = query.shape[1] // key.shape[1]  # sdpa repeats key/value heads by it
    attend = interface_of(module).get_interface(module.config._attn_implementation, eager_attention)
    return attend(module, query, key, value, mask, scaling=scaling, dropout=0.0)


def route_attention(model: nn.Module, class_name: str, forward: Callable[..., Any]) -> int:
    """Give every attention module of class ``class_name`` in ``model`` the interface-calling ``forward``.

    The module also gets what interface functions read from it: the config (for the implementation
    key), ``is_causal`` (sdpa), and its eager function.

    Returns:
        How many modules were routed.
    """
    config = getattr(model, "config", None)
    routed = 0
    for module in model.modules():
        if type(module).__name__ != class_name or getattr(module, ROUTED_EAGER, None) is not None:
            continue
        if getattr(module, "config", None) is None:
            module.config = config
        module.is_causal = getattr(module, "is_causal", True)
        module.forward = MethodType(forward, module)
        setattr(module, ROUTED_EAGER, eager_attention)
        routed += 1
    return routed


def update_self_cache(cache: Any, key: torch.Tensor, value: torch.Tensor, layer: int, kwargs: dict) -> Any:
    """``cache.update`` for self-attention (the self-attention half of an encoder-decoder cache)."""
    return getattr(cache, "self_attention_cache", cache).update(key, value, layer, kwargs=kwargs)


def bert_attention(
    self: nn.Module,
    hidden_states: torch.Tensor,
    attention_mask: torch.Tensor | None,
    cache: Any,
    kwargs: dict,
    rotate: Callable[..., tuple[torch.Tensor, ...]] | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """BERT's self-attention through the interface: ``query``, ``key``, ``value`` projections (then
    ``rotate(q, k, v)`` where the family rotates them), the cache update, ``1/sqrt(d)`` and HF's additive
    mask; the heads merged back."""
    shape = (*hidden_states.shape[:-1], -1, self.attention_head_size)
    query, key, value = (
        p(hidden_states).view(shape).transpose(1, 2) for p in (self.query, self.key, self.value)
    )
    if rotate is not None:
        query, key, value = rotate(query, key, value)
    if cache is not None:
        key, value = update_self_cache(cache, key, value, self.layer_idx, kwargs)
    scaling = self.attention_head_size**-0.5
    output, pattern = call_interface(self, query, key, value, attention_mask, scaling)
    return output.reshape(*hidden_states.shape[:-1], self.all_head_size), pattern


def bert_self_attention_forward(
    self: nn.Module,
    hidden_states: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    encoder_hidden_states: torch.Tensor | None = None,
    cache: Any = None,
    output_attentions: bool = False,
    **kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The BERT self-attention that MegatronBERT and RemBERT still compute inline, through the interface
    (:func:`bert_attention`). Cross-attention (``encoder_hidden_states``) runs HF's own forward."""
    if encoder_hidden_states is not None:
        return type(self).forward(
            self, hidden_states, attention_mask, encoder_hidden_states, cache, output_attentions, **kwargs
        )
    return bert_attention(self, hidden_states, attention_mask, cache, kwargs)
