"""KV-cache probes on real modules: sizes for every family, curves and key statistics on every zoo model."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

import workbench
from probes.kvcache import key_channel_absmax, kv_cache_bytes, quantization_error, retention_curve
from workbench.capture import CaptureSpec, capture
from workbench.zoo.corpus import DOMAINS, load_heldout_sample
from workbench.zoo.registry import MODELS_DIR, zoo


def test_kv_bytes_match_the_formula_for_every_family(tiny: workbench.WorkbenchModel) -> None:
    config, adapter = tiny.config, tiny.adapter
    if adapter.kv_layout(config) == "MLA":
        expected = kv_cache_bytes(
            adapter.n_layers(config), 1, config.kv_lora_rank, 4, v_head_dim=config.qk_rope_head_dim
        )
    else:
        expected = kv_cache_bytes(
            adapter.n_layers(config), adapter.n_kv_heads(config), adapter.head_dim(config), 4
        )
    assert workbench.card(tiny).get("kv_bytes_per_token") == expected


@pytest.mark.parametrize("name", [n for n, e in zoo().items() if e.kind != "pypi"])
def test_kv_probes_run_on_every_zoo_model(name: str) -> None:
    model = workbench.load(name)
    sample = load_heldout_sample(MODELS_DIR.parent / "heldout")
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
    assert 0 <= quantization_error(keys, 2, "channel") < 1


def test_long_inputs_use_streamed_statistics() -> None:
    """Key mass for H2O at a length where full patterns are not captured: streamed statistics only."""
    model = workbench.load("tiny-moe")
    ids = torch.randint(3, 4000, (1, 500), generator=torch.Generator().manual_seed(0))
    result = capture(model, ids, CaptureSpec(stats=["key_mass", "sink_mass"], chunk=64), progress=False)
    key_mass = result["blocks.3.attn.stat_key_mass"][0]  # [head, k]
    torch.testing.assert_close(
        key_mass.sum(-1), torch.full((key_mass.shape[0],), 500.0), rtol=1e-4, atol=1e-3
    )
