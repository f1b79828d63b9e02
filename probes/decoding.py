"""Decoding probes: sampling-setting sweeps and batch invariance (``shared/PROBES.md``, "Decoding").

A sweep runs :func:`workbench.capture.generate.stream_generate` for every setting, prompt and seed, so each
generated token comes with the model's internal signals at that step (sink mass, attention entropy,
routing entropy, residual norm). Sample ``s`` of every setting uses seed ``seed + s`` (common random
numbers: settings differ by their parameters, not by their luck), and a sweep is reproducible run to run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch
from rich.progress import track

from probes.figures import bars_by_group, lines_by_group
from probes.moe import routing_entropy
from probes.params import SHARE, param
from probes.registry import Context, Needs, Probe
from workbench.capture import CaptureSpec
from workbench.capture.generate import Step, stream_generate
from workbench.errors import InputError
from workbench.models.model import WorkbenchModel

PARAMETERS = ("temperature", "top_k", "top_p", "repetition_penalty", "max_new_tokens")
BASE_SETTING: dict[str, Any] = {
    "temperature": 1.0,
    "top_k": None,
    "top_p": None,
    "repetition_penalty": None,
    "max_new_tokens": 32,
}


def one_at_a_time(base: dict[str, Any] | None = None, **values: Sequence[Any]) -> list[dict[str, Any]]:
    """Settings that vary one decoding parameter at a time around ``base`` (default :data:`BASE_SETTING`);
    each carries ``sweep`` = the parameter it varies. ``one_at_a_time(temperature=[0.2, 1.0])``."""
    base = {**BASE_SETTING, **(base or {})}
    unknown = set(values) - set(PARAMETERS)
    if unknown:
        raise InputError(
            f"unknown decoding parameter {sorted(unknown)[0]!r}; use one of {', '.join(PARAMETERS)}"
        )
    return [{**base, name: value, "sweep": name} for name, options in values.items() for value in options]


def ngrams(ids: Sequence[int], n: int) -> list[tuple[int, ...]]:
    """The n-grams of a token sequence, in order."""
    return [tuple(ids[i : i + n]) for i in range(len(ids) - n + 1)]


def distinct_n(sequences: Sequence[Sequence[int]], n: int) -> float:
    """Distinct-n (Li et al. 2016, "A Diversity-Promoting Objective Function for Neural Conversation
    Models"): ``|unique n-grams| / |n-grams|`` pooled over ``sequences``; NaN when there is no n-gram."""
    grams = [g for ids in sequences for g in ngrams(ids, n)]
    return len(set(grams)) / len(grams) if grams else float("nan")


def repetition_rate(ids: Sequence[int], n: int = 4) -> float:
    """seq-rep-n (Welleck et al. 2020, "Neural Text Generation with Unlikelihood Training"):
    ``1 - |unique n-grams| / |n-grams|`` of one continuation; 0 when no n-gram repeats, NaN when the
    continuation is shorter than n."""
    grams = ngrams(ids, n)
    return 1 - len(set(grams)) / len(grams) if grams else float("nan")


def _signal_spec(model: WorkbenchModel) -> CaptureSpec:
    routers = model.hook_points([r"blocks\.\d+\.moe\.hook_router_logits"], missing_ok=True)
    return CaptureSpec(points=routers, stats=["sink_mass", "entropy"])


def step_signals(model: WorkbenchModel, step: Step) -> dict[str, Any]:
    """One generated token and the internal signals at its step: sampling and model entropy, sink mass and
    attention entropy (means over layers and heads), routing entropy (mean over MoE layers; NaN for dense
    models) and the last block's residual norm."""

    def mean_of(suffix: str) -> float:
        values = [v.float().mean() for k, v in step.values.items() if k.endswith(suffix)]
        return float(torch.stack(values).mean()) if values else float("nan")

    convention = model.adapter.router_convention
    routers = [v for k, v in step.values.items() if k.endswith("hook_router_logits")]
    scoring = convention.scoring if convention is not None else "softmax"
    return {
        "step": step.index,
        "token_id": step.token_id,
        "token": step.token,
        "sampling_entropy": step.logit_entropy,
        "model_entropy": step.model_entropy,
        "sink_mass": mean_of("stat_sink_mass"),
        "attention_entropy": mean_of("stat_entropy"),
        "routing_entropy": float(routing_entropy(torch.stack(routers), scoring).mean())
        if routers
        else float("nan"),
        "resid_norm": step.resid_norms[-1] if step.resid_norms else float("nan"),
    }


def decoding_sweep(
    model: WorkbenchModel,
    prompts: Sequence[str],
    settings: Sequence[dict[str, Any]],
    samples: int = 4,
    seed: int = 0,
    progress: bool = True,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Generate ``samples`` seeded continuations per prompt for every decoding setting.

    Returns:
        ``(tokens, runs)``. ``tokens``: one row per generated token with the setting, ``prompt``,
        ``sample``, ``step``, the token, ``sampling_entropy`` (the distribution it was drawn from),
        ``model_entropy`` (the model's own), and the internal signals at that step: ``sink_mass`` and
        ``attention_entropy`` (means over layers and heads), ``routing_entropy`` (mean over MoE layers;
        NaN for dense models) and ``resid_norm`` (last block). ``runs``: one row per continuation with
        ``length``, ``truncated`` (stopped by max_new_tokens, not EOS), ``distinct_1``, ``distinct_2``,
        ``repetition_rate`` (seq-rep-4), mean entropies, ``token_ids`` and ``text``.
    """
    if not prompts:
        raise InputError("no prompts for the decoding sweep")
    spec = _signal_spec(model)
    eos = model.tokenizer.eos_token_id
    jobs = [(i, s, p, n) for i, s in enumerate(settings) for p in range(len(prompts)) for n in range(samples)]
    token_rows, run_rows = [], []
    for index, setting, p, n in track(jobs, description="decoding sweep", disable=not progress):
        decoding = {k: setting.get(k, BASE_SETTING[k]) for k in PARAMETERS}
        keys = {"setting": index, "sweep": setting.get("sweep", ""), **decoding, "prompt": p, "sample": n}
        steps = list(stream_generate(model, prompts[p], spec, seed=seed + n, **decoding))
        rows = [{**keys, **step_signals(model, step)} for step in steps]
        ids = [step.token_id for step in steps]
        token_rows += rows
        run_rows.append(
            {
                **keys,
                "length": len(ids),
                "truncated": not ids or ids[-1] != eos,
                "distinct_1": distinct_n([ids], 1),
                "distinct_2": distinct_n([ids], 2),
                "repetition_rate": repetition_rate(ids),
                "sampling_entropy": sum(r["sampling_entropy"] for r in rows) / max(len(rows), 1),
                "model_entropy": sum(r["model_entropy"] for r in rows) / max(len(rows), 1),
                "token_ids": ids,
                "text": "".join(step.token for step in steps),
            }
        )
    return pd.DataFrame(token_rows), pd.DataFrame(run_rows)


def sweep_summary(tokens: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """One row per setting: mean length, truncation rate, distinct-1/2 pooled over all its samples,
    mean seq-rep-4, mean entropies and mean internal signals per generated token."""
    keys = ["setting", "sweep", *PARAMETERS]
    per_run = runs.groupby("setting").agg(
        length=("length", "mean"),
        truncation_rate=("truncated", "mean"),
        repetition_rate=("repetition_rate", "mean"),
    )
    pooled = pd.DataFrame(
        {
            f"distinct_{n}": runs.groupby("setting").token_ids.agg(lambda ids, n=n: distinct_n(list(ids), n))
            for n in (1, 2)
        }
    )
    signals = [
        "sampling_entropy",
        "model_entropy",
        "sink_mass",
        "attention_entropy",
        "routing_entropy",
        "resid_norm",
    ]
    per_token = tokens.groupby("setting")[signals].mean()
    settings = runs.drop_duplicates("setting")[keys].set_index("setting")
    return settings.join([per_run, pooled, per_token]).reset_index()


def batch_invariance(
    model: WorkbenchModel,
    prompt: str,
    fillers: Sequence[str],
    batch_sizes: Sequence[int] = (2, 4, 8),
    sides: Sequence[str] = ("left", "right"),
) -> pd.DataFrame:
    """Logits of ``prompt`` alone vs inside padded batches (the fillers are longer, so the prompt is padded).

    Position ids follow the attention mask (``cumsum - 1``, as ``generate`` does for left padding), so a
    difference is numerical (masked attention, kernels that change with batch shape), not a shifted
    position. Encoders without an LM head compare their last hidden state (``argmax_flips`` is NaN).

    Returns:
        One row per ``side`` and ``batch_size``: ``max_abs_diff`` over the prompt's real positions,
        ``argmax_flips`` (positions whose top-1 token changes), ``positions`` and ``pad_tokens`` (padding
        added to the prompt's row).

    Raises:
        ValueError: No batch size, or one below 1.
    """
    if not batch_sizes or any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in batch_sizes):
        raise ValueError(f"batch_sizes: expected integers >= 1, got {list(batch_sizes)!r}")
    need = max(batch_sizes) - 1
    if len(fillers) < need:
        raise InputError(f"batch invariance up to batch size {max(batch_sizes)} needs {need} filler prompts")
    alone, _ = _forward(model, [prompt], "right")
    rows = []
    for side in sides:
        for size in batch_sizes:
            batched, mask = _forward(model, [prompt, *fillers[: size - 1]], side)
            real = batched[0][mask[0].bool()]
            diff = (real - alone[0]).abs().max()
            has_vocab = alone.shape[-1] == model.config.vocab_size
            flips = int((real.argmax(-1) != alone[0].argmax(-1)).sum()) if has_vocab else float("nan")
            rows.append(
                {
                    "side": side,
                    "batch_size": size,
                    "max_abs_diff": float(diff),
                    "argmax_flips": flips,
                    "positions": alone.shape[1],
                    "pad_tokens": int((1 - mask[0]).sum()),
                }
            )
    return pd.DataFrame(rows)


def _forward(model: WorkbenchModel, prompts: list[str], side: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Output (logits, else last hidden state) [batch, pos, *] and attention mask for a padded batch."""
    batch = model.tokenizer(prompts, return_tensors="pt", padding=True, padding_side=side).to(model.device)
    mask = batch["attention_mask"]
    batch["position_ids"] = (mask.cumsum(-1) - 1).clamp_min(0)
    with torch.no_grad():
        out = model.hf(**batch)
    value = out.logits if getattr(out, "logits", None) is not None else out.last_hidden_state
    return value.float(), mask


# -- registered probes ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class DecodingParams:
    """The swept settings (one at a time; an empty list sweeps nothing), tokens, samples, prompt cut."""

    temperature: tuple[float, ...] = param((0.2, 0.7, 1.0, 1.5), low=0, above=True)
    top_p: tuple[float, ...] = param((0.9,), **SHARE)
    top_k: tuple[int, ...] = param((50,), low=1)
    repetition_penalty: tuple[float, ...] = param((1.3,), low=0, above=True)
    max_new_tokens: int = param(16, low=1)
    samples: int = param(2, low=1)
    prompt_chars: int = param(80, low=1)


def _decoding(ctx: Context, params: DecodingParams) -> pd.DataFrame:
    swept = ("temperature", "top_p", "top_k", "repetition_penalty")
    sweeps = {k: getattr(params, k) for k in swept if getattr(params, k)}
    settings = one_at_a_time({"max_new_tokens": params.max_new_tokens}, **sweeps)
    prompts = [t[: params.prompt_chars] for t in ctx.prompts]
    tokens, runs = decoding_sweep(ctx.model, prompts, settings, params.samples, ctx.seed, progress=False)
    return sweep_summary(tokens, runs)


DECODING = Probe(
    name="decoding",
    doc="Seeded decoding sweeps: entropy, distinct-n, repetition, length, internal signals per setting.",
    formula="per setting: distinct-n = unique n-grams / n-grams; seq-rep-4 = 1 - unique 4-grams / 4-grams; "
    "sampling entropy H(p_processed) and model entropy H(p_model) per generated token; sink mass, attention "
    "and routing entropy, residual norm at each step",
    cite="Holtzman et al. 2020 (nucleus sampling, distinct-n); Welleck et al. 2020 (seq-rep-4, ICLR)",
    run=_decoding,
    params=DecodingParams,
    needs=Needs(causal_lm=True, tokenizer=True, runs_model=True),
    figures=lambda t: [
        (
            "all",
            lines_by_group(
                t[t.sweep == "temperature"],
                "temperature",
                "sampling_entropy",
                "model",
                "Sampling entropy by temperature",
            ),
        )
    ],
    summary=lambda t: t[
        [
            "model",
            "sweep",
            "temperature",
            "top_p",
            "top_k",
            "repetition_penalty",
            "sampling_entropy",
            "distinct_2",
        ]
    ],
)


@dataclass(frozen=True)
class BatchInvarianceParams:
    """The prompt compared alone and batched, and the batch sizes."""

    prompt: str = param("The cat sat on the mat.", min_len=1)
    batch_sizes: tuple[int, ...] = param((2, 4), low=1, min_len=1)


def _batch_invariance(ctx: Context, params: BatchInvarianceParams) -> pd.DataFrame:
    sizes = tuple(params.batch_sizes)
    fillers = sorted(ctx.prompts, key=len, reverse=True)[: max(sizes) - 1]
    return batch_invariance(ctx.model, params.prompt, fillers, sizes)


BATCH_INVARIANCE = Probe(
    name="batch_invariance",
    doc="Logits of a prompt alone vs first in left / right padded batches: max abs difference, argmax flips.",
    formula="max over the prompt's real positions of |logits(prompt alone) - logits(prompt in a padded "
    "batch)|, and the positions whose argmax changes",
    cite="He et al. 2025, Defeating Nondeterminism in LLM Inference (Thinking Machines Lab)",
    run=_batch_invariance,
    params=BatchInvarianceParams,
    needs=Needs(tokenizer=True, runs_model=True),
    figures=lambda t: [
        (
            "all",
            bars_by_group(
                t.assign(model=t.model + " " + t.side),
                "batch_size",
                "max_abs_diff",
                "model",
                "Batch invariance",
            ),
        )
    ],
    summary=lambda t: t.groupby("model", sort=False, as_index=False).agg(
        max_abs_diff=("max_abs_diff", "max"),
        argmax_flips=("argmax_flips", lambda s: s.sum(min_count=1)),  # NaN for an encoder
    ),
)
