"""What the app shows, computed by the capture engine and the probes (no Streamlit here, so the tests can
compare the app's numbers with the probes' directly). Every function takes a loaded model and a prompt
and returns plain tensors or tidy tables."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import torch

from probes import kvcache, moe, sinks
from probes.compression import cka_grid
from probes.eviction import simulate_eviction
from probes.registry import get
from workbench.capture import CaptureSpec, capture
from workbench.models.model import WorkbenchModel
from workbench.zoo import heldout

DEFAULT_MODEL = "tiny-moe"
MODEL_LABEL = "Model (zoo name, local directory, GGUF file or hub id)"  # the sidebar field
DEFAULT_PROMPT = "The quick brown fox jumps over the lazy dog. def add(a, b): return a + b"
PATTERN_LIMIT = 1024  # longer prompts are shown through the streamed statistics only
RESID = r"blocks\.\d+\.hook_resid_post"
EXPERTS = r"blocks\.\d+\.moe\.hook_expert_indices"


def token_labels(model: WorkbenchModel, ids: torch.Tensor) -> list[str]:
    """Position-prefixed token texts (``3: fox``), unique so that plots keep their order; each token is
    decoded on its own, newlines shown as ``\\n``."""
    decode = model.tokenizer.decode if model.tokenizer else str
    return [
        f"{i}:{decode([t]) if model.tokenizer else t}".replace("\n", "\\n")
        for i, t in enumerate(ids.tolist())
    ]


@dataclass
class LayerActivity:
    """Per layer and token of one prompt: residual norm, attention entropy and sink mass per head (from the
    streamed statistics, so any prompt length works) and the experts each MoE layer chose."""

    tokens: list[str]
    resid_norm: torch.Tensor  # [layer, pos]
    entropy: torch.Tensor  # [layer, head, pos]
    sink_mass: torch.Tensor  # [layer, head, pos]
    experts: torch.Tensor | None  # [layer, pos, k] (MoE layers only, in layer order)

    def table(self, metric: str) -> pd.DataFrame:
        """Tidy ``layer, position, token, value`` for ``resid_norm``, ``entropy``, ``sink_mass`` (means over
        heads) or ``expert`` (top-1 id)."""
        grids = {
            "resid_norm": self.resid_norm,
            "entropy": self.entropy.mean(1),
            "sink_mass": self.sink_mass.mean(1),
            "expert": None if self.experts is None else self.experts[..., 0].float(),
        }
        grid = grids[metric]
        return pd.DataFrame(
            [
                {"layer": layer, "position": pos, "token": self.tokens[pos], "value": float(grid[layer, pos])}
                for layer in range(grid.shape[0])
                for pos in range(grid.shape[1])
            ]
        )

    def details(self, layer: int, position: int) -> pd.DataFrame:
        """Per head at one (layer, token): attention entropy and sink mass."""
        return pd.DataFrame(
            {
                "head": range(self.entropy.shape[1]),
                "entropy": self.entropy[layer, :, position].tolist(),
                "sink_mass": self.sink_mass[layer, :, position].tolist(),
            }
        )


def layer_activity(model: WorkbenchModel, prompt: str) -> LayerActivity:
    """Capture residual norms, streamed attention statistics and expert ids for one prompt."""
    points = model.hook_points([RESID, EXPERTS], missing_ok=True)
    result = capture(
        model, [prompt], CaptureSpec(points=points, stats=["sink_mass", "entropy"]), progress=False
    )
    n_layers = model.cfg.n_layers
    layers = range(n_layers)
    expert_layers = [i for i in layers if f"blocks.{i}.moe.hook_expert_indices" in result]
    return LayerActivity(
        token_labels(model, result.tokens[0]),
        torch.stack([result[f"blocks.{i}.hook_resid_post"][0].float().norm(dim=-1) for i in layers]),
        torch.stack([result[f"blocks.{i}.attn.stat_entropy"][0] for i in layers]),
        torch.stack([result[f"blocks.{i}.attn.stat_sink_mass"][0] for i in layers]),
        torch.stack([result[f"blocks.{i}.moe.hook_expert_indices"][0] for i in expert_layers])
        if expert_layers
        else None,
    )


def attention_patterns(model: WorkbenchModel, prompt: str) -> tuple[list[torch.Tensor], pd.DataFrame]:
    """Attention patterns per layer ([head, q, k] each) and the sink table (Gu et al. alpha per head)."""
    n_layers = model.cfg.n_layers
    result = capture(
        model, [prompt], CaptureSpec(points=[r"blocks\.\d+\.attn\.hook_pattern"]), progress=False
    )
    if result.tokens[0].numel() > PATTERN_LIMIT:
        raise ValueError(f"patterns are shown up to {PATTERN_LIMIT} tokens")
    patterns = [result[f"blocks.{i}.attn.hook_pattern"][0].float() for i in range(n_layers)]
    return patterns, sinks.sink_table(result, n_layers, causal=model.cfg.causal)


def routing(model: WorkbenchModel, activity: LayerActivity) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Top-1 expert per token and MoE layer, and the expert load per layer (``probes.moe.expert_load``)."""
    n_experts = model.cfg.n_experts
    experts = activity.experts
    loads = [
        {"layer": layer, "expert": e, "load": float(v)}
        for layer in range(experts.shape[0])
        for e, v in enumerate(moe.expert_load(experts[layer], n_experts))
    ]
    return activity.table("expert"), pd.DataFrame(loads)


def specialisation(model: WorkbenchModel) -> pd.DataFrame:
    """The registered ``moe_specialisation`` probe on the held-out sample (four documents per domain), last
    MoE layer."""
    table = get("moe_specialisation")(model, heldout(4, 500))
    return table[table.layer == table.layer.max()]


def compression_depth(model: WorkbenchModel) -> tuple[pd.DataFrame, torch.Tensor, pd.DataFrame | None]:
    """The registered ``compression`` and ``cka`` probes on ten held-out prompts (two per domain), and the
    ``lens`` probe on two 64-token windows per domain (causal LMs only)."""
    texts = heldout(2, 300)
    profile = get("compression")(model, texts)
    grid = cka_grid(get("cka")(model, texts))
    lens = get("lens")(model, heldout(2, 2000), seq_len=64, windows=2) if model.cfg.causal_lm else None
    return profile, grid, lens


def retention(patterns: list[torch.Tensor], layer: int) -> pd.DataFrame:
    """Retained attention mass of the last query per policy and budget (``probes.kvcache``)."""
    return pd.DataFrame(kvcache.retention_curve([patterns[layer]]))


def eviction(model: WorkbenchModel, prompt: str, budget: float, policy: str) -> dict[str, float]:
    """Prune the cache of the prompt's first three quarters to ``budget`` (share of it) and decode the rest
    (``probes.eviction.simulate_eviction``): perplexity, KL and top-1 agreement against the full cache."""
    ids = model.encode(prompt)["input_ids"][:1]
    prompt_len = max(2, ids.shape[1] * 3 // 4)
    if ids.shape[1] - prompt_len < 1:
        raise ValueError("the prompt is too short to simulate eviction (needs at least 3 tokens)")
    return simulate_eviction(model, ids, prompt_len, policy, max(1, round(budget * prompt_len)))
