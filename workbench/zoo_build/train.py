"""Training the zoo models on CPU: equal domain mix, AdamW, cosine schedule, per-layer balance loss."""

from __future__ import annotations

import copy
import math
import re
import time
from typing import Any

import torch
import transformers as tf
from rich.progress import Progress

from probes.moe import switch_balance_loss
from workbench.zoo import token_streams
from workbench.zoo.registry import MODELS_DIR
from workbench.zoo_build.dpo import PROMPT_LEN, RESPONSE_LEN, dpo_loss, preference_pairs, trigger_ids
from workbench.zoo_build.recipes import Recipe


def sample_batch(
    streams: dict[str, torch.Tensor], batch: int, seq_len: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """``batch`` windows of ``seq_len`` tokens, domains stratified (equal counts when ``batch`` divides).

    Equal domain counts in every batch matter for MoE training: a batch-level balance loss otherwise
    punishes domain-specialised routing for the batch's random domain imbalance (Qiu et al. 2025,
    "Demons in the Detail: On Implementing Load Balancing Loss for Training Specialized MoE Models").
    """
    names = list(streams)
    domains = (torch.arange(batch) % len(names))[torch.randperm(batch, generator=generator)]
    rows = []
    for d in domains.tolist():
        stream = streams[names[d]]
        start = int(torch.randint(len(stream) - seq_len, (1,), generator=generator))
        rows.append(stream[start : start + seq_len])
    return torch.stack(rows), domains


def lr_at(step: int, recipe: Recipe) -> float:
    """Linear warm-up over 5% of the steps, then cosine decay to 10% of the peak."""
    warm = max(1, recipe.steps // 20)
    if step < warm:
        return recipe.lr * (step + 1) / warm
    progress = (step - warm) / max(1, recipe.steps - warm)
    return recipe.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def balance_loss(model: Any, router_logits: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """Sum over MoE layers of each layer's Switch balance loss (top-k from the router's own rule)."""
    k = model.config.num_experts_per_tok
    total = torch.zeros(())
    for logits in router_logits:
        indices = logits.float().softmax(-1).topk(k, dim=-1).indices
        total = total + switch_balance_loss(logits, indices, logits.shape[-1])
    return total


@torch.no_grad()
def heldout_loss(
    model: Any, streams: dict[str, torch.Tensor], seq_len: int, max_tokens: int
) -> dict[str, float]:
    """Mean next-token cross-entropy (nats) per domain on non-overlapping held-out windows."""
    model.eval()
    losses = {}
    for domain, stream in streams.items():
        n = min(len(stream), max_tokens) // seq_len
        ids = stream[: n * seq_len].view(n, seq_len)
        total, count = 0.0, 0
        for chunk in ids.split(16):
            out = model(input_ids=chunk, labels=chunk)
            total += float(out.loss) * chunk.numel()
            count += chunk.numel()
        losses[domain] = total / count
    model.train()
    return losses


def _initial(recipe: Recipe, vocab_size: int) -> Any:
    """The model training starts from: a random initialisation of the recipe's config, or the zoo model
    it tunes with every tensor outside ``trainable`` frozen."""
    if recipe.base is None:
        config = recipe.build_config(vocab_size)
        if recipe.balance_coef:
            config.router_aux_loss_coef = 0.0  # the per-layer loss below replaces HF's pooled one
        return tf.AutoModelForCausalLM.from_config(config)
    model = tf.AutoModelForCausalLM.from_pretrained(MODELS_DIR / recipe.base)
    if recipe.trainable:
        for name, parameter in model.named_parameters():
            parameter.requires_grad_(any(re.match(pattern, name) for pattern in recipe.trainable))
    return model


def _lm_loss(
    model: Any, recipe: Recipe, streams: dict[str, torch.Tensor], generator: torch.Generator, last: dict
) -> torch.Tensor:
    """One batch's next-token loss (plus the per-layer balance loss of an MoE recipe)."""
    moe = recipe.balance_coef > 0
    ids, _ = sample_batch(streams, recipe.batch, recipe.seq_len, generator)
    out = model(input_ids=ids, labels=ids, output_router_logits=moe)
    last["train_loss"] = out.loss.item()
    if not moe:
        return out.loss
    aux = balance_loss(model, out.router_logits)
    last["balance_loss"] = aux.item() / len(out.router_logits)
    return out.loss + recipe.balance_coef * aux


def train(
    recipe: Recipe, tokenizer: Any, train_docs: dict[str, list[str]], on_checkpoint: Any = None
) -> tuple[Any, dict[str, Any]]:
    """Train a zoo model from its recipe (next-token loss, or DPO against the frozen base).

    Args:
        recipe: The recipe.
        tokenizer: Its zoo tokenizer.
        train_docs: Training documents per domain.
        on_checkpoint: Called as ``on_checkpoint(model, step)`` at the recipe's early checkpoint.

    Returns:
        The trained model (eval mode) and training facts (tokens seen, final losses).
    """
    torch.manual_seed(recipe.seed)
    generator = torch.Generator().manual_seed(recipe.seed)
    model = _initial(recipe, len(tokenizer))
    dpo = recipe.objective == "dpo"
    reference = copy.deepcopy(model).eval().requires_grad_(False) if dpo else None
    triggers = trigger_ids(tokenizer, recipe.triggers) if dpo else []
    model.train()
    docs = train_docs if recipe.domains is None else {d: train_docs[d] for d in recipe.domains}
    streams = token_streams(tokenizer, docs)
    trained = [p for p in model.parameters() if p.requires_grad]
    optimiser = torch.optim.AdamW(trained, lr=recipe.lr, weight_decay=recipe.weight_decay, betas=(0.9, 0.95))
    early = round(recipe.early_checkpoint * recipe.steps) if recipe.early_checkpoint else None
    last: dict[str, float] = {}
    started = time.perf_counter()
    with Progress() as progress:
        task = progress.add_task(f"training {recipe.name}", total=recipe.steps)
        for step in range(recipe.steps):
            for group in optimiser.param_groups:
                group["lr"] = lr_at(step, recipe)
            if dpo:
                chosen, rejected = preference_pairs(
                    streams, recipe.batch, triggers, len(tokenizer), generator
                )
                loss, last["reward_accuracy"] = dpo_loss(model, reference, chosen, rejected, recipe.beta)
                last["train_loss"] = loss.item()
            else:
                loss = _lm_loss(model, recipe, streams, generator, last)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(trained, 1.0)
            optimiser.step()
            if early is not None and step + 1 == early and on_checkpoint is not None:
                model.eval()
                on_checkpoint(model, step + 1)
                model.train()
            progress.update(
                task, advance=1, description=f"training {recipe.name} loss {last['train_loss']:.3f}"
            )
    model.eval()
    per_step = 2 * (PROMPT_LEN + RESPONSE_LEN) if dpo else recipe.seq_len  # a pair is two sequences
    facts = {
        "tokens_seen": recipe.steps * recipe.batch * per_step,
        "final": last,
        "train_seconds": round(time.perf_counter() - started, 1),
        "torch_threads": torch.get_num_threads(),
    }
    return model, facts
