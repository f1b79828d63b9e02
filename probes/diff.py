"""Checkpoint diff: what tuning changed inside a model, from two checkpoints of one architecture (``a`` the
base, ``b`` the tuned one) and one prompt set, each measure a tidy table.

- weights (:mod:`probes.diff_weights`): per tensor, the relative change, the share of entries changed and
  the effective rank of the change, with its layer and kind;
- representations: per layer (``-1``: the embeddings), linear CKA between A's and B's residual stream on
  the same tokens (Kornblith et al. 2019; change concentrating in later layers: arXiv 2410.20008), the norm
  of the mean activation difference ``||mean_t (h_b - h_a)||`` and that norm over A's mean state norm;
- the activation-difference lens (ADL; arXiv 2510.13900, Sec. 3): the mean difference ``delta_j`` at each
  of the first ``first_tokens`` positions of the prompts, at the middle layer, read through B's final norm
  and unembedding (the logit lens): the tokens it promotes;
- internals (:mod:`probes.diff_internals`): per layer, the sink rate, massive activations and TwoNN
  intrinsic dimension of each and their changes;
- outputs: per group, ``KL(p_a || p_b)`` of the next-token distributions averaged over positions, and each
  model's loss per byte (:func:`probes.tokenizer.loss_per_byte`); and the tokens whose logits moved most,
  ``mean_t [(z_b - mean z_b) - (z_a - mean z_a)]`` (logits centred per position: a shift of all logits
  changes no probability).

Identical checkpoints give weight changes of 0, CKA 1, mean differences 0 and KL 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import torch

from probes.compression import linear_cka
from probes.diff_internals import internals_diff, residual_states
from probes.diff_patching import cross_patching
from probes.diff_routing import attention_diff, routing_diff
from probes.diff_weights import change_shares, check_same_architecture, pair_of, prompt_ids, weight_diff
from probes.divergence import kl_divergence, next_token_log_probs
from probes.figures import bars_by_group, lines_by_group
from probes.lens import decode
from probes.params import param
from probes.registry import Context, Needs, Probe
from probes.tokenizer import loss_per_byte
from workbench.models.model import WorkbenchModel


@dataclass
class Diff:
    """The tables of one checkpoint diff (see the module docstring for each measure)."""

    weights: pd.DataFrame
    representations: pd.DataFrame
    lens: pd.DataFrame
    outputs: pd.DataFrame
    tokens: pd.DataFrame
    attention: pd.DataFrame
    routing: pd.DataFrame
    internals: pd.DataFrame
    patching: pd.DataFrame

    def tables(self) -> dict[str, pd.DataFrame]:
        """Every table by name."""
        return dict(vars(self))

    def summaries(self) -> dict[str, pd.DataFrame]:
        """The small tables a reader looks at first, by heading (the CLI prints them)."""
        heads = self.attention.groupby("layer", as_index=False)[
            ["alpha_change", "entropy_change", "pattern_js"]
        ]
        shown = {
            "Weight change by layer": change_shares(self.weights, "layer"),
            "Weight change by kind": change_shares(self.weights, "kind"),
            "Representations": self.representations,
            "Attention by layer (mean over heads)": heads.mean(),
            "Heads whose patterns moved most": self.attention.nlargest(5, "pattern_js")[
                ["layer", "head", "pattern_js", "alpha_change", "entropy_change"]
            ],
            "MoE routing by layer": self.routing,
            "Sinks, massive activations and ID by layer": self.internals[
                ["layer", *(c for c in self.internals if c.endswith("_change"))]
            ],
            "Outputs by group": self.outputs,
            "Tokens whose logits moved most": self.tokens,
            "KL left after swapping in base blocks": self.patching,
        }
        return {heading: table for heading, table in shown.items() if len(table)}


def representation_diff(
    a_states: dict[int, list[torch.Tensor]], b_states: dict[int, list[torch.Tensor]]
) -> pd.DataFrame:
    """Per layer: ``layer, cka, mean_diff_norm, relative_mean_diff`` over every token of every prompt."""
    rows = []
    for layer, a_list in a_states.items():
        x, y = torch.cat(a_list), torch.cat(b_states[layer])
        mean_diff = float((y - x).mean(0).norm())
        scale = float(x.norm(dim=-1).mean())
        same = bool(torch.equal(x, y))  # CKA is 1 by definition; skip its rounding
        rows.append(
            {
                "layer": layer,
                "cka": 1.0 if same else linear_cka(x, y),
                "mean_diff_norm": mean_diff,
                "relative_mean_diff": mean_diff / scale if scale else 0.0,
            }
        )
    return pd.DataFrame(rows)


def difference_lens(
    b: WorkbenchModel,
    a_states: dict[int, list[torch.Tensor]],
    b_states: dict[int, list[torch.Tensor]],
    layer: int,
    first_tokens: int = 5,
    top: int = 10,
) -> pd.DataFrame:
    """The ADL: ``delta_j = mean over prompts of (h_b - h_a)`` at position ``j < first_tokens`` of
    ``layer``, decoded by B's logit lens. Columns: ``position, rank, token_id, token, logit`` (the ``top``
    promoted tokens per position; none where the checkpoints agree there)."""
    rows = []
    for position in range(first_tokens):
        pairs = [
            (x[position], y[position])
            for x, y in zip(a_states[layer], b_states[layer], strict=True)
            if len(x) > position  # prompts shorter than the position drop out
        ]
        if not pairs:
            break
        delta = torch.stack([y - x for x, y in pairs]).mean(0)
        if not bool(delta.any()):
            continue
        with torch.no_grad():
            logits = decode(b, delta.to(next(b.hf.parameters()).dtype)[None]).double()[0]
        found = logits.topk(min(top, logits.shape[-1]))
        for rank, (token, value) in enumerate(
            zip(found.indices.tolist(), found.values.tolist(), strict=True)
        ):
            text = b.tokenizer.decode([token]) if b.tokenizer is not None else str(token)
            rows.append(
                {"position": position, "rank": rank, "token_id": token, "token": text, "logit": value}
            )
    return pd.DataFrame(rows, columns=["position", "rank", "token_id", "token", "logit"])


def _next_token_changes(
    a: WorkbenchModel, b: WorkbenchModel, texts: dict[str, list[str]], ids: list[torch.Tensor]
) -> tuple[dict[str, float], torch.Tensor]:
    """One forward of each model per prompt: the mean ``KL(p_a || p_b)`` per group, and the mean change of
    the centred logits over every position [vocab]."""
    groups = [g for g, group_texts in texts.items() for _ in group_texts]
    kls: dict[str, list[torch.Tensor]] = {g: [] for g in texts}
    shift = None
    for group, prompt in zip(groups, ids, strict=True):
        log_a, log_b = next_token_log_probs(a, prompt), next_token_log_probs(b, prompt)
        kls[group].append(kl_divergence(log_a, log_b))
        # log-probabilities are logits up to a per-position constant: centring removes it either way
        moved = (log_b - log_b.mean(-1, keepdim=True)) - (log_a - log_a.mean(-1, keepdim=True))
        shift = moved.sum(0) if shift is None else shift + moved.sum(0)
    mean_kl = {g: float(torch.cat(values).mean()) for g, values in kls.items()}
    return mean_kl, shift / sum(len(p) for p in ids)


def _moved_tokens(tokenizer: object, shift: torch.Tensor, top: int) -> pd.DataFrame:
    """The ``top`` tokens whose centred logits rose and fell most: ``direction, rank, token_id, token,
    change``."""
    rows = []
    for direction, values in (("rose", shift), ("fell", -shift)):
        found = values.topk(min(top, len(values)))
        for rank, (token, value) in enumerate(
            zip(found.indices.tolist(), found.values.tolist(), strict=True)
        ):
            text = tokenizer.decode([token]) if tokenizer is not None else str(token)
            change = value if direction == "rose" else -value
            rows.append(
                {"direction": direction, "rank": rank, "token_id": token, "token": text, "change": change}
            )
    return pd.DataFrame(rows)


def output_diff(
    a: WorkbenchModel, b: WorkbenchModel, texts: dict[str, list[str]], ids: list[torch.Tensor], top: int = 10
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per group ``group, kl, bits_per_byte_a, bits_per_byte_b``; and the ``top`` tokens whose centred
    logits rose and fell most: ``direction, rank, token_id, token, change``."""
    mean_kl, shift = _next_token_changes(a, b, texts, ids)
    rows = [
        {
            "group": group,
            "kl": mean_kl[group],
            "bits_per_byte_a": loss_per_byte(a, group_texts)["bits_per_byte"],
            "bits_per_byte_b": loss_per_byte(b, group_texts)["bits_per_byte"],
        }
        for group, group_texts in texts.items()
    ]
    return pd.DataFrame(rows), _moved_tokens(a.tokenizer, shift, top)


