"""The dry forward of discovery: every module call in order (entry, exit, inputs, output) and every call of
transformers' attention interface, with the calling module (the interface passes it).

Global module hooks record the calls; a recorder sits in ``ALL_ATTENTION_FUNCTIONS`` under the model's
implementation key for the length of the forward and hands each call on to the function it replaced.
"""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from workbench.arch.interface import eager_of, interface_of


@dataclass
class Call:
    """One module call of the dry forward: where it starts and ends in the event order, what it got."""

    name: str
    start: int
    end: int = -1
    inputs: tuple = ()
    output: Any = None


@dataclass
class Trace:
    """Module calls and attention-interface calls of one forward, in order."""

    names: dict[int, str]
    config: Any = None
    calls: list[Call] = field(default_factory=list)
    attention: list[tuple[int, str, torch.Tensor, torch.Tensor, torch.Tensor]] = field(default_factory=list)
    sinks: set[str] = field(default_factory=set)  # attention-module attributes handed over as s_aux
    clock: int = 0
    open: dict[int, list[Call]] = field(default_factory=dict)

    def tick(self) -> int:
        self.clock += 1
        return self.clock

    def inside(self, call: Call) -> list[Call]:
        """The calls made inside ``call`` (its submodules', in order)."""
        prefix = f"{call.name}."
        return [c for c in self.calls if c.name.startswith(prefix) and call.start < c.start < call.end]


def is_norm(module: nn.Module) -> bool:
    """A normalisation layer: "Norm" in its class name and no children with parameters (not a composite
    such as DBRX's ``NormAttentionNorm``, nor RoBERTa-PreLayerNorm's attention)."""
    return "norm" in type(module).__name__.lower() and not any(has_parameters(c) for c in module.children())


def has_matrix(module: nn.Module) -> bool:
    weight = getattr(module, "weight", None)
    return isinstance(weight, torch.Tensor) and weight.dim() == 2


def has_parameters(module: nn.Module) -> bool:
    return next(module.parameters(), None) is not None


def first_tensor(value: Any) -> torch.Tensor | None:
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, tuple | list) and value and isinstance(value[0], torch.Tensor):
        return value[0]
    return None


def dims(value: Any) -> int | None:
    tensor = first_tensor(value)
    return None if tensor is None else tensor.dim()


def same(a: Any, b: Any) -> bool:
    """Whether two recorded values are the same tensor (identity or the same storage and shape)."""
    a, b = first_tensor(a), first_tensor(b)
    if a is None or b is None:
        return False
    return a is b or (a.shape == b.shape and a.device.type != "meta" and a.data_ptr() == b.data_ptr())


def _restore(interface: Any, key: str, previous: Any) -> None:
    if previous is not None:
        interface[key] = previous
    else:
        interface._local_mapping.pop(key, None)


def trace_forward(model: nn.Module, ids: torch.Tensor) -> Trace:
    """Run ``model`` once on ``ids`` and record every module call and attention-interface call."""
    base = getattr(model, "base_model", model)
    trace = Trace({id(m): n for n, m in base.named_modules()}, model.config.get_text_config())
    key = model.config._attn_implementation

    def enter(module: nn.Module, args: tuple) -> None:
        name = trace.names.get(id(module))
        if name is not None:
            call = Call(name, trace.tick(), inputs=args)
            trace.calls.append(call)
            trace.open.setdefault(id(module), []).append(call)

    def leave(module: nn.Module, args: tuple, output: Any) -> None:
        stack = trace.open.get(id(module))
        if stack:
            call = stack.pop()
            call.end, call.output = trace.tick(), output

    interfaces = {id(i): i for i in [ALL_ATTENTION_FUNCTIONS, *map(interface_of, model.modules())]}
    previous = {i: interface._local_mapping.get(key) for i, interface in interfaces.items()}

    def recorder(
        module: nn.Module, query: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *a: Any, **kw: Any
    ):
        original = previous[id(interface_of(module))] or ALL_ATTENTION_FUNCTIONS._global_mapping.get(key)
        name = trace.names.get(id(module))
        if name is not None:
            trace.attention.append((trace.tick(), name, query, k, v))
            sinks = kw.get("s_aux")  # learned per-head sink logits joining the softmax (GPT-OSS style)
            if isinstance(sinks, torch.Tensor):
                trace.sinks.add(next((n for n, p in module.named_parameters() if p is sinks), ""))
        if original is None:  # eager: the module's own eager function
            return eager_of(module)(module, query, k, v, *a, **kw)
        return original(module, query, k, v, *a, **kw)

    with ExitStack() as stack, torch.no_grad():
        handles = [
            nn.modules.module.register_module_forward_pre_hook(enter),
            nn.modules.module.register_module_forward_hook(leave),
        ]
        stack.callback(lambda: [h.remove() for h in handles])
        for i, interface in interfaces.items():
            interface[key] = recorder
            stack.callback(_restore, interface, key, previous[i])
        model(input_ids=ids, use_cache=False)
    return trace
