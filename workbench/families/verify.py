"""The exactness checks a family passes on its tiny config, and its status in the coverage table.

Each check compares a hook point with a reference the workbench does not compute (max abs difference in
float32, divided by the reference's largest magnitude where that exceeds 1; tolerance :data:`TOLERANCE`):

- ``resid``: ``hook_resid_pre`` / ``hook_resid_post`` / ``ln_final.hook_normalized`` equal HF's
  ``output_hidden_states``;
- ``pattern``: ``attn.hook_pattern`` equals HF's eager ``output_attentions``;
- ``scores``: ``softmax(attn.hook_attn_scores)`` is the pattern (with learned sinks: the softmax over the
  scores and one more column of the head's sink logit, that column dropped);
- ``z``: ``attn.hook_z`` through the output projection (the module itself) is ``hook_attn_out``;
- ``resid_mid``: with the MLP's output zeroed by a plain torch hook, the block returns ``hook_resid_mid``
  (post-norm blocks, BERT and BART: the block's last norm of it);
- ``mlp_out``: ``resid_post - resid_mid`` (sequential blocks without a post-MLP norm),
  ``resid_post - resid_pre - attn_out`` (parallel blocks) or, post-norm, the block's last norm of
  ``resid_mid + mlp_out`` is ``hook_mlp_out``;
- ``router``: router logits and the chosen expert ids equal the router module's own output;
- ``ranking``: column 0 of ``moe.hook_expert_indices`` is the top choice: the served ids are in descending
  order of a selection score computed from the router module itself (its logits, or sigmoid plus its
  ``e_score_correction_bias``);
- ``stats``: the streamed sink mass, key mass and entropy (the default route) equal those of the eager
  pattern; ``padded stats``: so do those of the prompt and a prefix batched and padded left or right,
  against the same batch's eager patterns (causal models).

A family is *full* when every block offers the standard points (``hook_resid_mid`` only where the block is
sequential; router points for MoE families) and every check passes; *partial* lists what is missing or
failed; *none* gives the reason it could not be served.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import torch

from workbench.arch.trace import is_norm
from workbench.arch.twin import EXPERT_FIELDS

STANDARD = (
    "hook_resid_pre",
    "hook_resid_post",
    "attn.hook_q",
    "attn.hook_k",
    "attn.hook_v",
    "attn.hook_attn_scores",
    "attn.hook_pattern",
    "attn.hook_z",
    "hook_attn_out",
    "hook_mlp_out",
)
ROUTER = ("moe.hook_router_logits", "moe.hook_expert_weights", "moe.hook_expert_indices")
TOLERANCE = 1e-5
MAX_PARAMETERS = 20_000_000
PROMPT = (1, 5, 7, 9, 11, 13, 17)


@dataclass
class FamilyResult:
    """One row of the coverage table."""

    model_type: str
    status: str  # "full", "partial" or "none"
    points: int = 0  # hook points of block 0
    missing: list[str] = field(default_factory=list)
    errors: dict[str, float] = field(default_factory=dict)  # check -> max abs difference
    failed: list[str] = field(default_factory=list)
    reason: str = ""

    def row(self) -> dict[str, Any]:
        """Tidy row for the table."""
        detail = self.reason or "; ".join(
            [f"missing {', '.join(self.missing)}"] * bool(self.missing)
            + [f"{', '.join(self.failed)} differ{'s' * (len(self.failed) == 1)}"] * bool(self.failed)
        )
        return {"model_type": self.model_type, "status": self.status, "points": self.points, "detail": detail}


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    """Largest difference, relative to the reference's largest magnitude when that exceeds 1."""
    if a.shape != b.shape:
        return float("inf")
    if not a.numel():
        return 0.0
    a, b = a.double(), b.double()
    return float((a - b).abs().max() / max(1.0, float(b.abs().max())))


class _Checks:
    """Largest difference seen per check."""

    def __init__(self) -> None:
        self.errors: dict[str, float] = {}

    def add(self, name: str, a: torch.Tensor, b: torch.Tensor) -> None:
        self.errors[name] = max(self.errors.get(name, 0.0), _max_diff(a, b))


