"""Every causal-LM family of the installed transformers: adapters discovered from the model itself,
checked against HF's own outputs, and the generated coverage table (docs/families.md)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import transformers as tf

import workbench
from workbench.arch import BY_MODEL_TYPE, DiscoveredAdapter
from workbench.arch.discover import discover_layout
from workbench.errors import UnsupportedFamilyError
from workbench.families.table import STAPLES, coverage, render
from workbench.families.tiny import tiny_config
from workbench.families.verify import verify_family
from workbench.models.tiny import build_tiny

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_the_coverage_table_is_current_and_the_staples_hold() -> None:
    """The whole table, as `make docs` writes it (about a minute on 2 cores)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as `make docs` runs it
    try:
        results = coverage(progress=False)
    finally:
        torch.set_num_threads(threads)
    assert (ROOT / "docs/families.md").read_text() == render(results), "run `make docs`"
    status = {r.model_type: r.status for r in results}
    assert [s for s in STAPLES if status[s] != "full"] == []  # the field's staples, every one
    assert sum(s == "full" for s in status.values()) >= 147


@pytest.mark.parametrize(("parallel", "mid"), [(True, False), (False, True)])
def test_a_family_without_a_file_is_discovered_with_full_points(parallel: bool, mid: bool) -> None:
    """GPT-NeoX has no file in workbench/arch/: its adapter comes from the dry forward. With
    ``use_parallel_residual`` the MLP reads the block's input, so the block has no ``hook_resid_mid``."""
    assert "gpt_neox" not in BY_MODEL_TYPE
    result = verify_family("gpt_neox", use_parallel_residual=parallel)
    assert result.status == "full", result.row()
    torch.manual_seed(0)
    model = workbench.load(tf.GPTNeoXForCausalLM(tiny_config("gpt_neox", use_parallel_residual=parallel)))
    assert isinstance(model.adapter, DiscoveredAdapter) and model.adapter.family == "gpt_neox"
    assert ("blocks.0.hook_resid_mid" in model.points) is mid
    assert model.adapter.layout.parallel is parallel
    assert model.adapter.o_proj == "attention.dense" and model.adapter.embed == "embed_in"


@pytest.mark.parametrize(
    "family", ["mixtral", "olmoe", "qwen2_moe", "qwen3_moe", "granitemoe", "deepseek_v2", "deepseek_v3"]
)
def test_discovered_routers_match_the_conventions_read_from_hf_source(family: str) -> None:
    """Discovery reads the router's scoring and renormalisation off its output; the hand-written
    conventions of workbench/arch/ were read from the modeling code and tested against HF. Top-k
    softmax and softmax renormalised over the top k are the same function, so they count as equal."""
    model = build_tiny(family)
    layout = discover_layout(model)
    hand = BY_MODEL_TYPE[family]()
    found, known = layout.convention, hand.router_convention
    assert found is not None and known is not None
    assert found.correction_bias == known.correction_bias and found.output_order == known.output_order

    def rule(scoring: str, renormalised: bool) -> tuple[str, bool]:
        return ("softmax", True) if scoring == "softmax_over_topk" else (scoring, renormalised)

    assert rule(found.scoring, found.renormalises(model.config)) == rule(
        known.scoring, known.renormalises(model.config)
    )
    assert layout.router == hand.router and layout.experts == hand.experts
    assert layout.n_experts == hand.moe_facts(model.config)["experts"]


def test_a_hybrid_serves_attention_points_on_its_attention_layers_only() -> None:
    """Qwen3-Next: linear-attention layers (no attention interface call) and full-attention layers."""
    result = verify_family("qwen3_next")
    assert result.status == "full", result.row()
    torch.manual_seed(0)
    config = tiny_config("qwen3_next", layers=8)
    model = workbench.load(tf.AutoModelForCausalLM.from_config(config).eval())
    full = [i for i, kind in enumerate(config.layer_types) if kind == "full_attention"]
    with_pattern = [i for i in range(8) if f"blocks.{i}.attn.hook_pattern" in model.points]
    assert with_pattern == full and 0 < len(full) < 8
    assert all(f"blocks.{i}.hook_resid_post" in model.points for i in range(8))


def test_a_recurrent_block_at_the_attention_path_is_not_attention() -> None:
    """RecurrentGemma keeps its recurrent and its attention blocks at one path (``temporal_block``): only
    the class seen calling the interface serves attention points and statistics."""
    result = verify_family("recurrent_gemma")
    assert result.status == "full", result.row()
    torch.manual_seed(0)
    config = tiny_config("recurrent_gemma", layers=8)
    model = workbench.load(tf.AutoModelForCausalLM.from_config(config).eval())
    attention = [i for i, kind in enumerate(config.layer_types) if kind != "linear_attention"]
    assert [i for i in range(8) if f"blocks.{i}.attn.hook_pattern" in model.points] == attention


