"""Generation-time capture: the same hook points and streamed statistics, token by token.

A manual decoding loop over HF's ``DynamicCache`` (so that every step's values are visible) with HF's own
logits processors for temperature, top-k, top-p and repetition penalty. Step ``t`` records the forward pass
that produced generated token ``t``: the prompt's last position at step 0, then the position of the token
fed back at each later step. Its values equal a full forward pass over the prefix at that position; an
attention row covers the keys in the cache, so a sliding-window layer's row holds its last window only.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import DynamicCache, LogitsProcessorList
from transformers.generation.logits_process import (
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from workbench.capture.engine import _names
from workbench.capture.layout import layout_for, split_prompts
from workbench.capture.spec import CaptureSpec
from workbench.capture.stat_taps import stat_taps
from workbench.capture.store import Capture
from workbench.errors import InputError
from workbench.models.model import Inputs, WorkbenchModel
from workbench.numerics import entropy


@dataclass
class Step:
    """One generated token and what the model did to produce it.

    Attributes:
        index: Step number (0 = the first generated token).
        token_id: The generated token.
        token: Its string.
        logit_entropy: Entropy (nats) of the next-token distribution after the decoding processors (the
            distribution the token was drawn from).
        model_entropy: Entropy (nats) of the model's own next-token distribution (before the processors).
        values: Hook point / statistic name to the value at this step's query position (batch axis removed).
        resid_norms: L2 norm of the residual stream leaving each block, at this step's position.
        cache_length: Tokens in the KV cache after this step's forward pass.
    """

    index: int
    token_id: int
    token: str
    logit_entropy: float
    model_entropy: float
    values: dict[str, torch.Tensor] = field(default_factory=dict)
    resid_norms: list[float] = field(default_factory=list)
    cache_length: int = 0


def _processors(
    temperature: float, top_k: int | None, top_p: float | None, repetition_penalty: float | None
) -> LogitsProcessorList:
    processors = LogitsProcessorList()
    if repetition_penalty not in (None, 1.0):
        processors.append(RepetitionPenaltyLogitsProcessor(repetition_penalty))
    if temperature not in (0.0, 1.0):
        processors.append(TemperatureLogitsWarper(temperature))
    if top_k:
        processors.append(TopKLogitsWarper(top_k))
    if top_p is not None and top_p < 1.0:
        processors.append(TopPLogitsWarper(top_p))
    return processors


def stream_generate(
    model: WorkbenchModel,
    prompt: Inputs,
    spec: CaptureSpec | None = None,
    *,
    max_new_tokens: int = 32,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    repetition_penalty: float | None = None,
    seed: int = 0,
    stop_at_eos: bool = True,
) -> Iterator[Step]:
    """Generate token by token, yielding each step with its captured values (for live diagnostics).

    Args:
        model: A loaded causal model (HF backend).
        prompt: One prompt (text or token ids).
        spec: Hook points and streamed statistics to record per step (positions are always the new query).
        max_new_tokens: Tokens to generate.
        temperature: 0 for greedy decoding, otherwise the sampling temperature.
        top_k: Keep the k most likely tokens (None: all).
        top_p: Nucleus sampling threshold (None: off).
        repetition_penalty: CTRL-style penalty (None or 1: off).
        seed: Sampling seed.
        stop_at_eos: Stop after the tokenizer's EOS token.
    """
    if not model.cfg.causal_lm:
        raise InputError(f"{model.source} is not a causal language model; generation needs one")
    spec = spec or CaptureSpec(stats=["sink_mass", "entropy"])
    points, stats = _names(model, spec)
    ids = model.encode(prompt)["input_ids"][:1]
    processors = _processors(temperature, top_k, top_p, repetition_penalty)
    generator = torch.Generator(device=ids.device).manual_seed(seed)
    cache = DynamicCache(config=model.config)
    eos = model.tokenizer.eos_token_id if model.tokenizer is not None else None
    sequence, feed = ids, ids
    state: dict[str, Any] = {}
    values: dict[str, torch.Tensor] = {}
    norms: dict[str, float] = {}
    resid = model.hook_points(r"blocks\.\d+\.hook_resid_post")

    def keep(value: torch.Tensor, name: str) -> None:
        values[name] = value.detach()

    def norm(value: torch.Tensor, name: str) -> None:
        norms[name] = float(value[0, -1].float().norm())

    hooks = {**dict.fromkeys(resid, norm), **dict.fromkeys(points, keep)}
    if set(resid) & set(points):
        hooks.update({n: _both(keep, norm) for n in set(resid) & set(points)})

    for index in range(max_new_tokens):
        mask = torch.ones(1, feed.shape[1], dtype=torch.long, device=ids.device)
        state["mask"] = torch.ones(1, sequence.shape[1], dtype=torch.long, device=ids.device)
        state["first"] = torch.zeros(1, dtype=torch.long, device=ids.device)
        state["ids"] = sequence
        values.clear()
        start = sequence.shape[1] - feed.shape[1]
        position_ids = torch.arange(start, sequence.shape[1], device=ids.device)[None]
        with ExitStack() as stack, torch.no_grad():
            stack.enter_context(model.hooks(hooks))
            for context in stat_taps(model, stats, spec, state, values):
                stack.enter_context(context)
            out = model.hf(input_ids=feed, position_ids=position_ids, cache=cache, use_cache=True)
        step_values = {}
        for name in points + stats:
            layout = layout_for(name)
            value = split_prompts(values[name], layout, mask)[0] if name in points else values[name][0]
            if layout.pos_axis is not None:
                value = value.select(layout.pos_axis, -1)
            step_values[name] = value.cpu()
        scores = processors(sequence, out.logits[:, -1].float())
        probs = scores.softmax(-1)
        if temperature == 0.0:
            token = scores.argmax(-1, keepdim=True)
        else:
            token = torch.multinomial(probs, 1, generator=generator)
        sampled = float(entropy(probs))
        model_entropy = float(entropy(out.logits[:, -1].float().softmax(-1)))
        token_id = int(token)
        text = model.tokenizer.decode([token_id]) if model.tokenizer is not None else str(token_id)
        yield Step(
            index,
            token_id,
            text,
            sampled,
            model_entropy,
            step_values,
            [norms[n] for n in resid],
            cache.get_seq_length(),
        )
        sequence = torch.cat([sequence, token], dim=1)
        feed = token
        if stop_at_eos and eos is not None and token_id == eos:
            return


def _both(*fns: Any) -> Any:
    def call(value: torch.Tensor, name: str) -> None:
        for fn in fns:
            fn(value, name)

    return call


@dataclass
class Generation:
    """A finished generation: prompt and generated ids, text, and the per-step capture.

    ``capture[name][t]`` is the value at step ``t``; ``capture.tokens[t]`` the generated token.
    """

    prompt_ids: torch.Tensor
    steps: list[Step]
    capture: Capture
    text: str


def generate(
    model: WorkbenchModel, prompt: Inputs, spec: CaptureSpec | None = None, **decoding: Any
) -> Generation:
    """Generate with capture (see :func:`stream_generate` for the decoding arguments)."""
    spec = spec or CaptureSpec(stats=["sink_mass", "entropy"])
    steps = list(stream_generate(model, prompt, spec, **decoding))
    names = list(steps[0].values) if steps else []
    text = "".join(s.token for s in steps)
    meta = {"model": model.source, "family": model.adapter.family, "spec": spec.to_json(), "generated": text}
    meta["logit_entropy"] = [s.logit_entropy for s in steps]
    meta["resid_norms"] = [s.resid_norms for s in steps]
    result = Capture(names, meta)
    result.append(
        {n: [s.values[n] for s in steps] for n in names}, [torch.tensor([s.token_id]) for s in steps]
    )
    return Generation(model.encode(prompt)["input_ids"][0].cpu(), steps, result, text)