def _hf_reference(hf: Any, ids: torch.Tensor) -> Any:
    from workbench.hooks.implementation import attention_implementation

    with torch.no_grad(), attention_implementation(hf, "eager"):
        return hf(input_ids=ids, output_hidden_states=True, output_attentions=True, use_cache=False)


def _block_output_with_zero_mlp(model: Any, layer: int, ids: torch.Tensor) -> torch.Tensor:
    """Block ``layer``'s output when the module ``hook_mlp_out`` reads returns zeros (plain torch hooks, no
    workbench code)."""
    block = model.adapter.block_modules(model.base)[layer]
    mlp = model.points[f"blocks.{layer}.hook_mlp_out"].module
    seen: dict[str, torch.Tensor] = {}

    def zero(module: Any, args: Any, output: Any) -> Any:
        if isinstance(output, tuple | list):
            return type(output)((torch.zeros_like(output[0]), *output[1:]))
        return torch.zeros_like(output)

    def keep(module: Any, args: Any, output: Any) -> None:
        seen["out"] = output[0] if isinstance(output, tuple | list) else output

    from workbench.hooks.implementation import attention_implementation

    handles = [mlp.register_forward_hook(zero), block.register_forward_hook(keep)]
    try:  # eager, as the point values were read (a pattern point switches the model to eager)
        with torch.no_grad(), attention_implementation(model.hf, "eager"):
            model.hf(input_ids=ids, use_cache=False)
    finally:
        for handle in handles:
            handle.remove()
    return seen["out"]


def _output_norm(model: Any, layer: int) -> torch.nn.Module:
    """The norm a post-norm block applies last (BERT's ``output.LayerNorm``, BART's ``final_layer_norm``)."""
    block = model.adapter.block_modules(model.base)[layer]
    return [m for m in block.modules() if is_norm(m)][-1]


def router_outputs(model: Any, ids: torch.Tensor) -> dict[int, tuple]:
    """Each MoE block's router module output by layer, under eager attention (plain torch hooks: the
    reference the router points are checked against). A router returning logits only (DBRX) gives
    ``(logits, weights, ids)``, the choice read from the arguments its experts module received; one
    returning a dense choice (Llama 4) gives its nonzero entries."""
    returned: dict[int, tuple] = {}
    handed: dict[int, tuple] = {}
    args = getattr(getattr(model.adapter, "layout", None), "expert_args", None)
    handles = []
    for layer, block in enumerate(model.adapter.block_modules(model.base)):
        if model.adapter.is_moe_block(block):
            router = block.get_submodule(model.adapter.router)
            handles.append(
                router.register_forward_hook(lambda m, a, out, L=layer: returned.__setitem__(L, out))
            )
            if args is not None:
                experts = block.get_submodule(model.adapter.experts)
                handles.append(
                    experts.register_forward_pre_hook(lambda m, a, L=layer: handed.__setitem__(L, a))
                )
    try:
        with torch.no_grad():
            model.hf(input_ids=ids, use_cache=False)
    finally:
        for handle in handles:
            handle.remove()
    dense = getattr(getattr(model.adapter, "layout", None), "dense_choice", None)
    if dense is not None:  # Llama 4: the chosen experts are the nonzero entries of the dense scores
        out = {}
        for layer, value in returned.items():
            scores = value[dense]
            ids = (scores != 0).nonzero()[:, 1].view(scores.shape[0], -1)
            out[layer] = (value[model.adapter.layout.router_index], scores.gather(-1, ids), ids)
        return out
    if args is None:
        return returned
    index = model.adapter.layout.router_index
    return {
        layer: (out if index is None else out[index], handed[layer][args[1]], handed[layer][args[0]])
        for layer, out in returned.items()
    }


def _softmax(scores: torch.Tensor, sinks: torch.Tensor | None) -> torch.Tensor:
    """softmax over the keys, with each head's sink logit as one more column (then dropped) if any."""
    if sinks is None:
        return scores.softmax(-1)
    column = sinks.detach().to(scores.dtype).reshape(1, -1, 1, 1).expand(*scores.shape[:-1], 1)
    return torch.cat([scores, column], -1).softmax(-1)[..., :-1]