def test_an_output_gate_is_not_the_output_projection() -> None:
    """Laguna gates the attention output with ``g_proj(hidden_states)`` after the attention call: the gate
    reads what the query projection read, so it is ``attn.hook_gate`` and ``o_proj`` stays the projection
    whose input is ``hook_z``."""
    assert verify_family("laguna").status == "full"
    torch.manual_seed(0)
    model = workbench.load(tf.AutoModelForCausalLM.from_config(tiny_config("laguna")).eval())
    assert model.adapter.o_proj == "self_attn.o_proj"
    ids = torch.tensor([[1, 5, 7, 9]])
    names = ["blocks.0.attn.hook_gate", "blocks.0.attn.hook_z", "blocks.0.hook_attn_out"]
    gate, z, out = map(model.read(ids, names).get, names)
    attn = model.adapter.block_modules(model.base)[0].self_attn
    with torch.no_grad():
        assert torch.allclose(attn.o_proj(z.flatten(-2)), out, atol=1e-5)
        assert gate.shape[:2] == z.shape[:2] and not torch.allclose(gate, torch.zeros_like(gate))


def test_soft_capped_scores_and_statistics_follow_the_cap() -> None:
    """Gemma 2 hands ``softcap`` to its attention function: the scores point and the streamed statistics
    apply ``cap * tanh(s / cap)`` as HF's eager does (a cap of 2 makes it matter on every score)."""
    assert verify_family("gemma2", attn_logit_softcapping=2.0).status == "full"
    torch.manual_seed(0)
    config = tiny_config("gemma2", attn_logit_softcapping=2.0)
    model = workbench.load(tf.AutoModelForCausalLM.from_config(config).eval())
    scores = model.read(torch.tensor([[1, 5, 7, 9, 11]]), "blocks.0.attn.hook_attn_scores")
    visible = scores["blocks.0.attn.hook_attn_scores"]
    visible = visible[visible > torch.finfo(visible.dtype).min / 2]
    assert 1.0 < visible.abs().max() <= 2.0


def test_learned_sinks_are_discovered_from_what_attention_receives() -> None:
    """Flint hands its per-head sink logits to the attention function as ``s_aux`` (as GPT-OSS does):
    discovery names them, the card says so, and the scores check includes the sink column."""
    assert "flint" not in BY_MODEL_TYPE
    assert verify_family("flint").status == "full"
    torch.manual_seed(0)
    model = workbench.load(tf.AutoModelForCausalLM.from_config(tiny_config("flint")).eval())
    assert model.adapter.learned_sinks == f"{model.adapter.attn}.sinks"
    pattern = model.read(torch.tensor([[1, 5, 7, 9]]), "blocks.0.attn.hook_pattern")[
        "blocks.0.attn.hook_pattern"
    ]
    assert (pattern.sum(-1) < 1 - 1e-4).all()  # the sink column took some of every row's mass
    assert workbench.card(model).get(17)["sinks"] == "learned per-head sink logit"


def test_the_ranking_check_sees_an_unsorted_router() -> None:
    """DeepSeek-V3 calls topk(sorted=False): at top-4 of 16 its own ids come back out of order, which the
    ranking check measures; the ids the workbench serves are ranked (column 0 is the top choice)."""
    from workbench.families.verify import _rank_violation, router_outputs

    sizes = {"n_routed_experts": 16, "num_experts_per_tok": 4, "n_group": 4, "topk_group": 2}
    result = verify_family("deepseek_v3", **sizes)
    assert result.status == "full" and result.errors["ranking"] == 0.0
    torch.manual_seed(0)
    model = workbench.load(tf.AutoModelForCausalLM.from_config(tiny_config("deepseek_v3", layers=8, **sizes)))
    layer, returned = next(iter(router_outputs(model, torch.tensor([[1, 5, 7, 9, 11, 13, 17]])).items()))
    router = model.adapter.block_modules(model.base)[layer].get_submodule(model.adapter.router)
    conv = model.adapter.router_convention
    own = _rank_violation(router, returned[conv.index_of("logits")], returned[conv.index_of("indices")])
    assert own > 0  # the router's own column order


