"""Results of the sink and KV-cache probes on the zoo models, as markdown (``docs/probes/*.md``).

Run: ``.venv/bin/python -m probes.report > docs/probes/results.md``. With ``--figures DIR`` it also writes
the figures as PNG (needs the ``docs`` extra, kaleido, and a Chromium: ``BROWSER_PATH=/usr/bin/chromium``).
"""

from __future__ import annotations

import pandas as pd
import torch

from probes import compression, lens, moe
from probes.eviction import eviction_table
from probes.figures import (
    depth_histogram,
    first_token_mass_by_layer,
    heatmap,
    id_profile,
    lens_curves,
    load_bars,
    policy_curves,
    sink_heatmap,
)
from probes.kvcache import retention_curve
from probes.report_tokens import decoding_section, tokenizer_section
from probes.sinks import sink_rate, sink_table, token_mass
from workbench.capture import CaptureSpec, capture
from workbench.models import load
from workbench.tables import markdown_table
from workbench.zoo import DOMAINS, domain_windows, heldout

CAUSAL_MODELS = (
    "tiny-llama",
    "tiny-llama-unigram",
    "tiny-moe",
    "tiny-moe-early",
    "tiny-moe-shared",
    "planted-sink",
)
SPEC = CaptureSpec(points=[r"blocks\.\d+\.attn\.hook_pattern"])


def _prompts(chars: int = 400) -> list[str]:
    sample = heldout()
    return [sample[d][i][:chars] for d in DOMAINS for i in range(2) if i < len(sample[d])]


FIGURES: dict[str, object] = {}  # name -> plotly figure, filled by the sections


def sinks_section() -> str:
    """Sink rate and first-token alpha per layer for every causal zoo model; MiniLM's [CLS]/[SEP] mass."""
    rows = []
    for name in CAUSAL_MODELS:
        model = load(name)
        n_layers = model.cfg.n_layers
        table = sink_table(capture(model, _prompts(), SPEC, progress=False), n_layers)
        alphas = torch.tensor(table.alpha.values).view(1, n_layers, -1)
        by_layer = table.groupby("layer").alpha.mean().round(3).tolist()
        if name in ("tiny-moe", "planted-sink"):
            FIGURES[f"sinks_heatmap_{name}"] = sink_heatmap(table, f"First-token alpha, {name}")
        if name == "tiny-moe":
            FIGURES["first_token_mass_tiny-moe"] = first_token_mass_by_layer(table)
        rows.append(
            {"model": name, "sink_rate_eps0.3": round(sink_rate(alphas), 1), "alpha_by_layer": by_layer}
        )
    minilm = load("minilm")
    english = heldout()["english"]
    sentences = [line for doc in english for line in doc.split("\n") if 20 < len(line) < 100][:16]
    masses = token_mass(capture(minilm, sentences, SPEC, progress=False), 6, [101, 102])
    pivot = masses.pivot(index="layer", columns="token_id", values="mass").round(3)
    pivot.columns = ["[CLS] mass", "[SEP] mass"]
    return (
        "### Sink rate (Gu et al. 2024, eps 0.3, first token) on held-out text of all five domains\n\n"
        + markdown_table(rows)
        + "\n\n### all-MiniLM-L6-v2 (adapted bidirectional metric): attention to [CLS] and [SEP], 16 short\n"
        + "English sentences from the held-out fortunes\n\n"
        + markdown_table(pivot, index=True, digits=3)
        + "\n"
    )


def kvcache_section() -> str:
    """Retention curves (layer 2) and eviction quality on tiny-moe."""
    model = load("tiny-moe")
    result = capture(model, _prompts(), SPEC, progress=False)
    curve = pd.DataFrame(retention_curve(result["blocks.2.attn.hook_pattern"]))
    FIGURES["retention_tiny-moe"] = policy_curves(
        curve, "retained_mass", "Retained attention mass, tiny-moe layer 2"
    )
    curve = curve.pivot(index="budget", columns="policy", values="retained_mass").round(3)
    ids = model.encode(_prompts(600)[0])["input_ids"][:, :160]
    quality = eviction_table(model, ids, prompt_len=128, budgets=(0.1, 0.25, 0.5, 1.0)).round(4)
    FIGURES["eviction_kl_tiny-moe"] = policy_curves(quality, "kl", "KL to the full cache, tiny-moe")
    return (
        "### Retained attention mass of the last prompt query, tiny-moe layer 2 (mean over 10 prompts)\n\n"
        + markdown_table(curve, index=True, digits=3)
        + "\n\n### Eviction quality, tiny-moe: 128-token code prompt pruned once, 32 continuation tokens\n\n"
        + markdown_table(quality)
        + "\n"
    )


