"""Battery parameter definitions and the argument checks of the probe functions a battery calls."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from probes import decoding, eviction, kvcache, params, sinks
from probes.kvcache import RetentionParams
from probes.registry import registry
from probes.sinks import SinksParams
from probes.tokenizer import load_texts
from workbench.battery.params import is_slug, slug
from workbench.battery.prompts import resolve_prompts
from workbench.battery.spec import PromptSet
from workbench.errors import InputError


def test_every_probe_states_its_parameters_as_typed_fields_with_defaults() -> None:
    for name, probe in registry().items():
        defaults = params.parse(probe.params, {}, name)
        for value in vars(defaults).values():
            assert isinstance(value, int | float | str | tuple), name


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"eps": -5}, "sinks.eps: expected a number >= 0 and < 1, got -5"),
        ({"eps": True}, "sinks.eps: expected int or float, got bool True"),
        ({"eps": float("nan")}, "sinks.eps: expected a number >= 0 and < 1, got nan"),
        ({"eps": "x" * 100}, "sinks.eps: expected int or float, got str 'xxx"),
        ({"tau": 1}, "sinks.tau: unknown key (known: eps)"),
    ],
)
def test_out_of_range_and_wrong_types_are_refused(table: dict, message: str) -> None:
    with pytest.raises(params.ParamError, match=message.replace("(", r"\(").replace(")", r"\)")):
        params.parse(SinksParams, table, "sinks")


def test_lists_are_checked_item_by_item() -> None:
    parsed = params.parse(RetentionParams, {"budgets": [0.5, 1]}, "kv")
    assert parsed.budgets == (0.5, 1)
    with pytest.raises(params.ParamError, match=r"kv\.budgets\[1\]: expected a number > 0 and <= 1"):
        params.parse(RetentionParams, {"budgets": [0.5, 0]}, "kv")


def test_slugs() -> None:
    assert slug("../../escape") == "escape" and slug("модель") == ""
    assert slug("Ünï code!") == "Uni-code" and is_slug("tiny-moe.v2")
    assert not any(is_slug(n) for n in ("", "..", ".x", "a/b", "/abs", "x" * 65, "ü"))


def test_probe_functions_check_their_arguments() -> None:
    with pytest.raises(ValueError, match="eps"):
        sinks.sink_table(None, 1, eps=-5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="budgets"):
        kvcache.retention_curve([], (0.5, -1.0))
    with pytest.raises(ValueError, match="budgets"):
        eviction.eviction_table(None, torch.zeros(1, 8, dtype=torch.long), 4, ())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="prompt_len"):
        eviction.simulate_eviction(None, torch.zeros(1, 8, dtype=torch.long), 8, "recent", 2)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="batch_sizes"):
        decoding.batch_invariance(None, "x", [], (0,))  # type: ignore[arg-type]
    for key in ("per_group", "chars"):
        with pytest.raises(ValueError, match=key):
            resolve_prompts(PromptSet("p", "short", **{key: -1}))


def test_a_jsonl_row_with_an_extra_key_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    path.write_text('{"language": "en", "text": "hi", "id": "1"}\n')
    with pytest.raises(InputError, match=r"p\.jsonl:1: expected \{text"):
        load_texts(path)
    path.write_text('{"en": "hi", "fr": "salut"}\n{"language": "de", "text": "hallo"}\n')
    assert load_texts(path) == {"en": ["hi"], "fr": ["salut"], "de": ["hallo"]}
