"""Adapters discovered from the model itself: one few-token dry forward shows where everything is.

During the dry forward every module's entry and exit is recorded (global module hooks), and a recorder
sits in ``ALL_ATTENTION_FUNCTIONS`` for the model's implementation key, which passes the calling module.
From that trace:

- attention modules are the modules that called the attention interface; the ``ModuleList`` whose items
  hold them are the blocks, and the attention path inside a block is the same in every block that has one
  (hybrid families keep linear-attention or SSM layers without it);
- the output projection is the first module with a 2-D weight the attention module calls after the
  interface returned (its input is ``hook_z``); the head counts and head sizes come from the query, key and
  value the interface received;
- inside a block, the norms are children whose class name holds ``Norm``; ``ln1`` is the last norm called
  before attention, the MLP the first other child with parameters called after it, and ``ln2`` the last
  norm called between them whose input is neither the block's input nor the attention output. A block is
  *parallel* (GPT-J, Falcon, Cohere, Pythia with ``use_parallel_residual``) when its MLP reads the block's
  input or ``ln1``'s output: it has no ``hook_resid_mid``;
- the token embedding is ``get_input_embeddings()``, a positional embedding an other embedding called
  before the first block, the final norm a norm called after the last block.

Nothing here runs family code beyond the model's own forward; a family whose layout this cannot see gets
a file in ``workbench/arch/`` with its overrides.
"""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from workbench.arch.base import ArchAdapter, RouterConvention, Site, has_submodule
from workbench.errors import UnsupportedFamilyError


@dataclass
class _Call:
    """One module call of the dry forward: where it starts and ends in the event order, what it got."""

    name: str
    start: int
    end: int = -1
    inputs: tuple = ()
    output: Any = None


@dataclass
class _Trace:
    """Module calls and attention-interface calls of one forward, in order."""

    names: dict[int, str]
    config: Any = None
    calls: list[_Call] = field(default_factory=list)
    attention: list[tuple[int, str, torch.Tensor, torch.Tensor, torch.Tensor]] = field(default_factory=list)
    sinks: set[str] = field(default_factory=set)  # attention-module attributes handed over as s_aux
    clock: int = 0
    open: dict[int, list[_Call]] = field(default_factory=dict)

    def tick(self) -> int:
        self.clock += 1
        return self.clock


@dataclass(frozen=True)
class Layout:
    """What the dry forward showed (paths relative to the base model, block paths relative to a block)."""

    blocks: str
    n_blocks: int
    attn: str
    attn_layers: tuple[int, ...]
    o_proj: str | None
    ln1: str | None
    ln2: str | None
    mid: str | None  # the module whose input is hook_resid_mid (None: parallel block, or not found)
    mlp: str | None
    mlp_tuple: bool
    mlp_down: str | None
    parallel: bool
    embed: str
    pos_embed: str | None
    final_norm: str | None
    n_heads: int
    n_kv_heads: int
    head_dim: int
    v_head_dim: int
    d_model: int
    norm_type: str
    rotary: bool
    sinks: str | None = None  # the attention module's learned sink logits, handed over as s_aux
    router: str | None = None
    experts: str | None = None
    shared_experts: str | None = None
    convention: RouterConvention | None = None
    n_experts: int = 0
    top_k: int = 0


def _is_norm(module: nn.Module) -> bool:
    return "norm" in type(module).__name__.lower()


def _has_matrix(module: nn.Module) -> bool:
    weight = getattr(module, "weight", None)
    return isinstance(weight, torch.Tensor) and weight.dim() == 2


def _has_parameters(module: nn.Module) -> bool:
    return next(module.parameters(), None) is not None


def _first_tensor(value: Any) -> torch.Tensor | None:
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, tuple | list) and value and isinstance(value[0], torch.Tensor):
        return value[0]
    return None


def _dims(value: Any) -> int | None:
    tensor = _first_tensor(value)
    return None if tensor is None else tensor.dim()


