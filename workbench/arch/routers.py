"""MoE parts seen on the dry forward of discovery: the router (a module returning ``(logits, weights,
ids)`` in some order, logits beside a dense choice, or logits whose choice the experts module receives
as arguments), its scoring and renormalisation matched numerically on what it chose, and the routed and
shared experts beside it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from workbench.arch.base import RouterConvention
from workbench.arch.trace import Call, Trace


def router_parts(out: Any) -> tuple[str, str, str] | None:
    """The order of (logits [tokens, E], weights [tokens, k], int ids [tokens, k]) in a router's output
    tuple, or None when the output is not one."""
    if not isinstance(out, tuple) or len(out) != 3 or not all(isinstance(t, torch.Tensor) for t in out):
        return None
    ints = [i for i, t in enumerate(out) if not t.is_floating_point()]
    if len(ints) != 1 or any(t.dim() != 2 for t in out):
        return None
    ids = out[ints[0]]
    floats = [i for i in range(3) if i != ints[0]]
    wide = [i for i in floats if out[i].shape[1] > ids.shape[1]]
    narrow = [i for i in floats if out[i].shape == ids.shape]
    if len(wide) != 1 or len(narrow) != 1:
        return None
    order = ["", "", ""]
    order[wide[0]], order[narrow[0]], order[ints[0]] = "logits", "weights", "indices"
    return tuple(order)  # type: ignore[return-value]


def _convention(order: tuple[str, str, str], out: tuple, router: nn.Module, config: Any) -> RouterConvention:
    """The router's scoring and renormalisation, matched numerically on its own output: the applied
    weights must equal the chosen experts' softmax, sigmoid or top-k softmax scores, renormalised or not,
    up to one constant factor (a routed scaling factor)."""
    logits, weights, ids = (out[order.index(k)].float() for k in ("logits", "weights", "indices"))
    ids = ids.long()
    bias = getattr(router, "e_score_correction_bias", None)
    groups = (getattr(config, "n_group", None) or 1) > 1
    found = None
    if logits.device.type != "meta":
        candidates = (
            ("softmax", "probs", logits.softmax(-1).gather(-1, ids)),
            ("sigmoid", "biased_scores" if bias is not None else "probs", logits.sigmoid().gather(-1, ids)),
            ("softmax_over_topk", "logits", logits.gather(-1, ids).softmax(-1)),
        )
        for scoring, topk_on, raw in candidates:
            for renormalise, scores in (("never", raw), ("always", raw / raw.sum(-1, keepdim=True))):
                ratio = weights / scores
                if torch.allclose(ratio, ratio.flatten()[:1].expand_as(ratio), rtol=1e-4, atol=1e-6):
                    found = (scoring, topk_on, renormalise, float(ratio.flatten()[0]))
                    break
            if found:
                break
    scoring, topk_on, renormalise, factor = found or ("unknown", "logits", "never", 1.0)
    scaled = abs(factor - 1) > 1e-4 and abs(getattr(config, "routed_scaling_factor", 0) - factor) < 1e-4
    conv = RouterConvention(
        scoring=scoring,  # type: ignore[arg-type]
        topk_on=topk_on,  # type: ignore[arg-type]
        renormalise=renormalise,  # type: ignore[arg-type]
        correction_bias=bias is not None,
        group_limited=groups,
        scaling_factor_attr="routed_scaling_factor" if scaled else None,
        router_bias=getattr(router, "bias", None) is not None,
        output_order=order,
        discovered=True,
    )
    # A few dry-run tokens cannot show whether the router sorts its top-k (DeepSeek calls
    # topk(sorted=False)): ids of a recognised scoring are always served ranked by it (a no-op when sorted).
    return RouterConvention(**{**vars(conv), "ranked": found is None})


def expert_inputs(call: Call) -> tuple[int, int] | None:
    """(ids, weights) argument positions of an experts module called as ``experts(hidden [tokens, d] or
    [batch, pos, d], ids int [tokens, k], weights float [tokens, k])`` (DBRX, ZAYA), or None."""
    args = call.inputs
    ints = [i for i, a in enumerate(args) if isinstance(a, torch.Tensor) and not a.is_floating_point()]
    if len(ints) != 1 or args[ints[0]].dim() != 2:
        return None
    ids = args[ints[0]]
    floats = [
        i
        for i, a in enumerate(args)
        if isinstance(a, torch.Tensor) and a.is_floating_point() and a.shape == ids.shape
    ]
    return (ints[0], floats[0]) if len(floats) == 1 else None


def _logits_of(call: Call, tokens: int, k: int) -> int | None:
    """Which element of a module's output is router logits [tokens, E >= k] (None: not a router)."""
    out = call.output if isinstance(call.output, tuple) else (call.output,)
    for i, t in enumerate(out):
        floating = isinstance(t, torch.Tensor) and t.is_floating_point() and t.dim() == 2
        if floating and t.shape[0] == tokens and t.shape[1] >= k and t.shape[1] > 1:
            return i
    return None