def moe_section() -> str:
    """Routing statistics of the zoo MoE models; tiny-moe's importance matrix beside its specialisation."""
    sample = heldout()
    stats, loads = [], []
    for name in ("tiny-moe", "tiny-moe-shared"):
        model = load(name)
        ids, domains = domain_windows(model.tokenizer, sample)
        result = capture(
            model,
            ids,
            CaptureSpec(points=[r"blocks\.\d+\.moe\.hook_.*", r"blocks\.\d+\.hook_mlp_out"]),
            progress=False,
        )
        n, k = model.cfg.n_experts, model.cfg.top_k
        stats += [
            {"model": name, **row}
            for row in moe.routing_table(result, ids.reshape(-1), n, k).to_dict("records")
        ]
        loads += [{"model": name, **row} for row in moe.load_table(result, n).to_dict("records")]
        indices = {
            int(x.split(".")[1]): torch.cat(result[x])
            for x in result.names
            if x.endswith("hook_expert_indices")
        }
        if name == "tiny-moe":
            tiny, tiny_ids, tiny_domains, tiny_indices = model, ids, domains, indices
    baseline = moe.random_repetition_baseline(8, 2)
    early = capture(
        load("tiny-moe-early"),
        tiny_ids,
        CaptureSpec(points=[r"blocks\.\d+\.moe\.hook_expert_indices"]),
        progress=False,
    )
    saturation = [
        {
            "layer": i,
            "saturation(early, final)": moe.router_saturation(
                torch.cat(early[f"blocks.{i}.moe.hook_expert_indices"]), tiny_indices[i]
            ),
        }
        for i in sorted(tiny_indices)
    ]
    first_window = [
        {"token": t, "layer": i, "top1": int(tiny_indices[i][t, 0])}
        for i in sorted(tiny_indices)
        for t in range(48)
    ]
    FIGURES["moe_token_layer_tiny-moe"] = heatmap(
        pd.DataFrame(first_window),
        "layer",
        "token",
        "top1",
        "Top-1 expert per token and layer (first code window), tiny-moe",
    )
    FIGURES["moe_load_tiny-moe"] = load_bars(pd.DataFrame([r for r in loads if r["model"] == "tiny-moe"]))
    token_domains = tiny_domains[:, None].expand_as(tiny_ids).reshape(-1)
    spec = moe.domain_expert_table(tiny_indices[3], token_domains, 8, 2, list(DOMAINS))
    importance = moe.expert_importance(tiny, tiny_ids, tiny_domains, 3, names=list(DOMAINS))
    FIGURES["moe_specialisation_tiny-moe"] = heatmap(
        spec, "domain", "expert", "spec", "Domain specialisation, tiny-moe layer 3"
    )
    FIGURES["moe_importance_tiny-moe"] = heatmap(
        importance, "domain", "expert", "delta_loss", "Loss increase when an expert is masked, layer 3"
    )
    coact = moe.coactivation(tiny_indices[3], 8)
    FIGURES["moe_coactivation_tiny-moe"] = heatmap(
        pd.DataFrame([{"i": i, "j": j, "coact": float(coact[i, j])} for i in range(8) for j in range(8)]),
        "i",
        "j",
        "coact",
        "Co-activation (all pairs), tiny-moe layer 3",
    )
    side = []
    for domain in DOMAINS:
        s_row = torch.tensor(spec[spec.domain == domain].sort_values("expert").spec.values)
        i_row = torch.tensor(importance[importance.domain == domain].sort_values("expert").delta_loss.values)
        side.append(
            {
                "domain": domain,
                "most_specialised_expert": int(s_row.argmax()),
                "spec_max": float(s_row.max()),
                "most_important_expert": int(i_row.argmax()),
                "delta_loss_max": float(i_row.max()),
                "spearman(spec, importance)": moe.rank_correlation(s_row, i_row),
            }
        )
    return (
        "### Routing statistics on the held-out mix (24 windows x 128 tokens per domain)\n\n"
        + f"Random-routing baselines for 8 experts, top-2: rep1 {baseline['rep1']:.3f}, "
        + f"rep2 {baseline['repk']:.3f}.\n\n"
        + markdown_table(pd.DataFrame(stats).astype(object).fillna("-"), digits=3)
        + "\n\n### Router saturation: tiny-moe-early (10% of training) against tiny-moe\n\n"
        + markdown_table(saturation, digits=3)
        + "\n\n### tiny-moe layer 3: specialisation beside importance (loss increase when masked)\n\n"
        + markdown_table(side, digits=3)
        + "\n"
    )