def _same(a: Any, b: Any) -> bool:
    """Whether two recorded values are the same tensor (identity or the same storage and shape)."""
    a, b = _first_tensor(a), _first_tensor(b)
    if a is None or b is None:
        return False
    return a is b or (a.shape == b.shape and a.device.type != "meta" and a.data_ptr() == b.data_ptr())


def trace_forward(model: nn.Module, ids: torch.Tensor) -> _Trace:
    """Run ``model`` once on ``ids`` and record every module call and attention-interface call."""
    base = getattr(model, "base_model", model)
    trace = _Trace({id(m): n for n, m in base.named_modules()}, model.config.get_text_config())
    key = model.config._attn_implementation

    def enter(module: nn.Module, args: tuple) -> None:
        name = trace.names.get(id(module))
        if name is not None:
            call = _Call(name, trace.tick(), inputs=args)
            trace.calls.append(call)
            trace.open.setdefault(id(module), []).append(call)

    def leave(module: nn.Module, args: tuple, output: Any) -> None:
        stack = trace.open.get(id(module))
        if stack:
            call = stack.pop()
            call.end, call.output = trace.tick(), output

    previous = ALL_ATTENTION_FUNCTIONS._local_mapping.get(key)
    original = previous or ALL_ATTENTION_FUNCTIONS._global_mapping.get(key)

    def recorder(
        module: nn.Module, query: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *a: Any, **kw: Any
    ):
        name = trace.names.get(id(module))
        if name is not None:
            trace.attention.append((trace.tick(), name, query, k, v))
            sinks = kw.get("s_aux")  # learned per-head sink logits joining the softmax (GPT-OSS style)
            if isinstance(sinks, torch.Tensor):
                trace.sinks.add(next((n for n, p in module.named_parameters() if p is sinks), ""))
        if original is None:  # eager: the module's own eager function
            import sys

            return sys.modules[type(module).__module__].eager_attention_forward(module, query, k, v, *a, **kw)
        return original(module, query, k, v, *a, **kw)

    with ExitStack() as stack, torch.no_grad():
        handles = [
            nn.modules.module.register_module_forward_pre_hook(enter),
            nn.modules.module.register_module_forward_hook(leave),
        ]
        stack.callback(lambda: [h.remove() for h in handles])
        ALL_ATTENTION_FUNCTIONS[key] = recorder
        stack.callback(
            lambda: (
                ALL_ATTENTION_FUNCTIONS.__setitem__(key, previous)
                if previous is not None
                else ALL_ATTENTION_FUNCTIONS._local_mapping.pop(key, None)
            )
        )
        model(input_ids=ids, use_cache=False)
    return trace


def _block_of(name: str, base: nn.Module) -> tuple[str, int, str] | None:
    """(ModuleList path, index, path inside the block) of the nearest ModuleList item holding ``name``."""
    parts = name.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        parent = ".".join(parts[: cut - 1])
        if parts[cut - 1].isdigit() and isinstance(
            base.get_submodule(parent) if parent else base, nn.ModuleList
        ):
            return parent, int(parts[cut - 1]), ".".join(parts[cut:])
    return None


def _child_calls(trace: _Trace, prefix: str, start: int, end: int) -> list[_Call]:
    """Calls of direct children of the module at ``prefix`` within the event span (start, end)."""
    depth = prefix.count(".") + 1 if prefix else 0
    return [
        c
        for c in trace.calls
        if c.name.startswith(f"{prefix}.") and c.name.count(".") == depth and start < c.start and c.end < end
    ]


def _router_parts(out: Any) -> tuple[str, str, str] | None:
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


def _moe_parts(trace: _Trace, base: nn.Module, mlp: _Call, block_name: str) -> dict[str, Any]:
    """Router, routed experts and shared experts inside an MoE block's MLP (paths relative to the block)."""
    inner = [
        c
        for c in trace.calls
        if c.name.startswith(f"{mlp.name}.") and mlp.start < c.start and c.end < mlp.end
    ]
    router = next((c for c in inner if _router_parts(c.output) is not None), None)
    if router is None:
        return {}
    order = _router_parts(router.output)
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


