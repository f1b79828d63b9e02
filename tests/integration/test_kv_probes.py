"""KV-cache probes on real modules: sizes for every family, curves and key statistics on every zoo model."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

import workbench
from probes.kvcache import key_channel_absmax, kv_cache_bytes, quantization_error, retention_curve
from workbench.capture import CaptureSpec, capture
from workbench.zoo import DOMAINS, heldout
from workbench.zoo.registry import zoo


def test_kv_bytes_match_the_formula_for_every_family(tiny: workbench.WorkbenchModel) -> None:
    config, cfg = tiny.config, tiny.cfg
    if cfg.kv_layout == "MLA":
        expected = kv_cache_bytes(cfg.n_layers, 1, config.kv_lora_rank, 4, v_head_dim=config.qk_rope_head_dim)
    else:
        expected = kv_cache_bytes(cfg.n_layers, cfg.n_kv_heads, cfg.d_head, 4)
    assert workbench.card(tiny).get(17)["kv_bytes_per_token"] == expected
    # the formula from the config's own fields (PROBES.md), fp32 = 4 bytes: MLA caches the latent and the
    # shared RoPE key per layer; the rest K and V per layer and KV head
    if hasattr(config, "kv_lora_rank"):
        by_hand = (config.kv_lora_rank + config.qk_rope_head_dim) * config.num_hidden_layers * 4
    elif hasattr(config, "n_embd"):  # GPT-2: n_head x head_dim = n_embd
        by_hand = 2 * config.n_layer * config.n_embd * 4
    else:
        heads = config.num_attention_heads
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
        kv_heads = getattr(config, "num_key_value_heads", None) or heads
        by_hand = 2 * config.num_hidden_layers * kv_heads * head_dim * 4
    assert expected == by_hand


@pytest.mark.parametrize("name", [n for n, e in zoo().items() if e.kind != "pypi"])
def test_kv_probes_run_on_every_zoo_model(name: str) -> None:
    model = workbench.load(name)
    sample = heldout()
    prompts = [sample[d][0][:400] for d in DOMAINS]
    spec = CaptureSpec(points=[r"blocks\.\d+\.attn\.hook_pattern", r"blocks\.\d+\.kv\.key"])
    result = capture(model, prompts, spec, progress=False)
    curve = pd.DataFrame(retention_curve(result["blocks.1.attn.hook_pattern"]))
    full = curve[curve.budget == 1.0].retained_mass
    assert ((full - 1).abs() < 1e-5).all()
    oracle = curve[curve.policy == "oracle"].set_index("budget").retained_mass
    for policy, rows in curve.groupby("policy"):
        assert (rows.set_index("budget").retained_mass <= oracle + 1e-6).all(), policy
    keys = result["blocks.0.kv.key"][0]  # [kv_head, pos, d]
    assert key_channel_absmax(keys).shape == keys.shape[::2]
    array = keys.numpy()
    absmax = np.abs(array).max(axis=1)  # over positions, per KV head and channel
    assert np.array_equal(key_channel_absmax(keys).numpy(), absmax)
    assert 0 <= quantization_error(keys, 2, "channel") < 1
    # KIVI 2-bit asymmetric quantisation per (KV head, channel), written out channel by channel in
    # numpy. Kept in fp32 like the probe so that values exactly halfway between two levels round alike.
    errors = []
    for head in range(array.shape[0]):
        for channel in range(array.shape[2]):
            column = array[head, :, channel]
            low, high = column.min(), column.max()
            step = np.float32(max(high - low, 1e-12) / np.float32(3))
            restored = np.round((column - low) / step) * step + low
            errors.append(np.linalg.norm(column - restored) / max(np.linalg.norm(column), 1e-12))
    assert quantization_error(keys, 2, "channel") == pytest.approx(float(np.mean(errors)), rel=1e-5)


def test_long_inputs_use_streamed_statistics() -> None:
    """Key mass for H2O at a length where full patterns are not captured: streamed statistics only."""
    model = workbench.load("tiny-moe")
    ids = torch.randint(3, 4000, (1, 500), generator=torch.Generator().manual_seed(0))
    result = capture(model, ids, CaptureSpec(stats=["key_mass", "sink_mass"], chunk=64), progress=False)
    key_mass = result["blocks.3.attn.stat_key_mass"][0]  # [head, k]
    torch.testing.assert_close(
        key_mass.sum(-1), torch.full((key_mass.shape[0],), 500.0), rtol=1e-4, atol=1e-3
    )
