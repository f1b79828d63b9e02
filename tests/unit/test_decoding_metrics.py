"""Decoding metrics on planted token sequences."""

from __future__ import annotations

import math

import pytest

from probes.decoding import distinct_n, one_at_a_time, repetition_rate
from workbench.errors import InputError


def test_distinct_n_pools_over_sequences() -> None:
    assert distinct_n([[1, 2, 3, 4]], 1) == 1.0
    assert distinct_n([[1, 2, 1, 2]], 2) == pytest.approx(2 / 3)  # (1,2) (2,1) (1,2)
    assert distinct_n([[1, 2], [1, 2]], 1) == 0.5
    assert math.isnan(distinct_n([[1]], 2))


def test_repetition_rate_is_share_of_repeated_ngrams() -> None:
    assert repetition_rate(list(range(10))) == 0.0
    loop = [5, 6, 7, 8] * 3  # 9 four-grams, 4 distinct
    assert repetition_rate(loop) == pytest.approx(1 - 4 / 9)
    assert math.isnan(repetition_rate([1, 2, 3]))


def test_one_at_a_time_varies_one_parameter() -> None:
    settings = one_at_a_time({"max_new_tokens": 8}, temperature=[0.5, 1.5], top_k=[10])
    assert [(s["sweep"], s["temperature"], s["top_k"]) for s in settings] == [
        ("temperature", 0.5, None),
        ("temperature", 1.5, None),
        ("top_k", 1.0, 10),
    ]
    assert all(s["max_new_tokens"] == 8 for s in settings)
    with pytest.raises(InputError, match="unknown decoding parameter 'beam'"):
        one_at_a_time(beam=[2])