def _rank_violation(router: Any, logits: torch.Tensor, served: torch.Tensor) -> float:
    """How far the served ids are from descending selection order (0: ranked), with the selection score
    computed here from the router module itself: sigmoid(logits) + its ``e_score_correction_bias`` where
    it has one (DeepSeek-V3 style), else the logits (softmax and sigmoid keep their order)."""
    bias = getattr(router, "e_score_correction_bias", None)
    scores = logits.double().sigmoid() + bias.double() if bias is not None else logits.double()
    chosen = scores.gather(-1, served.long())
    return float((chosen[:, 1:] - chosen[:, :-1]).clamp_min(0).max()) if chosen.shape[1] > 1 else 0.0


def _expected_stats(pattern: torch.Tensor) -> dict[str, torch.Tensor]:
    """Sink mass (one sink token), key mass and entropy of one prompt's pattern [head, q, k], float64."""
    p = pattern.double()
    return {
        "stat_sink_mass": p[..., 0],
        "stat_key_mass": p.sum(1),
        "stat_entropy": -(p * p.clamp_min(1e-30).log()).sum(-1),
    }


def _stats_checks(model: Any, ids: torch.Tensor, values: dict[str, torch.Tensor], checks: _Checks) -> None:
    """``stats``: the streamed statistics of the prompt (on the model's sdpa) against its eager patterns;
    ``padded stats`` (causal models): the prompt and a prefix of it in one batch, padded on either side,
    against the eager patterns of that same batch, both under eager attention (whatever a family makes of
    padding, RecurrentGemma's recurrence carries the pad positions' outputs, both see it alike)."""
    from dataclasses import replace

    from workbench.capture import CaptureSpec, capture
    from workbench.hooks.implementation import attention_implementation

    spec = CaptureSpec(stats=["sink_mass", "key_mass", "entropy"])
    stats = capture(model, ids, spec, progress=False)
    for name in stats.names:
        pattern = values.get(f"blocks.{name.split('.')[1]}.attn.hook_pattern")
        if pattern is not None:
            checks.add("stats", stats[name][0], _expected_stats(pattern[0])[name.split(".")[-1]])
    batch = [ids[0], ids[0, : ids.shape[1] - 3]]
    patterns = CaptureSpec(points=[r"blocks\.\d+\.attn\.hook_pattern"])
    for side in ("left", "right") if model.cfg.causal else ():
        with attention_implementation(model.hf, "eager"):
            found = capture(model, batch, replace(spec, padding_side=side), progress=False)
        eager = capture(model, batch, replace(patterns, padding_side=side), progress=False)
        for name in found.names:
            pattern = f"blocks.{name.split('.')[1]}.attn.hook_pattern"
            if pattern in eager.names:
                for index in range(len(batch)):
                    expected = _expected_stats(eager[pattern][index])[name.split(".")[-1]]
                    checks.add("padded stats", found[name][index], expected)


