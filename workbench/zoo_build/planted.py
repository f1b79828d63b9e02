"""``planted-sink``: a GPT-2 whose weights are constructed so that listed heads sink into the first token.

Construction (ground truth for the sink probes):

- Channel ``SINK_CHANNEL`` of the residual stream is a first-position flag: the position embedding of
  position 0 holds ``FLAG`` there, every other embedding holds 0, and every attention and MLP output
  writes 0 into it, so the flag survives all layers unchanged.
- A sink head has a constant query (weights 0, bias ``s_q e_0``) and a key that reads the flag
  (``W_K[SINK_CHANNEL, 0] = s_k``). After LayerNorm the flag is about ``sqrt(d_model)`` at position 0 and
  near 0 elsewhere, so the first key scores about ``s_q s_k sqrt(d_model) / sqrt(d_head)`` = 16 against
  values near 0: at least 0.99 of each query's attention goes to the first token up to 512 positions.
- The other heads keep GPT-2's random initialisation (std 0.02) with the flag row of W_Q and W_K zeroed, so
  their attention stays near uniform.
"""

from __future__ import annotations

from typing import Any

import torch
import transformers as tf

SINK_HEADS: tuple[tuple[int, int], ...] = ((0, 1), (1, 0), (1, 3))
SINK_CHANNEL = 0
FLAG = 10.0
QUERY_SCALE, KEY_SCALE = 2.0, 4.0


def build_planted_sink(tokenizer: Any, seed: int = 0) -> Any:
    """The constructed model (eval mode) for ``tokenizer``'s vocabulary."""
    config = tf.GPT2Config(
        vocab_size=len(tokenizer),
        n_embd=64,
        n_layer=2,
        n_head=4,
        n_positions=512,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        planted_sink_heads=[list(h) for h in SINK_HEADS],
    )
    torch.manual_seed(seed)
    model = tf.GPT2LMHeadModel(config).eval()
    d, d_head = config.n_embd, config.n_embd // config.n_head
    c = SINK_CHANNEL
    with torch.no_grad():
        model.transformer.wte.weight[:, c] = 0
        model.transformer.wpe.weight[:, c] = 0
        model.transformer.wpe.weight[0, c] = FLAG
        for layer, block in enumerate(model.transformer.h):
            for writer in (block.attn.c_proj, block.mlp.c_proj):  # Conv1D: out = x @ W + b
                writer.weight[:, c] = 0
                writer.bias[c] = 0
            weight, bias = block.attn.c_attn.weight, block.attn.c_attn.bias  # [d, 3d]: q | k | v
            weight[c, : 2 * d] = 0
            for head in range(config.n_head):
                if (layer, head) not in SINK_HEADS:
                    continue
                q = slice(head * d_head, (head + 1) * d_head)
                k = slice(d + head * d_head, d + (head + 1) * d_head)
                weight[:, q] = 0
                bias[q] = 0
                bias[q.start] = QUERY_SCALE
                weight[:, k] = 0
                bias[k] = 0
                weight[c, k.start] = KEY_SCALE
    return model
