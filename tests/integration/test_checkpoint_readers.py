"""The card's read rows against the files a checkpoint holds: a saved tiny Llama with a generation config
(filters, penalties, a time limit), a chat template (a default system prompt, reasoning markers, a role it
refuses) and a model card; MiniLM's shipped model card. Expected values are read from the files here."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from transformers import GenerationConfig, PreTrainedTokenizerFast

import workbench
from workbench.models.checkpoint import (
    chat_template_facts,
    generation_facts,
    model_card_facts,
    quantization_facts,
)
from workbench.models.tiny import build_tiny
from workbench.zoo import tokenizer_dir

DEFAULT_SYSTEM = "You are a careful assistant."
TEMPLATE = (
    "{%- if messages[0]['role'] == 'system' -%}{%- set system = messages[0]['content'] -%}"
    "{%- set messages = messages[1:] -%}{%- else -%}{%- set system = '"
    + DEFAULT_SYSTEM
    + "' -%}{%- endif -%}"
    "<|system|>{{ system }}<|end|>"
    "{%- for m in messages -%}{%- if m['role'] not in ['user', 'assistant'] -%}"
    "{{ raise_exception('unsupported role ' + m['role']) }}{%- endif -%}"
    "<|{{ m['role'] }}|>{{ m['content'] }}<|end|>{%- endfor -%}"
    "{%- if add_generation_prompt -%}<|assistant|>"
    "{%- if enable_thinking is defined and not enable_thinking -%}"
    "<think></think>{%- else -%}<think>{%- endif -%}{%- endif -%}"
)
CARD = """---
license: apache-2.0
base_model: tiny-llama
datasets:
- zoo/heldout-code
- zoo/heldout-english
tags:
- dpo
- text-generation
---
# A tuned tiny model
"""


def _front_matter(path: Path) -> dict:
    return yaml.safe_load(path.read_text().split("---")[1])


def _checkpoint(root: Path) -> Path:
    directory = root / "tuned"
    build_tiny("llama").save_pretrained(directory)
    GenerationConfig(
        do_sample=True,
        temperature=0.6,
        top_p=0.9,
        bad_words_ids=[[5, 6]],
        suppress_tokens=[7],
        repetition_penalty=1.1,
        no_repeat_ngram_size=3,
        max_time=2.0,
        max_new_tokens=64,
    ).save_pretrained(directory)
    tokenizer = PreTrainedTokenizerFast.from_pretrained(tokenizer_dir("bpe-4096"))
    tokenizer.chat_template = TEMPLATE
    tokenizer.save_pretrained(directory)
    (directory / "README.md").write_text(CARD)
    return directory


def test_generation_config_rows_are_the_files_values(tmp_path: Path) -> None:
    directory = _checkpoint(tmp_path)
    facts = generation_facts(workbench.load(str(directory)))
    written = json.loads((directory / "generation_config.json").read_text())
    defaults = GenerationConfig()
    for name, fact in facts.items():
        if name in written:
            assert (fact.value, fact.source) == (written[name], "generation_config.json"), name
        else:
            applied = getattr(defaults, name)  # what generate uses for a field the file leaves unset
            applied = (
                GenerationConfig._get_default_generation_params().get(name) if applied is None else applied
            )
            assert fact.source == "transformers default" and fact.value == applied, name
    assert {"bad_words_ids", "suppress_tokens", "max_time", "no_repeat_ngram_size"} <= set(written)


def test_chat_template_roles_default_system_prompt_and_reasoning_markers(tmp_path: Path) -> None:
    model = workbench.load(str(_checkpoint(tmp_path)))
    facts = chat_template_facts(model)
    assert facts["chat_template"].value is True
    assert facts["roles"].value == ["system", "user", "assistant"]  # the template raises on "tool"
    saved = (
        json.loads((tmp_path / "tuned" / "tokenizer_config.json").read_text()).get("chat_template")
        or (tmp_path / "tuned" / "chat_template.jinja").read_text()
    )
    assert facts["default_system_prompt"].value == DEFAULT_SYSTEM and DEFAULT_SYSTEM in saved
    assert facts["reasoning_markers"].value == ["<think>", "</think>", "enable_thinking"]
    plain = chat_template_facts(workbench.load("tiny-llama-unigram"))  # a zoo model without a template
    assert plain["roles"].value is None and plain["roles"].source.startswith("not determinable")


def test_model_card_rows_read_the_yaml_front_matter(tmp_path: Path) -> None:
    directory = _checkpoint(tmp_path)
    facts = model_card_facts(workbench.load(str(directory)))
    meta = _front_matter(directory / "README.md")
    assert facts["datasets"].value == meta["datasets"] and facts["base_model"].value == meta["base_model"]
    assert facts["tuning"].value == ["dpo"] and facts["tags"].value == meta["tags"]
    minilm = workbench.load("minilm")
    shipped = Path(minilm.config._name_or_path) / "README.md"
    assert model_card_facts(minilm)["datasets"].value == _front_matter(shipped)["datasets"]


def test_quantization_row_reads_the_config() -> None:
    assert quantization_facts(workbench.load("tiny-llama")).value is None
    model = build_tiny("llama")
    model.config.quantization_config = {"quant_method": "hqq", "bits": 4, "group_size": 64, "axis": 1}
    fact = quantization_facts(workbench.load(model))
    assert fact.value == {"quant_method": "hqq", "bits": 4, "group_size": 64}


def test_the_thirty_factors_are_all_present_with_the_files_values(tmp_path: Path) -> None:
    from probes.factors import CLASSES, factors

    directory = _checkpoint(tmp_path)
    rows = factors(workbench.load(str(directory)))
    assert [r.number for r in rows] == list(range(1, 31))
    # classes in the order and sizes: 4 tokenizer, 5 filters, 6 training, 5 architecture,
    # 5 decoding, 5 introspection
    assert [r.cls for r in rows] == [
        c for c, n in zip(CLASSES, (4, 5, 6, 5, 5, 5), strict=True) for _ in range(n)
    ]
    assert all(r.source for r in rows)  # nothing silently missing: a value or the reason there is none
    by_number = {r.number: r for r in rows}
    written = json.loads((directory / "generation_config.json").read_text())
    assert by_number[5].value["bad_words_ids"] == written["bad_words_ids"]
    assert by_number[5].value["suppress_tokens"] == written["suppress_tokens"]
    assert (
        by_number[21].value["temperature"] == written["temperature"] and by_number[21].value["top_p"] == 0.9
    )
    assert by_number[22].value["max_new_tokens"] == written["max_new_tokens"]
    assert by_number[23].value["no_repeat_ngram_size"] == written["no_repeat_ngram_size"]
    assert by_number[24].value == {"max_time": written["max_time"]}
    assert by_number[24].source == "generation_config.json"
    assert by_number[5].source == "generation_config.json; the rest transformers default"
    assert by_number[9].value == DEFAULT_SYSTEM and by_number[27].value is True
    assert by_number[28].value == ["<think>", "</think>", "enable_thinking"]
    assert by_number[29].value == ["assistant"]  # the template refuses the tool role
    meta = _front_matter(directory / "README.md")
    assert by_number[10].value == {"datasets": meta["datasets"]} and by_number[12].value == ["dpo"]
    assert by_number[8].value["base_model"] == meta["base_model"]
    moe = {r.number: r for r in factors(workbench.load("tiny-moe"))}
    assert moe[15].value == ["tiny-moe-early"] and moe[16].value["router"].startswith("softmax scoring")
    assert moe[14].source.startswith("needs a base checkpoint")