def diff(
    a: WorkbenchModel,
    b: WorkbenchModel,
    texts: dict[str, list[str]],
    first_tokens: int = 5,
    lens_layer: int | None = None,
    ranks: bool = True,
) -> Diff:
    """Every diff probe for checkpoints ``a`` (base) and ``b`` (tuned) on ``texts`` (prompt texts by group,
    tokenised by A's tokenizer for both); an MoE table is empty for dense models.

    Args:
        a: The base checkpoint.
        b: The tuned checkpoint (same architecture).
        texts: Prompt texts by group (domain, language ...).
        first_tokens: Positions the activation-difference lens reads.
        lens_layer: The block whose output the lens reads (default: the middle block).
        ranks: Compute the effective rank of every weight change (an SVD per matrix).

    Raises:
        InputError: The checkpoints are not of one architecture.
    """
    check_same_architecture(a, b)
    ids = prompt_ids(a, texts)
    a_states, b_states = residual_states(a, ids), residual_states(b, ids)
    layer = a.cfg.n_layers // 2 if lens_layer is None else lens_layer
    outputs, tokens = output_diff(a, b, texts, ids)
    return Diff(
        weights=weight_diff(a, b, ranks=ranks),
        representations=representation_diff(a_states, b_states),
        lens=difference_lens(b, a_states, b_states, layer, first_tokens),
        outputs=outputs,
        tokens=tokens,
        attention=attention_diff(a, b, ids),
        routing=routing_diff(a, b, ids) if a.cfg.is_moe else pd.DataFrame(),
        internals=internals_diff(a, b, ids, states=(a_states, b_states)),
        patching=cross_patching(a, b, ids),
    )


