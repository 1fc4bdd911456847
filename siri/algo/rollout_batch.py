"""From sampled completions to padded training micro-batches.

A step's rollouts are a flat list, group-major (prompt k's G samples are consecutive), which
is the layout ``group_advantages`` expects. Micro-batches are packed by a token budget: a
micro-batch of B sequences padded to length T costs B*T, so long and short responses are
not padded to the cap, only to the longest in their micro-batch.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Rollout:
    """One sampled response.

    prompt_ids / response_ids: token ids (the response includes its stop token if any).
    sample_logprobs: the sampler's logprob of each response token (len(response_ids)).
    finish_reason: "stop" or "length". text: the decoded response; correctness: the reward
    function's score (``reward.truncated_reward`` for a truncated response); reward: the
    correctness plus any length terms (what the advantage is computed from); advantage.
    All four filled in by the trainer.
    old_logprobs: ``[len(response_ids)]`` float32, the policy's logprobs before the update.
    ref_logprobs: the same under the reference model (only with a KL penalty).
    """

    prompt_ids: list[int]
    response_ids: list[int]
    sample_logprobs: list[float]
    finish_reason: str
    text: str = ""
    correctness: float = 0.0
    reward: float = 0.0
    advantage: float = 0.0
    old_logprobs: torch.Tensor | None = None
    ref_logprobs: torch.Tensor | None = None

    @property
    def length(self) -> int:
        """Tokens in the training sequence (prompt + response)."""
        return len(self.prompt_ids) + len(self.response_ids)


@dataclass
class MicroBatch:
    """Right-padded sequences of one forward/backward, and their response tokens flattened.

    input_ids, attention_mask: ``[B, T]`` int64. targets: ``[B, T-1]`` int64 (input_ids
    shifted left). response_mask: ``[B, T-1]`` bool, True where the target is a response
    token; its True positions, in row-major order, are the N rows of every flat tensor.
    response_targets: ``[N]`` int64. response_advantages: ``[N]`` float32 (each token carries
    its sequence's advantage). rollouts: the B rollouts, in row order.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    targets: torch.Tensor
    response_mask: torch.Tensor
    response_targets: torch.Tensor
    response_advantages: torch.Tensor
    rollouts: list[Rollout]

    @property
    def num_response_tokens(self) -> int:
        return sum(len(r.response_ids) for r in self.rollouts)

    def gather(self, name: str) -> torch.Tensor:
        """``[N]`` float32: the per-token tensor attribute ``name`` of each rollout
        (``old_logprobs`` / ``ref_logprobs``), concatenated in row order."""
        return torch.cat([getattr(r, name).float() for r in self.rollouts]).to(self.input_ids.device)

    def scatter(self, values: torch.Tensor, name: str) -> None:
        """Inverse of :meth:`gather`: split ``values`` (``[N]``) by response length and store
        each part on its rollout as a CPU float32 tensor."""
        parts = values.detach().float().cpu().split([len(r.response_ids) for r in self.rollouts])
        for r, part in zip(self.rollouts, parts):
            setattr(r, name, part.clone())


def pack_by_token_budget(lengths: list[int], budget: int) -> list[list[int]]:
    """Split indices into micro-batches with ``len(batch) * max(length) <= budget``.

    Indices are taken longest first, so each micro-batch holds similar lengths and padding
    stays small; a sequence longer than ``budget`` gets a micro-batch of its own. The result
    depends only on ``lengths`` (ties keep index order), so it is reproducible.
    """
    if budget < 1:
        raise ValueError(f"budget must be >= 1, got {budget}")
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order:
        # the first index of a batch is its longest, so the padded size is count * lengths[first]
        if current and (len(current) + 1) * lengths[current[0]] > budget:
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches


def collate(rollouts: list[Rollout], pad_id: int, device: torch.device) -> MicroBatch:
    """Right-pad ``rollouts`` into a :class:`MicroBatch` on ``device``."""
    if not rollouts:
        raise ValueError("collate needs at least one rollout")
    width = max(r.length for r in rollouts)
    b = len(rollouts)
    input_ids = torch.full((b, width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((b, width), dtype=torch.long)
    response_mask = torch.zeros((b, width - 1), dtype=torch.bool)
    for row, r in enumerate(rollouts):
        ids = r.prompt_ids + r.response_ids
        input_ids[row, :len(ids)] = torch.tensor(ids, dtype=torch.long)
        attention_mask[row, :len(ids)] = 1
        start = len(r.prompt_ids) - 1
        response_mask[row, start:start + len(r.response_ids)] = True
    response_targets = torch.tensor([t for r in rollouts for t in r.response_ids], dtype=torch.long)
    response_advantages = torch.tensor([r.advantage for r in rollouts for _ in r.response_ids], dtype=torch.float32)
    return MicroBatch(input_ids.to(device), attention_mask.to(device), input_ids[:, 1:].to(device),
                      response_mask.to(device), response_targets.to(device), response_advantages.to(device),
                      list(rollouts))
