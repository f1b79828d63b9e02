"""Attention-sink probes: sink rate, first-token mass, sink tokens, massive activations, learned sinks.

Definitions follow ``shared/PROBES.md`` ("Attention sinks"). Every function takes tensors or a
:class:`workbench.Capture` and returns plain tensors or a tidy ``pandas.DataFrame`` (one row per
layer x head or layer x position); figures are built from those tables in :mod:`probes.figures`.
The pattern measures need only the attention each key receives (``sum_q A[q, k]``), so they read a
capture's streamed ``stat_key_mass`` (any length, no pattern held) or, failing that, its patterns.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd
import torch

from probes.divergence import kl_divergence
from probes.figures import lines_by_group, sink_heatmap
from probes.params import NoParams, param
from probes.registry import Context, Needs, Probe, per_model
from workbench.capture import Capture
from workbench.models.model import WorkbenchModel

PATTERN = "blocks.{layer}.attn.hook_pattern"
KEY_MASS = "blocks.{layer}.attn.stat_key_mass"
RESID = "blocks.{layer}.hook_resid_post"


def key_masses(capture: Capture, layer: int) -> list[torch.Tensor]:
    """The attention each key receives, ``sum_q A[h, q, k]`` [head, k] per prompt, from the capture's
    streamed ``stat_key_mass`` or its ``hook_pattern``."""
    name = KEY_MASS.format(layer=layer)
    if name in capture.names:
        return [m.float() for m in capture[name]]
    return [p.float().sum(1) for p in capture[PATTERN.format(layer=layer)]]


def alpha_from_key_mass(key_mass: torch.Tensor, key: int = 0, causal: bool = True) -> torch.Tensor:
    """:func:`key_alpha` from the attention each key receives [head, k] (a square pattern's length):
    ``key_mass[h, key] / (T - key)`` causal, ``/ T`` bidirectional. [head]"""
    length = key_mass.shape[-1]
    return key_mass[:, key].float() / (length - key if causal else length)


def key_alpha(pattern: torch.Tensor, key: int = 0, causal: bool = True) -> torch.Tensor:
    """Average attention a key receives from the queries that can see it (Gu et al. 2024, Sec. 3).

    Causal: ``alpha[h, k] = sum_{t >= k} A[h, t, k] / (T - k)``. Bidirectional encoders (the adapted metric):
    the column mean over all ``T`` queries. With uniform causal attention at T = 64, ``alpha`` of the first
    key is ``H_64 / 64 = 0.0741``.

    Args:
        pattern: One prompt's attention [head, q_pos, k_pos].
        key: Key position (0 = first token).
        causal: Causal attention (queries before ``key`` cannot see it).

    Returns:
        [head] alpha values.
    """
    column = pattern[:, :, key].float()
    if causal:
        return column[:, key:].sum(-1) / (pattern.shape[1] - key)
    return column.mean(-1)


def sink_rate(alphas: torch.Tensor, eps: float = 0.3) -> float:
    """Sink rate ``Sink_k^eps`` (Gu et al. 2024, eq. 2): percentage of (sample, layer, head) with alpha > eps.

    Args:
        alphas: [samples, layers, heads] from :func:`key_alpha`.
        eps: Threshold (0.3 in the paper).
    """
    return float(100 * (alphas > eps).float().mean())


def sink_table(
    capture: Capture, n_layers: int, causal: bool = True, eps: float = 0.3, key: int = 0
) -> pd.DataFrame:
    """Per layer and head: alpha of ``key`` averaged over prompts, and the share of prompts above ``eps``.

    Columns: ``layer, head, alpha, sink_share, metric`` (``metric`` is ``"gu2024"`` for causal models and
    ``"gu2024-adapted-bidirectional"`` for encoders).

    Raises:
        ValueError: ``eps`` outside [0, 1) (alpha is a share of attention).
    """
    if isinstance(eps, bool) or not isinstance(eps, int | float) or not 0 <= eps < 1:
        raise ValueError(f"eps: expected a share of attention in [0, 1), got {eps!r}")
    rows = []
    for layer in range(n_layers):
        alphas = torch.stack([alpha_from_key_mass(m, key, causal) for m in key_masses(capture, layer)])
        for head in range(alphas.shape[1]):
            rows.append(
                {
                    "layer": layer,
                    "head": head,
                    "alpha": float(alphas[:, head].mean()),
                    "sink_share": float((alphas[:, head] > eps).float().mean()),
                    "metric": "gu2024" if causal else "gu2024-adapted-bidirectional",
                }
            )
    return pd.DataFrame(rows)


def position_mass(capture: Capture, n_layers: int) -> pd.DataFrame:
    """Mean attention each key position receives per layer (averaged over heads, queries and prompts of
    at least that length), to identify sink tokens (first token, [CLS], [SEP], delimiters).

    Columns: ``layer, position, mass``; a key's mass is the mean over all queries of ``A[q, k]``.
    """
    rows = []
    for layer in range(n_layers):
        per_position: dict[int, list[float]] = {}
        for mass in key_masses(capture, layer):
            for position, value in enumerate((mass.mean(0) / mass.shape[-1]).tolist()):
                per_position.setdefault(position, []).append(value)
        rows += [{"layer": layer, "position": p, "mass": sum(v) / len(v)} for p, v in per_position.items()]
    return pd.DataFrame(rows)


def token_mass(capture: Capture, n_layers: int, token_ids: Sequence[int]) -> pd.DataFrame:
    """Per layer, the mean attention (over heads, queries, prompts) that goes to keys holding ``token_ids``.

    Columns: ``layer, token_id, mass`` (the share of each query's attention summed over matching keys).
    """
    rows = []
    for layer in range(n_layers):
        for token_id in token_ids:
            shares = []
            for ids, mass in zip(capture.tokens, key_masses(capture, layer), strict=True):
                match = ids == token_id
                if match.any():  # mean over heads and queries of sum over matching keys of A[q, k]
                    shares.append(float(mass[:, match].sum(-1).mean() / mass.shape[-1]))
            rows.append({"layer": layer, "token_id": token_id, "mass": sum(shares) / max(len(shares), 1)})
    return pd.DataFrame(rows)


def massive_activations(
    hidden: torch.Tensor, top: int = 3, threshold: float = 100.0, ratio: float = 1000.0
) -> dict:
    """Massive activations of one layer's residual output (Sun et al. 2024, Sec. 2).

    An entry is massive if ``|x| > threshold`` and ``|x| >= ratio x median(|h|)`` over the layer's whole
    hidden state.

    Args:
        hidden: [pos, d_model] (or [batch, pos, d_model]) residual output.
        top: How many of the largest magnitudes to report.
        threshold: Absolute threshold (100 in the paper).
        ratio: Multiple of the median magnitude (1000 in the paper).

    Returns:
        ``top_values``, ``top_positions`` ((token, channel) pairs), ``median``, ``top_ratio`` (largest /
        median; tiny models rarely pass 100, so the ratio is the comparable number) and ``n_massive``.
    """
    magnitude = hidden.float().abs().reshape(-1, hidden.shape[-1])
    median = float(magnitude.median())
    values, flat = magnitude.flatten().topk(min(top, magnitude.numel()))
    positions = [(int(i) // magnitude.shape[1], int(i) % magnitude.shape[1]) for i in flat]
    massive = (magnitude > threshold) & (magnitude >= ratio * median)
    return {
        "top_values": values.tolist(),
        "top_positions": positions,
        "median": median,
        "top_ratio": float(values[0]) / median if median > 0 else float("inf"),
        "n_massive": int(massive.sum()),
    }


def massive_table(capture: Capture, n_layers: int) -> pd.DataFrame:
    """:func:`massive_activations` per layer and prompt. Columns: ``layer, prompt, top1, top1_token,
    top1_channel, median, top_ratio, n_massive``."""
    rows = []
    for layer in range(n_layers):
        for prompt, hidden in enumerate(capture[RESID.format(layer=layer)]):
            found = massive_activations(hidden)
            token, channel = found["top_positions"][0]
            rows.append(
                {
                    "layer": layer,
                    "prompt": prompt,
                    "top1": found["top_values"][0],
                    "top1_token": token,
                    "top1_channel": channel,
                    "median": found["median"],
                    "top_ratio": found["top_ratio"],
                    "n_massive": found["n_massive"],
                }
            )
    return pd.DataFrame(rows)


def learned_sink_mass(pattern: torch.Tensor) -> torch.Tensor:
    """Mass each head gives its learned sink (GPT-OSS): ``1 - sum_k A[h, q, k]`` averaged over queries.

    The sink logit joins the softmax and is dropped afterwards, so the pattern's rows miss exactly the
    sink's share.

    Args:
        pattern: One prompt's attention [head, q_pos, k_pos] as the module returned it.

    Returns:
        [head] mean sink mass.
    """
    return (1 - pattern.float().sum(-1)).mean(-1)


def sink_ablation(model: WorkbenchModel, prompts: Sequence[str], sink_tokens: int = 1) -> pd.DataFrame:
    """Effect of removing the sink's attention (renormalising the rest) on the model's predictions.

    Per prompt: next-token cross-entropy with the full attention and with the sink removed in every layer
    (:func:`workbench.intervene.remove_sink`), their difference, and ``KL(p_full || p_ablated)`` averaged
    over positions. Prompts run one at a time (the sink must be cache index 0).

    Columns: ``prompt, loss_full, loss_ablated, delta_loss, kl``.
    """
    from workbench.intervene import remove_sink

    rows = []
    for index, prompt in enumerate(prompts):
        ids = model.encode(prompt)["input_ids"][:1]
        with torch.no_grad():
            full = model.hf(input_ids=ids, labels=ids)
            with remove_sink(model, sink_tokens):
                ablated = model.hf(input_ids=ids, labels=ids)
        log_p, log_q = full.logits.float().log_softmax(-1), ablated.logits.float().log_softmax(-1)
        kl = float(kl_divergence(log_p, log_q).mean())
        loss_full, loss_ablated = float(full.loss), float(ablated.loss)
        rows.append(
            {
                "prompt": index,
                "loss_full": loss_full,
                "loss_ablated": loss_ablated,
                "delta_loss": loss_ablated - loss_full,
                "kl": kl,
            }
        )
    return pd.DataFrame(rows)


def alpha_from_streamed(sink_mass: torch.Tensor) -> torch.Tensor:
    """:func:`key_alpha` of the first token from the streamed ``stat_sink_mass`` [head, q] (sink_tokens=1).

    For causal attention every query sees the first token, so ``alpha = mean_t A[t, 0]``: long inputs get
    the sink rate without any ``T x T`` pattern.
    """
    return sink_mass.float().mean(-1)


def sink_tokens(capture: Capture, tokenizer: object, layer: int, top: int = 3) -> pd.DataFrame:
    """The positions that take the most attention in one layer, with their tokens and a category.

    Categories: ``first`` (position 0), ``bos`` / ``cls`` / ``sep`` / ``eos`` (the tokenizer's special
    tokens), ``delimiter`` (punctuation or whitespace-only tokens), else ``other``. Columns: ``prompt,
    position, token, category, mass``.
    """
    specials = {getattr(tokenizer, f"{role}_token_id", None): role for role in ("bos", "cls", "sep", "eos")}
    rows = []
    for prompt, (ids, key_mass) in enumerate(zip(capture.tokens, key_masses(capture, layer), strict=True)):
        mass = key_mass.mean(0) / key_mass.shape[-1]  # mean over heads and queries of A[q, k]
        for position in mass.topk(min(top, len(mass))).indices.tolist():
            token_id = int(ids[position])
            text = tokenizer.decode([token_id])
            if position == 0:
                category = "first"
            elif token_id in specials:
                category = specials[token_id]
            elif not text.strip() or all(not ch.isalnum() for ch in text.strip()):
                category = "delimiter"
            else:
                category = "other"
            rows.append(
                {
                    "prompt": prompt,
                    "position": position,
                    "token": text,
                    "category": category,
                    "mass": float(mass[position]),
                }
            )
    return pd.DataFrame(rows)


# -- registered probes ----------------------------------------------------------------------------------

PATTERNS = r"blocks\.\d+\.attn\.hook_pattern"
RESIDUALS = r"blocks\.\d+\.hook_resid_post"


@dataclass(frozen=True)
class SinksParams:
    """``eps``: the alpha above which a head counts as a sink on a prompt."""

    eps: float = param(0.3, low=0, high=1, below=True)


def _sinks(ctx: Context, params: SinksParams) -> pd.DataFrame:
    cfg = ctx.model.cfg
    return sink_table(ctx.capture(stats=["key_mass"]), cfg.n_layers, causal=cfg.causal, eps=params.eps)


SINKS = Probe(
    name="sinks",
    doc="Gu et al. first-token alpha and sink share per layer and head.",
    formula="alpha_h = mean over queries q that see key 0 of A_h[q, 0]; a head is a sink on a prompt when "
    "alpha_h > eps; sink share = share of prompts on which it is",
    cite="Gu et al. 2024, When Attention Sink Emerges in Language Models (arXiv 2410.10781), Sec. 3",
    run=_sinks,
    params=SinksParams,
    needs=Needs(points=(PATTERNS,)),
    figures=lambda t: per_model(t, lambda r, m: sink_heatmap(r, f"First-token alpha, {m}")),
    summary=lambda t: t.groupby("model", sort=False, as_index=False).agg(
        sink_rate=("sink_share", lambda s: 100 * s.mean()), mean_alpha=("alpha", "mean")
    ),
)

MASSIVE_ACTIVATIONS = Probe(
    name="massive_activations",
    doc="Sun et al. massive activations per layer and prompt.",
    formula="top_ratio = max |h| / median |h| over a layer's residual entries; massive: |h| > 100 and "
    ">= 1000 x median",
    cite="Sun et al. 2024, Massive Activations in Large Language Models (arXiv 2402.17762), Sec. 2",
    run=lambda ctx, params: massive_table(ctx.capture(RESIDUALS), ctx.model.cfg.n_layers),
    needs=Needs(points=(RESIDUALS,)),
    figures=lambda t: [
        (
            "all",
            lines_by_group(
                t.groupby(["model", "layer"], as_index=False).top_ratio.mean(),
                "layer",
                "top_ratio",
                "model",
                "Top activation / median per layer",
            ),
        )
    ],
    summary=lambda t: t.groupby("model", sort=False, as_index=False).agg(
        max_top_ratio=("top_ratio", "max"), massive_per_prompt=("n_massive", "mean")
    ),
)


def _special_mass(ctx: Context, params: NoParams) -> pd.DataFrame:
    tokenizer = ctx.model.tokenizer
    special = [i for i in tokenizer.all_special_ids if i != tokenizer.pad_token_id]
    table = token_mass(ctx.capture(stats=["key_mass"]), ctx.model.cfg.n_layers, sorted(set(special)))
    return table.assign(token=[tokenizer.convert_ids_to_tokens(int(i)) for i in table.token_id])


SPECIAL_TOKEN_MASS = Probe(
    name="special_token_mass",
    doc="Attention mass on each special token ([CLS], [SEP], BOS ...) per layer.",
    formula="mass(t) = mean over heads, queries and prompts of sum over keys holding token t of A[q, k]",
    cite="Clark et al. 2019, What Does BERT Look At? (BlackboxNLP), Sec. 3; Gu et al. 2024, Sec. 3",
    run=_special_mass,
    needs=Needs(tokenizer=True, points=(PATTERNS,)),
    figures=lambda t: [
        (
            "all",
            lines_by_group(
                t.assign(model=t.model + " " + t.token), "layer", "mass", "model", "Mass on special tokens"
            ),
        )
    ],
    summary=lambda t: t.pivot_table(
        index=["model", "layer"], columns="token", values="mass", sort=False
    ).reset_index(),
)