def compression_section() -> str:
    """ID profiles with both summary layers, CKA blocks, lenses and prediction depth on the zoo."""
    sample = heldout()
    prompts = [doc[:300] for docs in sample.values() for doc in docs[:6]]
    rows, summaries = [], []
    for name in ("tiny-llama", "tiny-moe", "minilm"):
        model = load(name)
        result = capture(
            model, prompts, CaptureSpec(points=[r"blocks\.\d+\.hook_resid_post"]), progress=False
        )
        hidden = [result[f"blocks.{i}.hook_resid_post"] for i in range(model.cfg.n_layers)]
        profile = compression.compression_profile(hidden, "all")
        summary = compression.id_summaries([r["twonn_90"] for r in profile])
        blocks = compression.cka_blocks(compression.cka_matrix([torch.cat(h) for h in hidden]))
        rows += [{"model": name, **r} for r in profile]
        summaries.append({"model": name, **summary, "cka_blocks": blocks})
        FIGURES[f"id_profile_{name}"] = id_profile(
            pd.DataFrame(profile), summary, title=f"TwoNN ID per layer, {name}"
        )
        if name == "tiny-llama":
            grid = compression.cka_matrix([torch.cat(h) for h in hidden])
            cells = [
                {"i": i, "j": j, "cka": float(grid[i, j])} for i in range(len(grid)) for j in range(len(grid))
            ]
            FIGURES["cka_tiny-llama"] = heatmap(
                pd.DataFrame(cells), "i", "j", "cka", "Linear CKA layer x layer, tiny-llama"
            )
    llama = load("tiny-llama")
    ids, _ = domain_windows(llama.tokenizer, sample, seq_len=64, per_domain=8)
    order = torch.randperm(len(ids), generator=torch.Generator().manual_seed(0))
    train, test = ids[order[::2]], ids[order[1::2]]
    tuned = lens.train_tuned_lens(llama, train, steps=150)
    lenses = pd.concat([lens.lens_table(llama, test), lens.lens_table(llama, test, tuned)])
    FIGURES["lens_kl_tiny-llama"] = lens_curves(lenses)
    depths = lens.prediction_depth(llama, test, tuned).flatten().tolist()
    FIGURES["prediction_depth_tiny-llama"] = depth_histogram(
        depths, "Prediction depth (tuned lens), tiny-llama"
    )
    depth_counts = [{"depth": d, "tokens": depths.count(d)} for d in sorted(set(depths))]
    return (
        "### Per-layer compression (pooling: all tokens; 30 held-out prompts)\n\n"
        + markdown_table(pd.DataFrame(rows), digits=3)
        + "\n\n### ID summaries and CKA blocks\n\n"
        + markdown_table(summaries, digits=3)
        + "\n\n### Lenses on tiny-llama (held-out windows; tuned lens trained on the other half)\n\n"
        + markdown_table(lenses, digits=4)
        + "\n\n### Prediction depth (tuned lens), tiny-llama\n\n"
        + markdown_table(depth_counts)
        + "\n"
    )


if __name__ == "__main__":
    import sys
    from pathlib import Path

    torch.set_num_threads(2)
    print("# Probe results on the zoo\n\nGenerated by `.venv/bin/python -m probes.report`.\n")
    print("## Attention sinks\n")
    print(sinks_section())
    print("## KV cache\n")
    print(kvcache_section())
    print("## MoE routing\n")
    print(moe_section())
    print("## Compression depth\n")
    print(compression_section())
    print("## Tokenizer\n")
    print(tokenizer_section(FIGURES))
    print("## Decoding\n")
    print(decoding_section(FIGURES))
    if "--figures" in sys.argv:
        out = Path(sys.argv[sys.argv.index("--figures") + 1])
        out.mkdir(parents=True, exist_ok=True)
        for name, figure in FIGURES.items():
            figure.write_image(out / f"{name}.png", width=720, height=440)
            print(f"![{name}]({name}.png)\n")
