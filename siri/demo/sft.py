"""Supervised warm start of the demo's base model on verbose traces.

The loss is the mean negative log-likelihood of the response tokens (the trace and the end
token), computed with siri's fused ``token_logprobs`` on padded micro-batches.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

import torch

from siri.algo.rollout_batch import Rollout, collate
from siri.ops.logprobs import token_logprobs
from siri.progress import TrainProgress


@dataclass
class SftSettings:
    steps: int = 1200
    batch_size: int = 16
    lr: float = 2e-3
    warmup_steps: int = 30
    weight_decay: float = 0.0
    seed: int = 0


def supervised_finetune(model, examples: list[tuple[list[int], list[int]]], settings: SftSettings, *,
                        pad_id: int, progress: bool = True) -> list[float]:
    """Fine-tune ``model`` in place on ``(prompt_ids, response_ids)`` pairs (the response
    should end with the end-of-sequence token). Batches are drawn with a seeded RNG.
    Returns the loss of every step."""
    rng = random.Random(settings.seed)
    device = next(model.parameters()).device
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    warmup = max(settings.warmup_steps, 1)
    # linear warmup, then cosine decay to 10% of the peak
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda k: min(1.0, (k + 1) / warmup) * (
        0.55 + 0.45 * torch.cos(torch.tensor(torch.pi * min(k, settings.steps) / settings.steps)).item()))
    model.train()
    losses = []
    bar = TrainProgress(progress, total=settings.steps, description="sft")
    try:
        for _ in range(settings.steps):
            batch = [Rollout(p, r, [], "stop") for p, r in rng.sample(examples, min(settings.batch_size, len(examples)))]
            mb = collate(batch, pad_id, device)
            logits = model(input_ids=mb.input_ids, attention_mask=mb.attention_mask).logits
            logp = token_logprobs(logits[:, :-1], mb.targets, mask=mb.response_mask)
            loss = -(logp * mb.response_mask).sum() / mb.response_mask.sum()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(float(loss.detach()))
            bar.advance(f"loss {losses[-1]:.3f}")
    finally:
        bar.close()
    model.eval()
    return losses