def _find_moe(trace: _Trace, base: nn.Module, blocks: str) -> dict[str, Any]:
    """The MoE parts of the first block that routes tokens (dense first layers are skipped)."""
    router = next(
        (c for c in trace.calls if c.name.startswith(f"{blocks}.") and _router_parts(c.output) is not None),
        None,
    )
    if router is None:
        return {}
    depth = blocks.count(".") + 2  # parts of "blocks.i"
    block_name = ".".join(router.name.split(".")[:depth])
    child = ".".join(router.name.split(".")[: depth + 1])
    mlp = next(c for c in trace.calls if c.name == child)
    return _moe_parts(trace, base, mlp, block_name)


def discover_layout(model: nn.Module, n_tokens: int = 4) -> Layout:
    """The layout of ``model`` from one dry forward of ``n_tokens`` tokens.

    Raises:
        UnsupportedFamilyError: No module called the attention interface, or the attention modules do not
            sit in one list of blocks at one path.
    """
    base = getattr(model, "base_model", model)
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    ids = torch.arange(1, n_tokens + 1, device=device)[None] % max(
        2, model.config.get_text_config().vocab_size
    )
    trace = trace_forward(model, ids)
    if not trace.attention:
        raise UnsupportedFamilyError("no module calls transformers' attention interface")
    found = {}
    for _, name, *_ in trace.attention:
        where = _block_of(name, base)
        if where is None:
            raise UnsupportedFamilyError(f"attention module {name} is not inside a list of blocks")
        found.setdefault(name, where)
    lists = {w[0] for w in found.values()}
    paths = {w[2] for w in found.values()}
    if len(lists) != 1 or len(paths) != 1:
        raise UnsupportedFamilyError(
            f"attention modules sit at several paths ({', '.join(sorted(found))[:200]})"
        )
    blocks, attn = lists.pop(), paths.pop()
    layers = tuple(sorted({w[1] for w in found.values()}))
    n_blocks = len(base.get_submodule(blocks))
    first_tick, first_name, query, key, value = trace.attention[0]
    by_name = {c.name: c for c in trace.calls}  # last call of each module (one forward: the only one)
    attn_call = by_name[first_name]
    o_proj = next(
        (
            c.name[len(first_name) + 1 :]
            for c in trace.calls
            if c.name.startswith(f"{first_name}.")
            and first_tick < c.start < attn_call.end
            and _has_matrix(base.get_submodule(c.name))
        ),
        None,
    )
    block_name = f"{blocks}.{layers[0]}"
    block_call = by_name[block_name]
    children = _child_calls(trace, block_name, block_call.start - 1, block_call.end + 1)
    attn_child = attn.split(".")[0]
    attn_index = next(i for i, c in enumerate(children) if c.name == f"{block_name}.{attn_child}")
    before, after = children[:attn_index], children[attn_index + 1 :]
    norm_before = [c for c in before if _is_norm(base.get_submodule(c.name))]
    ln1_call = norm_before[-1] if norm_before else None
    branch = [
        c
        for c in after
        if not _is_norm(base.get_submodule(c.name)) and _has_parameters(base.get_submodule(c.name))
    ]
    # one MLP child, or the MLP's layers as children of the block (OPT: fc1, fc2): the last one's output
    mlp_call = branch[-1] if branch else None
    mlp_in = branch[0] if branch else None
    ln2_call, mid, parallel = None, None, False
    if mlp_call is not None:
        norms = [c for c in after if c.start < mlp_in.start and _is_norm(base.get_submodule(c.name))]
        block_in = block_call.inputs[0] if block_call.inputs else None
        attn_out = children[attn_index].output
        parallel = _same(mlp_in.inputs, block_in) or (
            ln1_call is not None and _same(mlp_in.inputs, ln1_call.output)
        )
        parallel = parallel or any(_same(c.inputs, block_in) for c in norms)
        pre = [c for c in norms if not _same(c.inputs, attn_out)]  # not a post-attention norm (Gemma 2)
        if not parallel and pre:
            ln2_call = mid = pre[-1]
        elif not parallel and not any(_same(mlp_in.inputs, c.output) for c in norms):
            mid = mlp_in  # post-norm blocks (OLMo 2): the MLP reads the residual stream itself
    flat = mlp_call is not None and _dims(mlp_call.output) != _dims(block_call.inputs)
    if flat:  # the block flattens batch and positions around its MLP (OPT): no [batch, pos, d] value there
        mlp_call = mid = ln2_call = None
    if mlp_call is not None and sum(isinstance(a, torch.Tensor) for a in mlp_call.inputs) > 1:
        mlp_call = mid = ln2_call = (
            None  # it adds the residual itself (BERT's output module): no MLP-only value
        )
    mlp_down = None
    if mlp_call is not None and mlp_call is not mlp_in:
        mlp_down = mlp_call.name
    elif mlp_call is not None:
        inner = [
            c
            for c in trace.calls
            if c.name.startswith(f"{mlp_call.name}.") and mlp_call.start < c.start and c.end < mlp_call.end
        ]
        linear = [c for c in inner if _has_matrix(base.get_submodule(c.name))]
        if linear and len({c.name for c in linear}) == len(linear):  # not an MoE loop over experts
            mlp_down = linear[-1].name
    rel = lambda call: call.name[len(block_name) + 1 :] if call is not None else None  # noqa: E731
    embed_module = model.get_input_embeddings()
    embed = trace.names.get(id(embed_module), "")
    first_block = by_name[f"{blocks}.0"].start if f"{blocks}.0" in by_name else block_call.start
    last_block = max(
        c.end
        for c in trace.calls
        if c.name.startswith(f"{blocks}.") and c.name.count(".") == blocks.count(".") + 1
    )
    top = [c for c in trace.calls if not c.name.startswith(f"{blocks}.") and c.name != blocks and c.name]
    pos_embed = next(
        (
            c.name
            for c in top
            if c.end < first_block
            and c.name != embed
            and isinstance(base.get_submodule(c.name), nn.Embedding)
        ),
        None,
    )
    final_norm = next(
        (c.name for c in reversed(top) if c.start > last_block and _is_norm(base.get_submodule(c.name))), None
    )
    d_model = (
        int(embed_module.weight.shape[1])
        if _has_matrix(embed_module)
        else int(query.shape[1] * query.shape[3])
    )
    norm_type = type(base.get_submodule(ln1_call.name)).__name__ if ln1_call is not None else "none"
    rotary = any("rotary" in type(m).__name__.lower() for m in base.modules())
    moe = _find_moe(trace, base, blocks)
    if moe:
        mlp_down = None  # routed experts: no single down projection
    sinks = next(iter(sorted(trace.sinks - {""})), None)
    return Layout(
        **moe,
        sinks=sinks,
        blocks=blocks,
        n_blocks=n_blocks,
        attn=attn,
        attn_layers=layers,
        o_proj=f"{attn}.{o_proj}" if o_proj else None,
        ln1=rel(ln1_call),
        ln2=rel(ln2_call),
        mid=rel(mid),
        mlp=rel(mlp_call),
        mlp_tuple=mlp_call is not None and isinstance(mlp_call.output, tuple),
        mlp_down=mlp_down[len(block_name) + 1 :] if mlp_down else None,
        parallel=parallel,
        embed=embed,
        pos_embed=pos_embed,
        final_norm=final_norm,
        n_heads=int(query.shape[1]),
        n_kv_heads=int(key.shape[1]),
        head_dim=int(query.shape[3]),
        v_head_dim=int(value.shape[3]),
        d_model=d_model,
        norm_type=norm_type,
        rotary=rotary,
    )