# -- registered probes ----------------------------------------------------------------------------------

PAIR = Needs(pair=True, tokenizer=True)


def _representations(ctx: Context, params: object) -> pd.DataFrame:
    a, b, ids = pair_of(ctx)
    return representation_diff(residual_states(a, ids), residual_states(b, ids))


@dataclass(frozen=True)
class LensParams:
    """``first_tokens``: positions read; ``layer``: the block read (-1: the middle one); ``top``: tokens
    per position."""

    first_tokens: int = param(5, low=1, high=64)
    layer: int = param(-1, low=-1)
    top: int = param(10, low=1, high=100)


def _lens(ctx: Context, params: LensParams) -> pd.DataFrame:
    a, b, ids = pair_of(ctx)
    layer = a.cfg.n_layers // 2 if params.layer < 0 else min(params.layer, a.cfg.n_layers - 1)
    return difference_lens(
        b, residual_states(a, ids), residual_states(b, ids), layer, params.first_tokens, params.top
    )


@dataclass(frozen=True)
class TopParams:
    """``top``: tokens listed per direction."""

    top: int = param(10, low=1, high=1000)


def _outputs(ctx: Context, params: object) -> pd.DataFrame:
    a, b, ids = pair_of(ctx)
    return output_diff(a, b, ctx.texts, ids)[0]


