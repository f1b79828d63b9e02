"""Prompt sets of a battery, resolved to texts by group (domain, language ...)."""

from __future__ import annotations

from probes.tokenizer import load_texts
from workbench.battery.spec import PromptSet
from workbench.summary import DEFAULT_PROMPTS
from workbench.zoo import heldout


def resolve_prompts(prompts: PromptSet) -> dict[str, list[str]]:
    """Texts by group: ``heldout`` (the zoo's five held-out domains), ``parallel`` (the tokenizer probes'
    parallel sample, by language), ``short`` (two one-sentence prompts), or the user's file; at most
    ``per_group`` texts per group (0: all), each cut to ``chars`` characters (0: whole).

    Raises:
        ValueError: A negative ``per_group`` or ``chars``.
    """
    for key in ("per_group", "chars"):
        value = getattr(prompts, key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{key}: expected an int >= 0 (0: all), got {value!r}")
    if prompts.builtin == "heldout":
        groups = heldout()
    elif prompts.builtin == "parallel":
        groups = load_texts()
    elif prompts.builtin == "short":
        groups = {"default": list(DEFAULT_PROMPTS)}
    else:
        groups = load_texts(prompts.file)
    cut = {}
    for group, texts in groups.items():
        texts = texts[: prompts.per_group] if prompts.per_group else texts
        cut[group] = [t[: prompts.chars] if prompts.chars else t for t in texts]
    return cut