def test_bert_derived_decoders_are_discovered_as_post_norm_sub_layers() -> None:
    """RoBERTa has no file in workbench/arch/: discovery finds the attention sub-layer (``attention.self``
    calls the interface; ``attention.output.dense`` is the projection outside it) and the output module
    that adds the residual, the same sites the hand-written BERT adapter names; ``is_decoder`` makes it
    causal. The post-norm checks compare with the block's own LayerNorm, so a resid_mid read before that
    norm fails them."""
    from workbench.arch.bert import BertAdapter
    from workbench.families.verify import _output_norm

    assert "roberta" not in BY_MODEL_TYPE
    assert verify_family("roberta").status == "full"
    torch.manual_seed(0)
    model = workbench.load(tf.AutoModelForCausalLM.from_config(tiny_config("roberta")).eval())
    found = model.adapter.block_sites(model.adapter.block_modules(model.base)[0])
    hand = BertAdapter().block_sites(model.adapter.block_modules(model.base)[0])
    for point in ("attn.hook_z", "hook_attn_out", "hook_mlp_out", "hook_resid_mid"):
        assert (found[point].path, found[point].kind) == (hand[point].path, hand[point].kind), point
    assert model.adapter.norm_placement == "post" and model.adapter.causal
    assert model.adapter.pos_embed == "embeddings.position_embeddings"  # not the token-type embedding
    ids = torch.tensor([[1, 5, 7, 9]])
    names = ["blocks.0.hook_resid_mid", "blocks.0.hook_mlp_out", "blocks.0.hook_resid_post"]
    mid, mlp_out, post = map(model.read(ids, names).get, names)
    norm = _output_norm(model, 0)
    with torch.no_grad():
        assert torch.allclose(norm(mid + mlp_out), post, atol=1e-5)
        assert not torch.allclose(norm(post + mlp_out), post, atol=1e-2)  # a wrong mid shows
    pattern = model.read(ids, "blocks.0.attn.hook_pattern")["blocks.0.attn.hook_pattern"]
    assert pattern[0, :, 0, 1:].abs().max() == 0  # causal: the first token sees only itself


def test_a_router_returning_logits_only_is_read_at_its_experts_arguments() -> None:
    """DBRX's router returns logits; ``route_tokens_to_experts`` (a method, not a module) picks the
    experts and the experts module receives ``(hidden, ids, weights)``. Discovery serves the ids and
    weights at those arguments; they equal what HF's own method returns for the router's logits."""
    assert "dbrx" not in BY_MODEL_TYPE
    torch.manual_seed(0)
    model = workbench.load(tf.AutoModelForCausalLM.from_config(tiny_config("dbrx")).eval())
    assert model.adapter.layout.expert_args == (1, 2) and model.adapter.experts == "ffn.experts"
    names = [f"blocks.1.moe.hook_{p}" for p in ("router_logits", "expert_weights", "expert_indices")]
    logits, weights, indices = map(model.read(torch.tensor([[1, 5, 7, 9, 11]]), names).get, names)
    ffn = model.adapter.block_modules(model.base)[1].ffn
    with torch.no_grad():
        hf_weights, hf_ids = ffn.route_tokens_to_experts(logits)
    assert indices.shape == (5, 2) and torch.equal(indices, hf_ids)
    assert torch.allclose(weights, hf_weights, atol=1e-6)
    assert workbench.card(model).get(16)["experts"] == 4


def test_points_of_a_flattened_mlp_are_served_per_position() -> None:
    """OPT flattens batch and positions around its MLP (``[batch * pos, d]``): its resid_mid and mlp_out
    are served as ``[batch, pos, d]``, and a replacement goes back flattened (zeroing mlp_out through
    the workbench gives what a plain torch hook zeroing fc2 gives)."""
    assert "opt" not in BY_MODEL_TYPE and verify_family("opt").status == "full"
    torch.manual_seed(0)
    model = workbench.load(tf.AutoModelForCausalLM.from_config(tiny_config("opt")).eval())
    ids = torch.tensor([[1, 5, 7, 9, 11], [2, 4, 6, 8, 10]])
    names = ["blocks.0.hook_resid_mid", "blocks.0.hook_mlp_out", "blocks.0.hook_resid_post"]
    mid, mlp_out, post = map(model.read(ids, names).get, names)
    assert mid.shape == mlp_out.shape == (2, 5, 64)
    assert torch.allclose(mid + mlp_out, post, atol=1e-5)  # per position, batch rows kept apart
    zero = lambda value, name: torch.zeros_like(value)  # noqa: E731
    with torch.no_grad():
        ablated = model.run_with_hooks(ids, {"blocks.0.hook_mlp_out": zero}).logits
        fc2 = model.adapter.block_modules(model.base)[0].fc2
        handle = fc2.register_forward_hook(lambda m, a, out: torch.zeros_like(out))
        try:
            expected = model.hf(input_ids=ids).logits
        finally:
            handle.remove()
    assert torch.allclose(ablated, expected, atol=1e-6)