def _tokens(ctx: Context, params: TopParams) -> pd.DataFrame:
    a, b, ids = pair_of(ctx)
    return _moved_tokens(a.tokenizer, _next_token_changes(a, b, ctx.texts, ids)[1], params.top)


DIFF_REPRESENTATIONS = Probe(
    name="diff_representations",
    doc="Per layer (-1: embeddings): linear CKA between base and tuned residual streams on the same tokens, "
    "and the norm of their mean difference.",
    formula="CKA(X, Y) = ||Y_c^T X_c||_F^2 / (||X_c^T X_c||_F ||Y_c^T Y_c||_F) over tokens (centred); "
    "mean_diff_norm = ||mean_t (h_b - h_a)||, relative to mean_t ||h_a||",
    cite="Kornblith et al. 2019 (ICML), linear CKA; change by depth: arXiv 2410.20008",
    run=_representations,
    needs=PAIR,
    figures=lambda t: [("CKA by layer", lines_by_group(t, "layer", "cka", "model", "CKA(base, tuned)"))],
    summary=lambda t: (
        t.pivot(index="model", columns="layer", values="cka")
        .rename(columns=lambda c: f"cka {c}")
        .reset_index()
    ),
)

DIFF_LENS = Probe(
    name="diff_lens",
    doc="Activation-difference lens: the tokens the mean activation difference at each of the first "
    "positions promotes through the tuned model's logit lens.",
    formula="delta_j = mean over prompts of (h_b - h_a) at position j of the middle block; tokens = "
    "top-k of W_U norm_f(delta_j)",
    cite="Minder et al., Narrow Finetuning Leaves Clearly Readable Traces in Activation Differences "
    "(arXiv 2510.13900), Sec. 3",
    run=_lens,
    params=LensParams,
    needs=PAIR,
    summary=lambda t: (
        t[t["rank"] < 5]
        .groupby("model", sort=False, as_index=False)
        .token.agg(lambda tokens: " ".join(map(repr, tokens)))
    ),
)

DIFF_OUTPUTS = Probe(
    name="diff_outputs",
    doc="Per group: KL(base || tuned) of the next-token distributions and each checkpoint's bits per byte.",
    formula="kl = mean over positions of sum_v p_a(v) (log p_a(v) - log p_b(v)); bits per byte = summed "
    "next-token loss / (UTF-8 bytes x ln 2)",
    cite="per-token KL as in the diffing-toolkit (science-of-finetuning); bits per byte: Gao et al. 2020 "
    "(The Pile, arXiv 2101.00027)",
    run=_outputs,
    needs=Needs(pair=True, tokenizer=True, causal_lm=True),
    prompts="heldout",
    figures=lambda t: [("KL by group", bars_by_group(t, "group", "kl", "model", "KL(base || tuned)"))],
    summary=lambda t: t.pivot(index="model", columns="group", values="kl").reset_index(),
)

DIFF_TOKENS = Probe(
    name="diff_tokens",
    doc="The tokens whose centred logits rose and fell most from base to tuned, over every position.",
    formula="change_v = mean_t [(z_b(v) - mean_u z_b(u)) - (z_a(v) - mean_u z_a(u))], z the log-softmax",
    cite="logit differences as in the diffing-toolkit (science-of-finetuning)",
    run=_tokens,
    params=TopParams,
    needs=Needs(pair=True, tokenizer=True, causal_lm=True),
    summary=lambda t: (
        t[t["rank"] < 8]
        .groupby(["model", "direction"], sort=False, as_index=False)
        .token.agg(lambda tokens: " ".join(map(repr, tokens)))
    ),
)
