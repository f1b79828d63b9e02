"""Adapters discovered from the model itself: one few-token dry forward shows where everything is.

From the trace of that forward (:mod:`workbench.arch.trace`):

- attention modules are the modules that called the attention interface; the ``ModuleList`` whose items
  hold them are the blocks, and the attention path inside a block is the same in every block that has one
  (hybrid families keep linear-attention or SSM layers without it);
- the output projection is the first module with a 2-D weight called after the interface returned, in
  the attention module or in the attention sub-layer holding it (BERT: ``attention.output.dense``; its
  input is ``hook_z``); the head counts and head sizes come from the query, key and value it received;
- inside a block, the norms are parameter-holding leaves whose class name holds ``Norm``; ``ln1`` is the
  last norm called before attention, the MLP the first other child with parameters called after it, and
  ``ln2`` the last norm called between them whose input is neither the block's input nor the attention
  output. A block is *parallel* (GPT-J, Falcon, Cohere, Pythia with ``use_parallel_residual``) when its
  MLP reads the block's input or ``ln1``'s output: it has no ``hook_resid_mid``; it is *post-norm* (BERT,
  BART) when it returns a norm's output: ``hook_resid_mid`` is then the normalised stream after attention;
- the token embedding is ``get_input_embeddings()``, a positional embedding an other embedding called
  before the first block with ``pos`` in its name, the final norm a norm called after the last block;
- the router (:mod:`workbench.arch.routers`) is the module returning logits, weights and ids.

Nothing here runs family code beyond the model's own forward; a family whose layout this cannot see gets
a file in ``workbench/arch/`` with its overrides.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, ClassVar

import torch
from torch import nn

from workbench.arch.base import ArchAdapter, RouterConvention, Site, has_submodule
from workbench.arch.routers import find_moe
from workbench.arch.trace import (
    Call,
    Trace,
    dims,
    has_matrix,
    has_parameters,
    is_norm,
    same,
    trace_forward,
)
from workbench.errors import UnsupportedFamilyError


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
    mid: str | None  # the module whose input (or output) is hook_resid_mid (None: parallel, or not found)
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
    attn_classes: tuple[str, ...] = ()  # class names of the modules that called the interface
    gate: str | None = None  # an output gate's projection, read from the attention input after attention
    attn_out: str | None = None  # the output projection, where it sits outside the attention module
    flat: bool = False  # the MLP sees [batch * pos, d]
    mid_index: int | None = None  # the element of ``mid``'s output tuple (None: the first)
    mid_kind: str = "input"  # hook_resid_mid is the input of ``mid`` or (post-norm sub-layers) its output
    post_norm: bool = False  # the block returns a norm's output (BERT, BART)
    causal: bool = True
    router: str | None = None
    experts: str | None = None
    shared_experts: str | None = None
    convention: RouterConvention | None = None
    n_experts: int = 0
    top_k: int = 0
    router_index: int | None = None  # where the logits sit in the router's output (logits-only routers)
    dense_choice: int | None = None  # where a dense [tokens, E] choice sits in the router's output
    expert_args: tuple[int, int] | None = None  # (ids, weights) arguments of the experts module


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


def _child_calls(trace: Trace, prefix: str, start: int, end: int) -> list[Call]:
    """Calls of direct children of the module at ``prefix`` within the event span (start, end)."""
    depth = prefix.count(".") + 1 if prefix else 0
    return [
        c
        for c in trace.calls
        if c.name.startswith(f"{prefix}.") and c.name.count(".") == depth and start < c.start and c.end < end
    ]


def _block_parts(
    trace: Trace, base: nn.Module, by_name: dict[str, Call], block_name: str, attn: str, tick: int
) -> dict[str, Any]:
    """Output projection, norms, MLP and where ``hook_resid_mid`` lives in one block (paths relative to
    it), from the calls it made; ``tick`` is when its attention module called the interface.

    Two block shapes: the attention module is a child of the block (Llama, GPT-2, OPT ...), or it sits in
    an attention *sub-layer* that also holds the output projection and adds the residual (BERT's
    ``attention.self`` in ``attention``, with ``attention.output.dense``). There the MLP's last module
    adds the residual too (BERT's ``output``: dense, then LayerNorm of the sum); its last matrix is the
    MLP's output and the sub-layer's output is ``hook_resid_mid``.
    """
    block_call = by_name[block_name]
    module = lambda call: base.get_submodule(call.name)  # noqa: E731
    rel = lambda call: call.name[len(block_name) + 1 :] if call is not None else None  # noqa: E731
    inside = trace.inside

    children = _child_calls(trace, block_name, block_call.start - 1, block_call.end + 1)
    attn_child = next(c for c in children if c.name == f"{block_name}.{attn.split('.')[0]}")
    # the output projection: the first matrix called after the interface returned, in the sub-layer,
    # that does not read what the query projection read (that is an output gate: Laguna's g_proj)
    matrices = [c for c in inside(attn_child) if has_matrix(module(c))]
    first_in = next((c.inputs for c in matrices if c.start < tick), None)
    gate = next((c for c in matrices if c.start > tick and same(c.inputs, first_in)), None)
    o_proj = next((c for c in matrices if c.start > tick and c is not gate), None)
    attn_index = children.index(attn_child)
    before, after = children[:attn_index], children[attn_index + 1 :]
    norm_before = [c for c in before if is_norm(module(c))]
    ln1_call = norm_before[-1] if norm_before else None
    branch = [c for c in after if not is_norm(module(c)) and has_parameters(module(c))]
    # one MLP child, or the MLP's layers as children of the block (OPT: fc1, fc2): the last one's output
    mlp_call = branch[-1] if branch else None
    mlp_in = branch[0] if branch else None
    block_in = block_call.inputs[0] if block_call.inputs else None
    norms = [c for c in after if mlp_in is not None and c.start < mlp_in.start and is_norm(module(c))]
    # a post-norm block returns a norm's output (BERT, BART); its resid_mid is the normalised stream
    post_norm = any(same(block_call.output, c.output) for c in inside(block_call) if is_norm(module(c)))
    ln2_call, mid, mid_kind, mid_index, parallel = None, None, "input", None, False
    if mlp_call is not None:
        attn_out = attn_child.output
        parallel = same(mlp_in.inputs, block_in) or (
            ln1_call is not None and same(mlp_in.inputs, ln1_call.output)
        )
        parallel = parallel or any(same(c.inputs, block_in) for c in norms)
        pre = [c for c in norms if not same(c.inputs, attn_out)]  # not a post-attention norm (Gemma 2)
        if not parallel and pre:
            ln2_call = mid = pre[-1]
            mid_kind = "output" if post_norm else "input"
        elif not parallel and not any(same(mlp_in.inputs, c.output) for c in norms):
            mid = mlp_in  # post-norm blocks (OLMo 2): the MLP reads the residual stream itself
    if mlp_call is not None and isinstance(attn_child.output, tuple):
        # a sub-layer returning (residual, its norm of it) (DBRX's norm_attn_norm): resid_mid is the
        # element a norm inside it read after attention, when the MLP reads that norm's output
        late = [c for c in inside(attn_child) if c.start > tick and is_norm(module(c))]
        for i, value in enumerate(attn_child.output):
            norm = next((c for c in late if same(c.inputs, value) and same(mlp_in.inputs, c.output)), None)
            if norm is not None:
                ln2_call, mid, mid_kind, mid_index = norm, attn_child, "output", i
    # batch and positions flattened around the MLP (OPT, Llama 4's MoE): its points are unflattened
    flat = mlp_call is not None and dims(mlp_call.output) == 2 and dims(block_call.output) == 3
    mlp_out, mlp_down = mlp_call, None
    if mlp_call is not None and sum(isinstance(a, torch.Tensor) for a in mlp_call.inputs) > 1:
        # the MLP's last module adds the residual itself (BERT's output, MPT's ffn): its last matrix is
        # mlp_out, and the residual it adds is resid_mid: the attention sub-layer's output, or the input
        # of the pre-MLP norm (MPT) when that is the same tensor
        mlp_out = next((c for c in reversed(inside(mlp_call)) if has_matrix(module(c))), None)
        residual = mlp_call.inputs[1:]
        if same(residual, attn_child.output):
            ln2_call, mid, mid_kind = None, attn_child, "output"
        elif not (mid is not None and mid_kind == "input" and same(mid.inputs, residual)):
            ln2_call, mid = None, None
    if mlp_call is not None and mlp_call is not mlp_in:
        mlp_down = mlp_call.name
    elif mlp_call is not None:
        linear = [c for c in inside(mlp_call) if has_matrix(module(c))]
        if linear and len({c.name for c in linear}) == len(linear):  # not an MoE loop over experts
            mlp_down = linear[-1].name
    # the projection is the attention output, unless it sits outside the attention module (BERT) or the
    # module adds the residual it is handed itself (Bloom: attention(hidden, residual))
    attn_call = by_name[f"{block_name}.{attn}"]
    residuals = [block_in] + ([ln1_call.output] if ln1_call is not None else [])
    adds = sum(isinstance(a, torch.Tensor) for a in attn_call.inputs) > 1 and any(
        same(a, r) for a in attn_call.inputs[1:] for r in residuals
    )
    own = o_proj is not None and o_proj.name.startswith(f"{block_name}.{attn}.") and not adds
    return {
        "o_proj": rel(o_proj),
        "attn_out": None if own or o_proj is None else rel(o_proj),
        "gate": rel(gate),
        "ln1": rel(ln1_call),
        "ln2": rel(ln2_call),
        "mid": rel(mid),
        "mid_kind": mid_kind,
        "mid_index": mid_index,
        "post_norm": post_norm,
        "mlp": rel(mlp_out),
        "mlp_tuple": mlp_out is not None and isinstance(mlp_out.output, tuple),
        "mlp_down": mlp_down[len(block_name) + 1 :] if mlp_down else None,
        "parallel": parallel,
        "flat": flat,
    }


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
    block_name = f"{blocks}.{layers[0]}"
    parts = _block_parts(trace, base, by_name, block_name, attn, first_tick)
    causal = bool(getattr(base.get_submodule(first_name), "is_causal", True))  # BERT-likes: is_decoder
    block_call = by_name[block_name]
    embed_module = model.get_input_embeddings()
    embed = trace.names.get(id(embed_module), "")
    first_block = by_name[f"{blocks}.0"].start if f"{blocks}.0" in by_name else block_call.start
    last_block = max(
        c.end
        for c in trace.calls
        if c.name.startswith(f"{blocks}.") and c.name.count(".") == blocks.count(".") + 1
    )
    top = [c for c in trace.calls if not c.name.startswith(f"{blocks}.") and c.name != blocks and c.name]
    embeddings = [
        c.name
        for c in top
        if c.end < first_block and c.name != embed and isinstance(base.get_submodule(c.name), nn.Embedding)
    ]  # a positional embedding, not BERT's token types
    pos_embed = next((n for n in embeddings if "pos" in n.split(".")[-1]), None)
    final_norm = next(
        (c.name for c in reversed(top) if c.start > last_block and is_norm(base.get_submodule(c.name))), None
    )
    d_model = (
        int(embed_module.weight.shape[1])
        if has_matrix(embed_module)
        else int(query.shape[1] * query.shape[3])
    )
    ln1 = parts["ln1"]
    norm_type = type(base.get_submodule(f"{block_name}.{ln1}")).__name__ if ln1 else "none"
    rotary = any("rotary" in type(m).__name__.lower() for m in base.modules())
    moe = find_moe(trace, base, blocks)
    if moe:
        parts["mlp_down"] = None  # routed experts: no single down projection
    sinks = next(iter(sorted(trace.sinks - {""})), None)
    return Layout(
        **moe,
        **parts,
        sinks=sinks,
        causal=causal,
        attn_classes=tuple(sorted({type(base.get_submodule(n)).__name__ for n in found})),
        blocks=blocks,
        n_blocks=n_blocks,
        attn=attn,
        attn_layers=layers,
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


FLAT_POINTS = {
    "hook_resid_mid",
    "hook_mlp_out",
    "mlp.hook_post",
    "moe.hook_routed_out",
    "moe.hook_shared_out",
}


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
        self.norm_placement = "post" if layout.post_norm else "pre"  # type: ignore[misc]
        self.causal = layout.causal  # type: ignore[misc]
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

    def attention_module(self, block: nn.Module) -> nn.Module | None:
        """The block's attention module: at the attention path and of a class seen calling the interface
        (RecurrentGemma keeps its recurrent block at the same path as its attention)."""
        module = super().attention_module(block)
        return module if module is not None and type(module).__name__ in self.layout.attn_classes else None

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
        if self.attention_module(block) is None:  # a linear-attention or SSM layer of a hybrid
            attention = ("attn.", "kv.", "hook_attn_out")
            sites = {k: v for k, v in sites.items() if not k.startswith(attention)}
        if self.o_proj is None or not has_submodule(block, self.o_proj):
            sites.pop("attn.hook_z", None)
        if not self.mlp or not has_submodule(block, self.mlp):
            sites.pop("hook_mlp_out", None)
        if self.layout.gate is not None and "attn.hook_z" in sites and has_submodule(block, self.layout.gate):
            sites["attn.hook_gate"] = Site(self.layout.gate)
        if self.layout.expert_args is not None and "moe.hook_router_logits" in sites:
            ids, weights = self.layout.expert_args
            assert self.router is not None and self.experts is not None
            sites["moe.hook_router_logits"] = Site(
                self.router, index=self.layout.router_index, read_only=True
            )
            sites["moe.hook_expert_weights"] = Site(self.experts, "input", arg=weights)
            sites["moe.hook_expert_indices"] = Site(self.experts, "input", arg=ids)
        if self.layout.dense_choice is not None and "moe.hook_router_logits" in sites:
            assert self.router is not None
            dense, k = self.layout.dense_choice, self.layout.top_k
            sites["moe.hook_router_logits"] = Site(
                self.router, index=self.layout.router_index, read_only=True
            )
            sites["moe.hook_expert_weights"] = Site(
                self.router, index=dense, dense_topk=("values", k), read_only=True
            )
            sites["moe.hook_expert_indices"] = Site(
                self.router, index=dense, dense_topk=("indices", k), read_only=True
            )
        if self.layout.attn_out is not None and "hook_attn_out" in sites:  # a sub-layer's projection (BERT)
            sites["hook_attn_out"] = Site(self.layout.attn_out)
        sites.pop("hook_resid_mid", None)
        mid = self.layout.mid
        if mid is not None and has_submodule(block, mid):
            kind = "output" if self.layout.mid_kind == "output" else "input"
            sites["hook_resid_mid"] = Site(mid, kind, index=self.layout.mid_index)  # default: element 0
        if self.layout.flat:
            for name in FLAT_POINTS & sites.keys():
                sites[name] = replace(sites[name], flat=True)
        return sites