def check_model(model: Any, ids: torch.Tensor, reference: Any = None) -> tuple[dict[str, float], list[str]]:
    """Run every check on a loaded model; return the largest difference per check and the standard points
    no block offers.

    Args:
        model: A loaded :class:`~workbench.models.model.WorkbenchModel` (HF backend).
        ids: Token ids [1, pos].
        reference: The HF model as transformers built it, before the workbench loaded it (Bloom's and
            Falcon's attention is routed through the interface on load); default ``model.hf``.
    """
    adapter = model.adapter
    values = model.read(ids, ".*")
    ref = _hf_reference(model.hf if reference is None else reference, ids)
    checks = _Checks()
    n_layers = model.cfg.n_layers
    blocks = adapter.block_modules(model.base)
    with_pattern = [i for i in range(n_layers) if f"blocks.{i}.attn.hook_pattern" in values]
    attentions = list(ref.attentions or ())
    if len(attentions) == len(with_pattern) < n_layers:  # hybrids return the attention layers' patterns only
        attentions = [
            attentions[with_pattern.index(i)] if i in with_pattern else None for i in range(n_layers)
        ]
    for layer in range(n_layers):
        at = f"blocks.{layer}."
        checks.add("resid", values[at + "hook_resid_pre"], ref.hidden_states[layer])
        if layer < n_layers - 1:
            checks.add("resid", values[at + "hook_resid_post"], ref.hidden_states[layer + 1])
        pattern = values.get(at + "attn.hook_pattern")
        if pattern is not None and layer < len(attentions) and attentions[layer] is not None:
            checks.add("pattern", pattern, attentions[layer])
        if pattern is not None and at + "attn.hook_attn_scores" in values:
            attn = adapter.attention_module(blocks[layer])
            checks.add(
                "scores", _softmax(values[at + "attn.hook_attn_scores"], adapter.sink_logits(attn)), pattern
            )
        if at + "attn.hook_z" in values:
            o_proj = blocks[layer].get_submodule(adapter.o_proj)
            with torch.no_grad():
                out = o_proj(values[at + "attn.hook_z"].flatten(-2))
            checks.add("z", out[0] if isinstance(out, tuple) else out, values[at + "hook_attn_out"])
        mid = values.get(at + "hook_resid_mid")
        if mid is not None and at + "hook_mlp_out" in values:
            zeroed = _block_output_with_zero_mlp(model, layer, ids)
            if adapter.norm_placement == "post":  # the block normalises resid_mid + mlp_out
                with torch.no_grad():
                    mid = _output_norm(model, layer)(mid)
            checks.add("resid_mid", zeroed, mid)
        _mlp_out_check(model, values, at, checks)
    last = (
        "ln_final.hook_normalized"
        if "ln_final.hook_normalized" in values
        else f"blocks.{n_layers - 1}.hook_resid_post"
    )
    checks.add("resid", values[last], ref.hidden_states[-1])
    if adapter.router_convention is not None:
        conv = adapter.router_convention
        for layer, returned in router_outputs(model, ids).items():
            at = f"blocks.{layer}.moe."
            checks.add("router", values[at + "hook_router_logits"], returned[conv.index_of("logits")])
            ids_seen = values[at + "hook_expert_indices"].sort(-1).values
            checks.add("router", ids_seen, returned[conv.index_of("indices")].sort(-1).values)
            router = adapter.block_modules(model.base)[layer].get_submodule(adapter.router)
            checks.errors["ranking"] = max(
                checks.errors.get("ranking", 0.0),
                _rank_violation(
                    router, returned[conv.index_of("logits")], values[at + "hook_expert_indices"]
                ),
            )
    if any(n.endswith("attn.hook_pattern") for n in values):
        _stats_checks(model, ids, values, checks)
    expected = list(STANDARD)
    if getattr(getattr(adapter, "layout", None), "parallel", False) is False:
        expected.append("hook_resid_mid")
    if _looks_moe(model.config):
        expected += ROUTER
    present = {n.split(".", 2)[2] for n in values if n.startswith("blocks.")}  # any block: dense first layers
    return checks.errors, [p for p in expected if p not in present]


def _mlp_out_check(model: Any, values: dict[str, torch.Tensor], at: str, checks: _Checks) -> None:
    mlp_out, post = values.get(at + "hook_mlp_out"), values.get(at + "hook_resid_post")
    if mlp_out is None or post is None or mlp_out.shape != post.shape:
        return
    layout = getattr(model.adapter, "layout", None)
    if layout is not None and layout.parallel:
        checks.add("mlp_out", post - values[at + "hook_resid_pre"] - values[at + "hook_attn_out"], mlp_out)
    elif model.adapter.norm_placement == "post" and at + "hook_resid_mid" in values:
        with torch.no_grad():  # post-norm blocks normalise the sum: resid_post = norm(resid_mid + mlp_out)
            summed = _output_norm(model, int(at.split(".")[1]))(values[at + "hook_resid_mid"] + mlp_out)
        checks.add("mlp_out", summed, post)
    elif at + "hook_resid_mid" in values and not _norm_after_mlp(model, int(at.split(".")[1])):
        checks.add("mlp_out", post - values[at + "hook_resid_mid"], mlp_out)


