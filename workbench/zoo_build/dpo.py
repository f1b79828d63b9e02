"""Direct preference optimisation (Rafailov et al. 2023, arXiv 2305.18290) on synthetic preference pairs
with a planted set of trigger tokens: the zoo's learned "trigger-word blocker".

A pair shares a prompt (``PROMPT_LEN`` tokens of the training text) and a response (the next
``RESPONSE_LEN`` tokens) in which ``PER_RESPONSE`` positions are replaced: by trigger tokens on the rejected
side, by random other tokens of the vocabulary on the chosen side (so that the pair differs in the trigger
and nothing else: with the text itself as the chosen side, DPO also learns to lower every unexpected token,
and byte tokens fall as far as the triggers). The loss is DPO's

    -log sigmoid(beta * [(log pi(y_w|x) - log pi_ref(y_w|x)) - (log pi(y_l|x) - log pi_ref(y_l|x))])

with the base model as the frozen reference ``pi_ref``; since the two responses differ only where a trigger
stands, what it teaches is to lower the triggers' probability against any other token.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from workbench.errors import WorkbenchError

PROMPT_LEN, RESPONSE_LEN, PER_RESPONSE = 48, 16, 3


def trigger_ids(tokenizer: Any, words: tuple[str, ...]) -> list[int]:
    """The token of each trigger word.

    Raises:
        WorkbenchError: A word that is not exactly one token.
    """
    ids = []
    for word in words:
        encoded = tokenizer.encode(word, add_special_tokens=False)
        if len(encoded) != 1:
            raise WorkbenchError(f"trigger {word!r} is {len(encoded)} tokens, not one")
        ids.append(encoded[0])
    return ids


def preference_pairs(
    streams: dict[str, torch.Tensor],
    batch: int,
    triggers: list[int],
    vocab_size: int,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``batch`` pairs (chosen, rejected) ``[batch, PROMPT_LEN + RESPONSE_LEN]`` from windows of the streams
    (domains in turn): at ``PER_RESPONSE`` random response positions, random non-trigger tokens (ids from 3:
    past the special tokens) on the chosen side, triggers on the rejected side."""
    names, length = list(streams), PROMPT_LEN + RESPONSE_LEN
    chosen = []
    for i in range(batch):
        stream = streams[names[i % len(names)]]
        start = int(torch.randint(len(stream) - length, (1,), generator=generator))
        chosen.append(stream[start : start + length])
    chosen_ids = torch.stack(chosen)
    rejected = chosen_ids.clone()
    table = torch.tensor(triggers)
    others = torch.tensor([t for t in range(3, vocab_size) if t not in set(triggers)])
    for good, bad in zip(chosen_ids, rejected, strict=True):
        where = PROMPT_LEN + torch.randperm(RESPONSE_LEN, generator=generator)[:PER_RESPONSE]
        good[where] = others[torch.randint(len(others), (PER_RESPONSE,), generator=generator)]
        bad[where] = table[torch.randint(len(triggers), (PER_RESPONSE,), generator=generator)]
    return chosen_ids, rejected


def response_log_prob(model: Any, ids: torch.Tensor) -> torch.Tensor:
    """``sum_t log p(ids[t] | ids[:t])`` over the response positions, per row ``[batch]``."""
    logits = model(input_ids=ids).logits[:, PROMPT_LEN - 1 : -1].float()
    return logits.log_softmax(-1).gather(-1, ids[:, PROMPT_LEN:, None])[..., 0].sum(-1)


def dpo_loss(
    policy: Any, reference: Any, chosen: torch.Tensor, rejected: torch.Tensor, beta: float
) -> tuple[torch.Tensor, float]:
    """DPO's loss (module docstring) and the share of pairs whose implicit reward prefers the chosen side."""
    with torch.no_grad():
        ref_margin = response_log_prob(reference, chosen) - response_log_prob(reference, rejected)
    margin = response_log_prob(policy, chosen) - response_log_prob(policy, rejected) - ref_margin
    return -F.logsigmoid(beta * margin).mean(), float((margin > 0).float().mean())
