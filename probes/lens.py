"""Logit lens, tuned lens and prediction depth.

- Logit lens (nostalgebraist 2020): decode a layer's residual with the model's own final norm and
  unembedding, ``W_U . final_norm(h_l)``.
- Tuned lens (Belrose et al. 2023): a per-layer affine translator applied residually, ``h + A h + b``
  (zero init, so it starts as the logit lens), trained to minimise ``KL(p_final || p_l)``.
- Per layer: KL to the final distribution, entropy, top-1 agreement with the final top-1.
- Prediction depth: the first layer from which the top-1 equals the final top-1 at every later layer.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from probes.divergence import kl_divergence
from probes.figures import bars_by_group, lines_by_group
from probes.params import param
from probes.registry import Context, Needs, Probe
from workbench.models.model import WorkbenchModel
from workbench.numerics import entropy


def decode(model: WorkbenchModel, hidden: torch.Tensor) -> torch.Tensor:
    """Logits from residual states [..., d_model] through the final norm and the unembedding."""
    norm = model.base.get_submodule(model.adapter.final_norm) if model.adapter.final_norm else nn.Identity()
    logits = model.hf.get_output_embeddings()(norm(hidden))
    scaling = getattr(model.config, "logits_scaling", None)  # Granite-MoE divides its logits
    return logits / scaling if scaling else logits


def residuals(model: WorkbenchModel, ids: torch.Tensor) -> list[torch.Tensor]:
    """Residual stream after every block for token ids [batch, pos] (the last one before the final norm)."""
    names = model.hook_points(r"blocks\.\d+\.hook_resid_post")
    values = model.read(ids, names)
    return [values[n] for n in names]


class TunedLens(nn.Module):
    """Per-layer translators ``h -> h + A_l h + b_l`` (zero-initialised), one per block but the last."""

    def __init__(self, n_layers: int, d_model: int) -> None:
        super().__init__()
        self.translators = nn.ModuleList(nn.Linear(d_model, d_model) for _ in range(n_layers - 1))
        for layer in self.translators:
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, hidden: torch.Tensor, layer: int) -> torch.Tensor:
        """Translated residual of ``layer`` (the last layer passes through)."""
        if layer >= len(self.translators):
            return hidden
        return hidden + self.translators[layer](hidden)

    def save(self, path: str | Path) -> None:
        """Save the translators as safetensors."""
        save_file({k: v.contiguous() for k, v in self.state_dict().items()}, str(path))

    @classmethod
    def load(cls, path: str | Path, n_layers: int, d_model: int) -> TunedLens:
        """Load translators saved by :meth:`save`."""
        lens = cls(n_layers, d_model)
        lens.load_state_dict(load_file(str(path)))
        return lens


def train_tuned_lens(
    model: WorkbenchModel, ids: torch.Tensor, steps: int = 300, lr: float = 1e-3, seed: int = 0
) -> TunedLens:
    """Fit a tuned lens on token windows [batch, pos] (all positions), minimising ``KL(p_final || p_l)``."""
    torch.manual_seed(seed)
    hidden = [h.detach() for h in residuals(model, ids)]
    with torch.no_grad():
        final = decode(model, hidden[-1]).float().log_softmax(-1)
    lens = TunedLens(len(hidden), hidden[0].shape[-1])
    optimiser = torch.optim.Adam(lens.parameters(), lr=lr)
    for weight in model.hf.parameters():
        weight.requires_grad_(False)
    try:
        for _ in range(steps):
            loss = sum(
                kl_divergence(final, decode(model, lens(h, layer)).float().log_softmax(-1)).mean()
                for layer, h in enumerate(hidden[:-1])
            )
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    finally:
        for weight in model.hf.parameters():
            weight.requires_grad_(True)
    return lens


@torch.no_grad()
def lens_table(model: WorkbenchModel, ids: torch.Tensor, lens: TunedLens | None = None) -> pd.DataFrame:
    """Per layer: KL to the final distribution, entropy and top-1 agreement (logit lens, or tuned lens).

    Columns: ``layer, lens, kl_to_final, entropy, top1_agreement`` (means over all positions).
    """
    hidden = residuals(model, ids)
    final = decode(model, hidden[-1]).float().log_softmax(-1)
    rows = []
    for layer, h in enumerate(hidden):
        logp = decode(model, lens(h, layer) if lens is not None else h).float().log_softmax(-1)
        rows.append(
            {
                "layer": layer,
                "lens": "tuned" if lens is not None else "logit",
                "kl_to_final": float(kl_divergence(final, logp).mean()),
                "entropy": float(entropy(logp, log=True).mean()),
                "top1_agreement": float((logp.argmax(-1) == final.argmax(-1)).float().mean()),
            }
        )
    return pd.DataFrame(rows)


@torch.no_grad()
def prediction_depth(model: WorkbenchModel, ids: torch.Tensor, lens: TunedLens | None = None) -> torch.Tensor:
    """Per token [batch, pos]: the first layer from which the lens top-1 equals the final top-1 at every
    later layer (``n_layers - 1`` when only the last layer agrees)."""
    hidden = residuals(model, ids)
    tops = torch.stack(
        [decode(model, lens(h, i) if lens is not None else h).argmax(-1) for i, h in enumerate(hidden)]
    )  # [layer, batch, pos]
    agree = tops == tops[-1]
    # a layer counts when it and every later layer agree: reverse cumulative AND
    settled = agree.flip(0).cumprod(0).flip(0).bool()
    n_layers = len(hidden)
    return n_layers - settled.sum(0)


# -- registered probes ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class LensParams:
    """Token windows per group and their length, and tuned-lens training steps (0: logit lens only; else
    the tuned lens is trained on half the windows and both lenses are read on the other half)."""

    seq_len: int = param(64, low=2)
    windows: int = param(4, low=1)
    tuned_steps: int = param(0, low=0)


def _windows_and_lens(ctx: Context, params: LensParams) -> tuple[torch.Tensor, TunedLens | None]:
    """The windows a lens is read on, and the tuned lens (None: logit lens only): with tuned steps, the
    lens is trained on a seeded half of the windows and read on the other half."""
    ids, _ = ctx.windows(params.seq_len, params.windows)
    if params.tuned_steps == 0:
        return ids, None
    order = torch.randperm(len(ids), generator=torch.Generator().manual_seed(ctx.seed))
    train, test = ids[order[::2]], ids[order[1::2]]
    key = ("tuned_lens", params.tuned_steps, ctx.seed, tuple(train.flatten().tolist()))
    if key not in ctx.model.memo:  # the lens and prediction-depth probes of one model share it
        ctx.model.memo[key] = train_tuned_lens(ctx.model, train, steps=params.tuned_steps)
    return test, ctx.model.memo[key]


def _lens(ctx: Context, params: LensParams) -> pd.DataFrame:
    ids, tuned = _windows_and_lens(ctx, params)
    tables = [lens_table(ctx.model, ids)] + ([lens_table(ctx.model, ids, tuned)] if tuned else [])
    return pd.concat(tables).reset_index(drop=True)


def _prediction_depth(ctx: Context, params: LensParams) -> pd.DataFrame:
    ids, tuned = _windows_and_lens(ctx, params)
    depths = prediction_depth(ctx.model, ids, tuned).flatten()
    counts = torch.bincount(depths, minlength=ctx.model.cfg.n_layers)
    return pd.DataFrame(
        {"depth": range(len(counts)), "tokens": counts.tolist(), "share": (counts / counts.sum()).tolist()}
    )


LENS = Probe(
    name="lens",
    doc="Logit lens (and tuned lens) KL to the final layer, entropy, top-1 agreement.",
    formula="p_l = softmax(W_U norm(h_l)) (logit lens) or softmax(W_U norm(h_l + A_l h_l + b_l)) (tuned "
    "lens, trained to minimise KL(p_final || p_l)); per layer KL(p_final || p_l), H(p_l) and "
    "P(argmax p_l = argmax p_final)",
    cite="nostalgebraist 2020 (logit lens); Belrose et al. 2023, Eliciting Latent Predictions from "
    "Transformers with the Tuned Lens (arXiv 2303.08112), Eq. 2-3",
    run=_lens,
    params=LensParams,
    needs=Needs(causal_lm=True, tokenizer=True, runs_model=True),
    figures=lambda t: [
        (
            "all",
            lines_by_group(
                t.assign(model=t.model + " " + t.lens),
                "layer",
                "kl_to_final",
                "model",
                "Lens KL to the final layer",
            ),
        )
    ],
    summary=lambda t: t.groupby(["model", "lens"], sort=False, as_index=False)[
        ["kl_to_final", "top1_agreement"]
    ].mean(),
)

PREDICTION_DEPTH = Probe(
    name="prediction_depth",
    doc="Prediction depth distribution (logit lens, or tuned lens with tuned steps).",
    formula="depth(token) = the first layer l from which argmax p_l' = argmax p_final for every l' >= l",
    cite="Belrose et al. 2023 (arXiv 2303.08112), Sec. 5; Baldock et al. 2021 (prediction depth)",
    run=_prediction_depth,
    params=LensParams,
    needs=Needs(causal_lm=True, tokenizer=True, runs_model=True),
    figures=lambda t: [("all", bars_by_group(t, "depth", "share", "model", "Prediction depth"))],
    summary=lambda t: (
        t.assign(weighted=t.depth * t.share)
        .groupby("model", sort=False, as_index=False)
        .agg(mean_depth=("weighted", "sum"))
    ),
)