def _norm_after_mlp(model: Any, layer: int) -> bool:
    """Whether the block calls a norm child after its MLP (Gemma 2, OLMo 2 normalise the MLP's output
    before adding it): the residual difference is then not the MLP output itself. Call order, from
    plain hooks on one forward (registration order misleads: OPT registers its pre-MLP norm last)."""
    block = model.adapter.block_modules(model.base)[layer]
    mlp = model.adapter.mlp.split(".")[0]
    order: list[str] = []
    handles = [
        child.register_forward_hook(lambda m, a, o, n=name: order.append(n))
        for name, child in block.named_children()
    ]
    try:
        with torch.no_grad():
            model.hf(input_ids=torch.tensor([PROMPT[:3]], device=model.device), use_cache=False)
    finally:
        for handle in handles:
            handle.remove()
    after = order[order.index(mlp) + 1 :] if mlp in order else []
    return any(is_norm(block.get_submodule(n)) for n in after)


def _looks_moe(config: Any) -> bool:
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    if getattr(text, "is_moe", None) is False:  # Doge: an expert count, but a dense MLP unless is_moe
        return False
    return any((getattr(text, f, None) or 0) > 1 for f in EXPERT_FIELDS)


HYBRID_LAYERS = 8  # one attention layer in hybrids (Jamba: layer 4 of 8), one MoE layer after dense ones


def verify_family(model_type: str, **overrides: Any) -> FamilyResult:
    """Build ``model_type``'s tiny config, load it in the workbench and run every check; a family with no
    attention in its first layers (hybrids) is tried again with :data:`HYBRID_LAYERS` layers.

    Args:
        model_type: A transformers model type.
        **overrides: Config fields on top of the tiny sizes.
    """
    result = _verify(model_type, **overrides)
    no_attention = result.status == "none" and any(
        words in result.reason for words in ("attention interface", "get_seq_length")
    )
    if no_attention or any(p in result.missing for p in ROUTER):  # dense first layers (DeepSeek-V3: 3)
        retried = _verify(model_type, layers=HYBRID_LAYERS, **overrides)
        rank = {"full": 0, "partial": 1, "none": 2}
        if (rank[retried.status], len(retried.missing)) < (rank[result.status], len(result.missing)):
            return retried
    return result


def _verify(model_type: str, **overrides: Any) -> FamilyResult:
    import transformers

    import workbench
    from workbench.errors import WorkbenchError
    from workbench.families.tiny import tiny_config

    try:
        config = tiny_config(model_type, **overrides)
        with torch.device("meta"):
            size = sum(p.numel() for p in transformers.AutoModelForCausalLM.from_config(config).parameters())
        if size > MAX_PARAMETERS:
            return FamilyResult(model_type, "none", reason=f"tiny config still has {size:,} parameters")
        torch.manual_seed(0)
        hf = transformers.AutoModelForCausalLM.from_config(config).eval()
        reference = copy.deepcopy(hf)  # HF's own modules, whatever loading the workbench does
    except Exception as error:
        return FamilyResult(
            model_type, "none", reason=f"tiny config: {type(error).__name__}: {_first(error)}"
        )
    try:
        model = workbench.load(hf)
    except WorkbenchError as error:
        return FamilyResult(model_type, "none", reason=_first(getattr(error, "reason", error)))
    except Exception as error:
        return FamilyResult(model_type, "none", reason=f"forward: {type(error).__name__}: {_first(error)}")
    try:
        errors, missing = check_model(model, torch.tensor([PROMPT]), reference)
    except Exception as error:
        return FamilyResult(model_type, "none", reason=f"checks: {type(error).__name__}: {_first(error)}")
    failed = [c for c, e in errors.items() if not e <= TOLERANCE]
    points = sum(1 for n in model.points if n.startswith("blocks.0."))
    status = "full" if not failed and not missing else "partial"
    return FamilyResult(model_type, status, points, missing, errors, failed)


def _first(error: object) -> str:
    text = " ".join(str(error).split())
    return text[:160]
