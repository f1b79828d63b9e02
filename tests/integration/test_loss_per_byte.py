"""Loss per byte on the matched zoo models."""

from __future__ import annotations

import math

import pytest
import torch

import workbench
from probes.tokenizer import loss_per_byte

TEXT = "Water boils at one hundred degrees, and the kettle sings while the bread is toasting."


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-llama-unigram"])
def test_every_token_is_scored_once_and_all_bytes_counted(name: str) -> None:
    model = workbench.load(name)
    ids = model.tokenizer(TEXT, return_tensors="pt")["input_ids"]
    assert ids[0, 0] == model.tokenizer.bos_token_id
    with torch.no_grad():
        logits = model.hf(input_ids=ids).logits[0, :-1]
    full = float(torch.nn.functional.cross_entropy(logits, ids[0, 1:], reduction="sum"))
    whole = loss_per_byte(model, [TEXT], window=512)
    assert whole["tokens"] == ids.shape[1] - 1 and whole["bytes"] == len(TEXT.encode())
    assert whole["nats_per_byte"] == pytest.approx(full / len(TEXT.encode()), rel=1e-5)
    assert whole["bits_per_byte"] == pytest.approx(whole["nats_per_byte"] / math.log(2))
    windowed = loss_per_byte(model, [TEXT], window=5)
    assert windowed["tokens"] == whole["tokens"]