def test_a_dense_choice_router_serves_its_nonzero_experts_ranked() -> None:
    """Llama 4's router returns ``(scores, logits)``: scores are sigmoid of the chosen logits scattered
    into zeros. The ids served are its nonzero columns, ranked by weight; the weights are those entries."""
    torch.manual_seed(0)
    model = workbench.load(tf.AutoModelForCausalLM.from_config(tiny_config("llama4_text")).eval())
    assert model.adapter.layout.dense_choice == 0 and model.adapter.router_convention.scoring == "sigmoid"
    names = [f"blocks.0.moe.hook_{p}" for p in ("router_logits", "expert_weights", "expert_indices")]
    logits, weights, indices = map(model.read(torch.tensor([[1, 5, 7, 9, 11]]), names).get, names)
    assert indices.shape == (5, 2)
    chosen = logits.gather(-1, indices)
    assert (chosen[:, 0] >= chosen[:, 1]).all()  # column 0 is the top choice
    assert torch.allclose(weights, chosen.sigmoid(), atol=1e-6)
    # HF's router picks the top 2 logits (its topk); the served set is that set
    assert torch.equal(indices.sort(-1).values, logits.topk(2, -1).indices.sort(-1).values)


@pytest.mark.parametrize(
    "family",
    [
        "bloom",
        "falcon",
        "mpt",
        "gpt_neo",
        "xglm",
        "openai-gpt",
        "gpt_neox_japanese",
        "megatron-bert",
        "roformer",
        "trocr",
    ],
)
def test_inline_attention_is_routed_through_the_interface_without_changing_the_model(family: str) -> None:
    """Bloom, Falcon, MPT, GPT-Neo, XGLM, GPT-1, GPT-NeoX-Japanese, MegatronBERT, RoFormer and TrOCR
    compute attention inside the module's forward; on load their attention modules are given a forward
    that hands q, k, v to the interface. The routed model's logits equal those of an unrouted copy
    built from the same weights, under eager and under the default implementation."""
    import copy

    from workbench.hooks.implementation import attention_implementation

    torch.manual_seed(0)
    hf = tf.AutoModelForCausalLM.from_config(tiny_config(family)).eval()
    untouched = copy.deepcopy(hf)
    model = workbench.load(hf)
    assert verify_family(family).status == "full"
    ids = torch.tensor([[1, 5, 7, 9, 11, 13]])
    for impl in ("eager", hf.config._attn_implementation):
        with torch.no_grad(), attention_implementation(hf, impl), attention_implementation(untouched, impl):
            assert torch.allclose(model.hf(input_ids=ids).logits, untouched(input_ids=ids).logits, atol=1e-5)
    assert "blocks.0.attn.hook_q" in model.points
    assert any(hasattr(m, "workbench_eager") for m in hf.modules())  # routed on load, the copy is not
    assert not any(hasattr(m, "workbench_eager") for m in untouched.modules())


def test_bloom_scores_carry_its_alibi_bias() -> None:
    """``attn.hook_attn_scores`` is what Bloom's softmax sees: ``q k^T / sqrt(d)`` plus the ALiBi bias HF's
    ``build_alibi_tensor`` gives, plus the causal mask."""
    from transformers.models.bloom.modeling_bloom import build_alibi_tensor

    torch.manual_seed(0)
    model = workbench.load(tf.AutoModelForCausalLM.from_config(tiny_config("bloom")).eval())
    ids = torch.tensor([[1, 5, 7, 9, 11]])
    names = ["blocks.0.attn.hook_q", "blocks.0.attn.hook_k", "blocks.0.attn.hook_attn_scores"]
    q, k, scores = map(model.read(ids, names).get, names)
    plain = torch.einsum("bqhd,bkhd->bhqk", q, k) / q.shape[-1] ** 0.5
    alibi = build_alibi_tensor(torch.ones(1, 5), 4, torch.float32).view(1, 4, 1, 5)
    visible = torch.ones(5, 5).tril().bool()
    assert torch.allclose((scores - plain)[..., visible], alibi.expand(1, 4, 5, 5)[..., visible], atol=1e-5)
    assert alibi[..., -1].abs().min() > 0  # the bias is there to see


