"""MoE parts seen on the dry forward of discovery: the router (the module returning ``(logits, weights,
ids)`` in some order), its scoring and renormalisation matched numerically on its own output, and the
routed and shared experts beside it."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from workbench.arch.base import RouterConvention
from workbench.arch.trace import Call, Trace, dims


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


def _moe_parts(trace: Trace, base: nn.Module, mlp: Call, block_name: str) -> dict[str, Any]:
    """Router, routed experts and shared experts inside an MoE block's MLP (paths relative to the block)."""
    inner = [
        c
        for c in trace.calls
        if c.name.startswith(f"{mlp.name}.") and mlp.start < c.start and c.end < mlp.end
    ]
    router = next((c for c in inner if router_parts(c.output) is not None), None)
    if router is None:
        return {}
    order = router_parts(router.output)
    assert order is not None
    depth = mlp.name.count(".") + 1
    children = [c for c in inner if c.name.count(".") == depth and c is not router]
    experts = next(
        (c.name for c in children if "expert" in c.name.split(".")[-1] and "shared" not in c.name), None
    )
    shared = next((c.name for c in children if "shared" in c.name.split(".")[-1]), None)
    rel = lambda name: name[len(block_name) + 1 :] if name else None  # noqa: E731
    logits = router.output[order.index("logits")]
    ids = router.output[order.index("indices")]
    return {
        "router": rel(router.name),
        "experts": rel(experts),
        "shared_experts": rel(shared),
        "convention": _convention(order, router.output, base.get_submodule(router.name), trace.config),
        "n_experts": int(logits.shape[1]),
        "top_k": int(ids.shape[1]),
    }


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


def _routed_by_inputs(trace: Trace, base: nn.Module, mlp: Call, block_name: str) -> dict[str, Any]:
    """A router that returns logits only, its choice handed to the experts module as arguments: the
    router is the first module in the MLP returning logits before the experts are called."""
    inner = [c for c in trace.calls if c.name.startswith(f"{mlp.name}.") and mlp.start < c.start < mlp.end]
    experts = next((c for c in inner if expert_inputs(c) is not None), None)
    if experts is None:
        return {}
    ids_arg, weights_arg = expert_inputs(experts)  # type: ignore[misc]
    ids, weights = experts.inputs[ids_arg], experts.inputs[weights_arg]
    router = next((c for c in inner if c.end < experts.start and _logits_of(c, *ids.shape) is not None), None)
    if router is None:
        return {}
    index = _logits_of(router, *ids.shape)
    logits = (router.output if isinstance(router.output, tuple) else (router.output,))[index]
    order = ("logits", "weights", "indices")
    conv = _convention(order, (logits, weights, ids), base.get_submodule(router.name), trace.config)
    rel = lambda name: name[len(block_name) + 1 :]  # noqa: E731
    return {
        "router": rel(router.name),
        "experts": rel(experts.name),
        "shared_experts": None,
        "convention": RouterConvention(**{**vars(conv), "ranked": True}),  # served as the experts got them
        "n_experts": int(logits.shape[1]),
        "top_k": int(ids.shape[1]),
        "router_index": index if isinstance(router.output, tuple) else None,
        "expert_args": (ids_arg, weights_arg),
    }


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


def _routed_densely(trace: Trace, base: nn.Module, router: Call, block_name: str) -> dict[str, Any]:
    """A router returning its choice as a dense tensor beside its logits: ids and weights are that
    tensor's top-k (its nonzero entries, descending)."""
    logits_at, dense_at, k = dense_choice(router.output)  # type: ignore[misc]
    dense, logits = router.output[dense_at], router.output[logits_at]
    weights, ids = dense.topk(k, dim=-1)
    order = ("logits", "weights", "indices")
    conv = _convention(order, (logits, weights, ids), base.get_submodule(router.name), trace.config)
    mlp = ".".join(router.name.split(".")[: block_name.count(".") + 2])
    inner = [
        c for c in trace.calls if c.name.startswith(f"{mlp}.") and c.name.count(".") == mlp.count(".") + 1
    ]
    shared = next((c.name for c in inner if "shared" in c.name.split(".")[-1]), None)
    # routed experts whose output is one row per token (Llama 4's hold one row per token and expert:
    # no [batch, pos, d] value, so no moe.hook_routed_out)
    experts = next(
        (
            c.name
            for c in inner
            if "expert" in c.name.split(".")[-1]
            and c.name != shared
            and dims(c.output) == 2
            and c.output.shape[0] == logits.shape[0]
        ),
        None,
    )
    rel = lambda name: name[len(block_name) + 1 :] if name else None  # noqa: E731
    return {
        "router": rel(router.name),
        "experts": rel(experts),
        "shared_experts": rel(shared),
        "convention": RouterConvention(**{**vars(conv), "ranked": True}),  # topk of the dense choice
        "n_experts": int(logits.shape[1]),
        "top_k": k,
        "router_index": logits_at,
        "dense_choice": dense_at,
    }


def find_moe(trace: Trace, base: nn.Module, blocks: str) -> dict[str, Any]:
    """The MoE parts of the first block that routes tokens (dense first layers are skipped): a router
    returning ``(logits, weights, ids)``, or one returning logits whose choice the experts module takes
    as arguments."""
    inside = [c for c in trace.calls if c.name.startswith(f"{blocks}.")]
    router = next(
        (c for c in inside if router_parts(c.output) or expert_inputs(c) or dense_choice(c.output)), None
    )
    if router is None:
        return {}
    if dense_choice(router.output) is not None:
        return _routed_densely(trace, base, router, ".".join(router.name.split(".")[: blocks.count(".") + 2]))
    depth = blocks.count(".") + 2  # parts of "blocks.i"
    block_name = ".".join(router.name.split(".")[:depth])
    child = ".".join(router.name.split(".")[: depth + 1])
    mlp = next(c for c in trace.calls if c.name == child)
    if router_parts(router.output) is not None:
        return _moe_parts(trace, base, mlp, block_name)
    return _routed_by_inputs(trace, base, mlp, block_name)