def dense_choice(out: Any) -> tuple[int, int, int] | None:
    """(logits index, dense-choice index, k) of a router returning ``(scores, logits)`` where ``scores``
    [tokens, E] is zero off the k chosen experts of every token (Llama 4), or None."""
    if not isinstance(out, tuple) or len(out) != 2 or not all(isinstance(t, torch.Tensor) for t in out):
        return None
    if any(t.dim() != 2 or not t.is_floating_point() or t.device.type == "meta" for t in out):
        return None
    if out[0].shape != out[1].shape:
        return None
    for dense in (0, 1):
        counts = (out[dense] != 0).sum(-1)
        k = int(counts[0])
        if 0 < k < out[dense].shape[1] and bool((counts == k).all()) and bool((out[1 - dense] != 0).all()):
            return 1 - dense, dense, k
    return None


def _experts_beside(trace: Trace, mlp: Call, router: Call, tokens: int) -> tuple[str | None, str | None]:
    """(routed experts, shared experts) among the MLP's children by name. Routed experts count only when
    their output holds one row per token (Llama 4's hold one per token and expert: no per-token sum)."""
    depth = mlp.name.count(".") + 1
    children = [c for c in trace.inside(mlp) if c.name.count(".") == depth and c is not router]
    shared = next((c.name for c in children if "shared" in c.name.split(".")[-1]), None)
    experts = next(
        (
            c.name
            for c in children
            if "expert" in c.name.split(".")[-1]
            and c.name != shared
            and isinstance(c.output, torch.Tensor)
            and c.output.numel() == tokens * c.output.shape[-1]
        ),
        None,
    )
    return experts, shared


@dataclass
class _Choice:
    """What one router chose, and where each part is read."""

    router: Call
    logits: torch.Tensor
    weights: torch.Tensor
    ids: torch.Tensor
    order: tuple[str, str, str] = ("logits", "weights", "indices")  # the router's output tuple, if one
    served_as_chosen: bool = False  # ids read from a dense choice or the experts' arguments: not re-ranked
    experts: Call | None = None  # the experts module, when it received the choice as arguments
    fields: dict[str, Any] = field(default_factory=dict)  # Layout fields saying where the parts are read


def _choice(trace: Trace, mlp: Call) -> _Choice | None:
    """The router inside ``mlp``: a module returning ``(logits, weights, ids)`` in some order; one
    returning logits beside a dense choice (Llama 4); or one returning logits whose choice the experts
    module receives as arguments (DBRX, ZAYA)."""
    inner = trace.inside(mlp)
    for call in inner:
        order = router_parts(call.output)
        if order is not None:
            logits, weights, ids = (call.output[order.index(k)] for k in ("logits", "weights", "indices"))
            return _Choice(call, logits, weights, ids, order=order)
        dense = dense_choice(call.output)
        if dense is not None:
            logits_at, dense_at, k = dense
            weights, ids = call.output[dense_at].topk(k, dim=-1)
            fields = {"router_index": logits_at, "dense_choice": dense_at}
            return _Choice(call, call.output[logits_at], weights, ids, served_as_chosen=True, fields=fields)
        args = expert_inputs(call)
        if args is not None:
            ids, weights = call.inputs[args[0]], call.inputs[args[1]]
            router = next(
                (c for c in inner if c.end < call.start and _logits_of(c, *ids.shape) is not None), None
            )
            if router is None:
                return None
            index = _logits_of(router, *ids.shape)
            tupled = isinstance(router.output, tuple)
            logits = router.output[index] if tupled else router.output
            fields = {"router_index": index if tupled else None, "expert_args": args}
            return _Choice(router, logits, weights, ids, served_as_chosen=True, experts=call, fields=fields)
    return None


def find_moe(trace: Trace, base: nn.Module, blocks: str) -> dict[str, Any]:
    """The MoE parts of the first block child that routes tokens (dense first layers are skipped): the
    router, its convention matched on what it chose, the routed and shared experts, and where its
    logits, weights and ids are read."""
    depth = blocks.count(".") + 2  # parts of "blocks.i.child"
    children = (c for c in trace.calls if c.name.startswith(f"{blocks}.") and c.name.count(".") == depth)
    found = next(((mlp, choice) for mlp in children if (choice := _choice(trace, mlp)) is not None), None)
    if found is None:
        return {}
    mlp, choice = found
    parts = {"logits": choice.logits, "weights": choice.weights, "indices": choice.ids}
    outputs = tuple(parts[k] for k in choice.order)
    conv = _convention(choice.order, outputs, base.get_submodule(choice.router.name), trace.config)
    if choice.served_as_chosen:
        conv = RouterConvention(**{**vars(conv), "ranked": True})
    experts, shared = _experts_beside(trace, mlp, choice.router, int(choice.logits.shape[0]))
    if choice.experts is not None:
        experts, shared = choice.experts.name, None
    block_name = mlp.name.rsplit(".", 1)[0]
    rel = lambda name: name[len(block_name) + 1 :] if name else None  # noqa: E731
    return {
        "router": rel(choice.router.name),
        "experts": rel(experts),
        "shared_experts": rel(shared),
        "convention": conv,
        "n_experts": int(choice.logits.shape[1]),
        "top_k": int(choice.ids.shape[1]),
        **choice.fields,
    }