def test_gpt_neo_local_layers_show_their_window_and_unscaled_scores() -> None:
    """GPT-Neo's local layer attends within ``window_size`` only and its scores are ``q k^T`` without
    ``1/sqrt(d)``: both show in the routed points (the pattern itself is checked against HF's eager)."""
    torch.manual_seed(0)
    config = tiny_config("gpt_neo", window_size=2)
    assert config.attention_layers == ["global", "local"]
    model = workbench.load(tf.AutoModelForCausalLM.from_config(config).eval())
    assert verify_family("gpt_neo", window_size=2).status == "full"
    ids = torch.tensor([[1, 5, 7, 9, 11]])
    names = ["blocks.1.attn.hook_q", "blocks.1.attn.hook_k", "blocks.1.attn.hook_attn_scores"]
    names += ["blocks.1.attn.hook_pattern", "blocks.0.attn.hook_pattern"]
    q, k, scores, local, full = map(model.read(ids, names).get, names)
    band = torch.ones(5, 5).tril().bool() & ~torch.ones(5, 5).tril(-2).bool()  # q - k in {0, 1}
    assert local[..., ~band].abs().max() == 0 and full[..., 4, 0].min() > 0
    plain = torch.einsum("bqhd,bkhd->bhqk", q, k)
    assert torch.allclose(scores[..., band], plain[..., band], atol=1e-5)


@pytest.mark.slow
def test_every_full_family_gets_its_card_and_hooks_on_the_meta_device() -> None:
    """Each full family built on the meta device (no weights) is discovered through a small CPU twin:
    the same hook points, size facts and MoE facts as on the CPU, and a card. (Sizes read from a config
    larger than the twin are checked on GLM-4.5-Air in test_meta_device.py.)"""
    import workbench.arch as arch

    lines = (ROOT / "docs/families.md").read_text().splitlines()
    full = [line.split("`")[1] for line in lines if "| full |" in line]
    differ = []
    for family in full:
        for layers in (2, 8):  # hybrids: enough layers for one attention layer
            config = tiny_config(family, layers=layers)
            torch.manual_seed(0)
            try:
                cpu = workbench.load(tf.AutoModelForCausalLM.from_config(config).eval())
            except UnsupportedFamilyError:
                continue
            if any(".attn.hook_q" in n for n in cpu.points):
                break
        arch._LAYOUTS.clear()  # the meta model is discovered afresh, as in a new process
        with torch.device("meta"):
            empty = tf.AutoModelForCausalLM.from_config(config)
        meta = workbench.load(empty, device="meta")
        arch._LAYOUTS.clear()
        seen = [(set(m.points), m.cfg) for m in (cpu, meta)]
        if seen[0] != seen[1] or workbench.card(meta).get("layers") != layers:
            differ.append(family)
    assert differ == []


@pytest.mark.parametrize(
    "family", ["gpt_neox", "qwen3", "bloom", "opt", "roberta", "llama4_text", "dbrx", "qwen3_next"]
)
def test_interventions_and_probes_run_on_discovered_families(family: str) -> None:
    """One family per kind of layout discovery handles (parallel, plain, routed ALiBi, flattened MLP,
    post-norm sub-layers, dense-choice router, logits-only router, hybrid): sink removal leaves no
    attention on the first key for later queries, a full-budget eviction equals the full cache exactly
    and a small one does not, and an MoE family's routing table has a row per MoE layer."""
    from probes.eviction import simulate_eviction
    from probes.moe_tables import moe_layers, routing_table
    from workbench import intervene
    from workbench.capture import CaptureSpec, capture

    torch.manual_seed(0)
    layers = 8 if family == "qwen3_next" else 2
    model = workbench.load(tf.AutoModelForCausalLM.from_config(tiny_config(family, layers=layers)).eval())
    ids = torch.randint(3, 500, (1, 20), generator=torch.Generator().manual_seed(7))
    patterns = [n for n in model.points if n.endswith("attn.hook_pattern")]
    with intervene.remove_sink(model):
        removed = model.read(ids, patterns)
    assert removed and all(p[0, :, 1:, 0].abs().max() < 1e-6 for p in removed.values())
    full = simulate_eviction(model, ids, prompt_len=12, policy="recent", budget=12)
    assert full["kl"] == 0.0 and full["top1_agreement"] == 1.0
    assert simulate_eviction(model, ids, prompt_len=12, policy="recent", budget=2)["kl"] > 0
    if model.cfg.is_moe:
        spec = CaptureSpec(points=["blocks.*.moe.hook_.*", "blocks.*.hook_mlp_out"])
        result = capture(model, ids, spec, progress=False)
        table = routing_table(result, ids.flatten(), model.cfg.n_experts, model.cfg.top_k)
        assert len(table) == len(moe_layers(result)) > 0