class DiscoveredAdapter(ArchAdapter):
    """An adapter built from :func:`discover_layout`: the family's paths and head sizes as the model
    showed them. Config facts it cannot see (experts, sliding windows) keep the base defaults."""

    family: ClassVar[str] = "discovered"

    def __init__(self, model_type: str, layout: Layout) -> None:
        self.family = model_type  # type: ignore[misc]
        self.model_types = (model_type,)  # type: ignore[misc]
        self.layout = layout
        self.blocks = layout.blocks  # type: ignore[misc]
        self.attn = layout.attn  # type: ignore[misc]
        self.q_proj = self.k_proj = self.v_proj = None  # type: ignore[misc]
        self.o_proj = layout.o_proj  # type: ignore[misc]
        self.ln1, self.ln2 = layout.ln1, layout.ln2  # type: ignore[misc]
        self.mlp = layout.mlp  # type: ignore[misc]
        self.mlp_down = layout.mlp_down  # type: ignore[misc]
        self.mlp_output_index = 0 if layout.mlp_tuple else None  # type: ignore[misc]
        self.embed, self.pos_embed = layout.embed, layout.pos_embed  # type: ignore[misc]
        self.final_norm = layout.final_norm  # type: ignore[misc]
        self.norm_type = layout.norm_type  # type: ignore[misc]
        self.router, self.experts = layout.router, layout.experts  # type: ignore[misc]
        self.shared_experts = layout.shared_experts  # type: ignore[misc]
        self.router_convention = layout.convention  # type: ignore[misc]
        self.learned_sinks = f"{layout.attn}.{layout.sinks}" if layout.sinks else None  # type: ignore[misc]
        self.positional = "learned absolute" if layout.pos_embed else ("rope" if layout.rotary else "none")  # type: ignore[misc]

    def n_layers(self, config: Any) -> int:
        return self.layout.n_blocks

    def n_heads(self, config: Any) -> int:
        return self.layout.n_heads

    def n_kv_heads(self, config: Any) -> int:
        return self.layout.n_kv_heads

    def d_model(self, config: Any) -> int:
        return self.layout.d_model

    def head_dim(self, config: Any) -> int:
        return self.layout.head_dim

    def v_head_dim(self, config: Any) -> int:
        return self.layout.v_head_dim

    def sink_logits(self, attn_module: nn.Module) -> torch.Tensor | None:
        """The learned sink logits the attention module hands its attention function (None where this
        layer has none: MiMo-V2-Flash keeps them on sliding layers only)."""
        return getattr(attn_module, self.layout.sinks, None) if self.layout.sinks else None

    def moe_facts(self, config: Any) -> dict[str, Any]:
        """Experts and top-k as the router's output showed them."""
        if self.layout.router is None:
            return {}
        return {
            "experts": self.layout.n_experts,
            "top_k": self.layout.top_k,
            "shared_experts": int(self.layout.shared_experts is not None),
            "dense_layers": 0,
        }

    def block_sites(self, block: nn.Module) -> dict[str, Site]:
        """The base sites, less those this block lacks (no attention in a linear-attention layer, no
        ``hook_resid_mid`` in a parallel block, no z without a found output projection)."""
        sites = super().block_sites(block)
        if not has_submodule(block, self.attn):  # a linear-attention or SSM layer of a hybrid
            attention = ("attn.", "kv.", "hook_attn_out")
            sites = {k: v for k, v in sites.items() if not k.startswith(attention)}
        if self.o_proj is None or not has_submodule(block, self.o_proj):
            sites.pop("attn.hook_z", None)
        if not self.mlp or not has_submodule(block, self.mlp):
            sites.pop("hook_mlp_out", None)
        sites.pop("hook_resid_mid", None)
        if self.layout.mid is not None and has_submodule(block, self.layout.mid):
            sites["hook_resid_mid"] = Site(self.layout.mid, "input")
        return sites
