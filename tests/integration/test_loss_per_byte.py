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
    # windows of 5 tokens overlapping by one: window k holds tokens 4k .. 4k + 4 and predicts 4k + 1 ..
    # 4k + 4, so token t is predicted from tokens 4 * ((t - 1) // 4) .. t - 1 only. One forward per token:
    nll = 0.0
    with torch.no_grad():
        for t in range(1, ids.shape[1]):
            context = ids[:, 4 * ((t - 1) // 4) : t]
            nll -= float(model.hf(input_ids=context).logits[0, -1].double().log_softmax(-1)[ids[0, t]])
    assert windowed["nats_per_byte"] == pytest.approx(nll / len(TEXT.encode()), rel=1e-5)
