"""``WorkbenchModel``: an HF model plus its adapter, its hook points and the backend that serves them."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import cached_property
from typing import Any

import torch
from torch import nn

from workbench.arch import ArchAdapter, adapter_for
from workbench.arch.cfg import ModelCfg
from workbench.errors import InputError
from workbench.hooks.hooking import HookFn, attach
from workbench.hooks.implementation import attention_implementation
from workbench.hooks.points import ResolvedPoint, resolve_points, select
from workbench.models.backends import read_native, wrap_native

Inputs = str | Sequence[str] | torch.Tensor | dict[str, torch.Tensor]


class WorkbenchModel:
    """A loaded model with canonical hook points.

    Attributes:
        hf: The HF ``PreTrainedModel`` (untouched apart from hooks while they are attached).
        tokenizer: Its tokenizer, or None.
        adapter: The family's architecture adapter.
        source: What it was loaded from (zoo name, directory, hub id or class name).
        backend: ``"hf"``, ``"tl"`` or ``"nnsight"``: which library serves :meth:`read`.
        native: The TransformerBridge or nnsight LanguageModel for those backends.
    """

    def __init__(
        self,
        hf: nn.Module,
        tokenizer: Any,
        *,
        source: str,
        backend: str = "hf",
        native: Any = None,
        allow_generic: bool = False,
    ) -> None:
        self.hf = hf
        self.tokenizer = tokenizer
        self.source = source
        self.backend = backend
        self.adapter: ArchAdapter = adapter_for(hf, allow_generic=allow_generic)
        self._native = native
        self.memo: dict[Any, Any] = {}  # facts derived once per model (e.g. capture sizes per position)

    def __repr__(self) -> str:
        return f"WorkbenchModel({self.source!r}, family={self.adapter.family}, backend={self.backend})"

    @property
    def config(self) -> Any:
        """The HF config."""
        return self.hf.config

    @cached_property
    def cfg(self) -> ModelCfg:
        """The model's layout as the workbench sees it (layers, widths, heads, experts, attention kinds,
        causal ...), computed once by the adapter."""
        return self.adapter.describe(self.hf)

    @property
    def base(self) -> nn.Module:
        """The HF base model (``model``, ``transformer``, ``bert`` ...), root of the adapter's paths."""
        return self.hf.base_model

    @property
    def device(self) -> torch.device:
        """Device of the first parameter."""
        return next(self.hf.parameters()).device

    @cached_property
    def points(self) -> dict[str, ResolvedPoint]:
        """Hook points of this model by canonical name, in execution order."""
        return resolve_points(self.base, self.adapter)

    def hook_points(self, pattern: str | list[str] = ".*", missing_ok: bool = False) -> list[str]:
        """Names of the hook points matching ``pattern`` (exact names or regular expressions).

        Args:
            pattern: Names or regular expressions.
            missing_ok: Skip patterns that match nothing instead of raising.
        """
        return select(self.points, pattern, missing_ok)

    @property
    def native(self) -> Any:
        """The backend object: a TransformerBridge (``tl``), an nnsight LanguageModel, or the HF model."""
        if self._native is None and self.backend != "hf":
            self._native = wrap_native(self)
        return self._native if self._native is not None else self.hf

    # ------------------------------------------------------------------ inputs
    def encode(self, inputs: Inputs) -> dict[str, torch.Tensor]:
        """Token ids and attention mask for prompts (padded batch) or pass-through tensors.

        Raises:
            InputError: An empty prompt, a prompt longer than the context, or no tokenizer for text.
        """
        if isinstance(inputs, torch.Tensor):
            batch = {"input_ids": inputs if inputs.dim() == 2 else inputs[None]}
        elif isinstance(inputs, dict):
            batch = dict(inputs)
        else:
            prompts = [inputs] if isinstance(inputs, str) else list(inputs)
            if not prompts or any(not p.strip() for p in prompts):
                raise InputError("empty prompt: give at least one non-blank prompt")
            if self.tokenizer is None:
                raise InputError("this model has no tokenizer; pass token ids instead of text")
            if self.tokenizer.pad_token is None:
                self.tokenizer.pad_token = self.tokenizer.eos_token or self.tokenizer.unk_token
            batch = dict(self.tokenizer(prompts, return_tensors="pt", padding=True))
        ids = batch["input_ids"]
        if ids.shape[-1] == 0:
            raise InputError("empty prompt: no tokens")
        limit = self.cfg.n_ctx
        if limit is not None and ids.shape[-1] > limit:
            raise InputError(f"prompt is {ids.shape[-1]} tokens; {self.source} takes at most {limit}")
        return {k: v.to(self.device) for k, v in batch.items()}

    # ------------------------------------------------------------------ hooks
    @contextmanager
    def hooks(self, fns: dict[str, HookFn]) -> Iterator[None]:
        """Attach hook functions (``fn(tensor, name) -> tensor | None``) on the HF backend.

        Attention switches to eager while an ``attn.hook_pattern`` point is hooked. All hooks are
        removed on exit, also when the forward pass raises.
        """
        needs_eager = any(name.endswith("attn.hook_pattern") for name in fns)
        impl = "eager" if needs_eager else self.config._attn_implementation
        with (
            attention_implementation(self.hf, impl),
            attach(self.points, fns, self.adapter, self.cfg.n_heads),
        ):
            yield

    def forward(self, inputs: Inputs, **kwargs: Any) -> Any:
        """Run the HF model on encoded inputs under ``torch.no_grad``."""
        with torch.no_grad():
            return self.hf(**self.encode(inputs), **kwargs)

    def run_with_hooks(self, inputs: Inputs, fns: dict[str, HookFn], **kwargs: Any) -> Any:
        """One forward pass with hook functions attached; returns the HF output."""
        with self.hooks(fns):
            return self.forward(inputs, **kwargs)

    def read(self, inputs: Inputs, names: str | list[str]) -> dict[str, torch.Tensor]:
        """Values of the selected hook points for one forward pass, through this model's backend.

        Args:
            inputs: Prompts, token ids or an encoded batch.
            names: Hook point names or regular expressions.

        Returns:
            Name to tensor (detached), in model order.
        """
        chosen = self.hook_points(names)
        if self.backend != "hf":
            return read_native(self, self.encode(inputs), chosen)
        store: dict[str, torch.Tensor] = {}

        def keep(value: torch.Tensor, name: str) -> None:
            store[name] = value.detach().clone()

        self.run_with_hooks(inputs, dict.fromkeys(chosen, keep))
        return {n: store[n] for n in chosen if n in store}
