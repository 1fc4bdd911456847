"""The policy update of one training step: GRPO/DAPO's PPO epochs over the step's mini-batches.

1. Old logprobs: each response token's logprob under the policy before the update
   (``algo.old_logprobs``): ``recompute``: a no_grad forward of the rollout model before the
   update; ``engine``: the sampler's own (exactly on-policy only); ``auto`` (the default):
   exactly on-policy (one epoch, one mini-batch) the training forward's own logprobs,
   detached, taken in :meth:`PolicyUpdate._optimizer_step` (the same values as ``recompute``
   without its extra forward: the ratio is 1), otherwise ``recompute``. With a KL penalty,
   the reference model's too.
2. For each of ``algo.ppo_epochs`` epochs and each mini-batch: micro-batches packed by a token
   budget (``algo.micro_batch_tokens``) go through the training model and the fused
   ``grpo_loss`` (token-mean over the mini-batch's response tokens on every rank), backward,
   then one optimizer step (:meth:`siri.train.precision.PolicyOptimizer.step`: the ranks' gradients
   summed, clipped, a non-finite step skipped). A mini-batch without response tokens on any
   rank takes no step.

:class:`UpdateStats` are its metrics, per optimizer step and as their mean over the step.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Callable, Iterable, Iterator

import torch

from siri.algo.dynamic_sampling import KeptGroup
from siri.algo.response_logits import response_logits
from siri.algo.rollout_batch import MicroBatch, Rollout, collate, pack_by_token_budget
from siri.config import AlgoConfig
from siri.train.distributed import DistContext
from siri.train.faults import fault_point
from siri.ops.grpo_loss import grpo_loss
from siri.ops.logprobs import token_logprobs
from siri.train.precision import PolicyOptimizer, PolicyWeights

__all__ = ["PolicyUpdate", "UpdateStats", "assign_mini_batches"]

# the GrpoStats fields reported as token-weighted means ("loss" is already a token mean)
_LOSS_STATS = ("clip_frac_low", "clip_frac_high", "clip_frac_dual", "approx_kl", "entropy")


@dataclass(frozen=True)
class UpdateStats:
    """The update's metrics (``siri.train.metrics.STEP_METRICS`` says what each one means): those of
    one optimizer step, or, from :meth:`mean`, their mean over a training step's optimizer steps.
    All zeros when no optimizer step ran. ``+`` adds field by field."""

    loss: float = 0.0
    grad_norm: float = 0.0
    update_skipped: float = 0.0
    train_tokens: float = 0.0
    clip_frac_low: float = 0.0
    clip_frac_high: float = 0.0
    clip_frac_dual: float = 0.0
    approx_kl: float = 0.0
    entropy: float = 0.0
    optimizer_steps: int = 0

    def __add__(self, other: UpdateStats) -> UpdateStats:
        return UpdateStats(**{f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(self)})

    def mean(self) -> UpdateStats:
        """Each value divided by ``optimizer_steps`` (which is kept)."""
        if not self.optimizer_steps:
            return UpdateStats()
        return UpdateStats(**{f.name: getattr(self, f.name) / self.optimizer_steps for f in fields(self)
                              if f.name != "optimizer_steps"}, optimizer_steps=self.optimizer_steps)


def assign_mini_batches(kept: Iterable[KeptGroup], target: int, mini_batches: int, *,
                        mask_truncated: bool) -> list[list[Rollout]]:
    """This rank's rollouts of the groups that train, by mini-batch.

    Args:
        kept: the step's kept groups (``GroupCollector.kept``); those another rank generated
            (``rollouts`` None) are skipped.
        target: the slots of the step's batch (``rollout.prompts_per_step``), a multiple of
            ``mini_batches``.
        mini_batches: ``algo.mini_batches``.
        mask_truncated: ``algo.mask_truncated``: leave truncated responses out of the loss.

    Returns:
        ``mini_batches`` lists: the group in slot k trains in mini-batch
        ``k // (target // mini_batches)``.
    """
    per_mini = target // mini_batches
    minis: list[list[Rollout]] = [[] for _ in range(mini_batches)]
    for group in kept:
        if group.rollouts is not None:
            minis[group.slot // per_mini] += [r for r in group.rollouts
                                              if not (mask_truncated and r.finish_reason == "length")]
    return minis


class PolicyUpdate:
    """Runs the policy update of a training step (the module docstring) on this rank's part of
    each mini-batch.

    Args:
        weights: the policy's weights: ``train_model`` trains, ``rollout_model`` (the current
            weights) recomputes the old logprobs (``old_logprobs_source() == "recompute"``).
        optimizer: ends each optimizer step.
        dist: the process group (global token counts and loss statistics are sums over it).
        algo: ``clip_low``, ``clip_high``, ``clip_c``, ``kl_coef``, ``ppo_epochs``,
            ``micro_batch_tokens``, ``old_logprobs``.
        temperature: the sampling temperature (logits are divided by it, as the sampler did).
        pad_id: the token id micro-batches are right-padded with.
        device: where micro-batches go.
        ref_model: the frozen reference policy of the KL penalty (``algo.kl_coef > 0``), or None.
        policy_loss: the fused policy loss, :func:`siri.ops.grpo_loss`'s signature.
    """

    def __init__(self, weights: PolicyWeights, optimizer: PolicyOptimizer, dist: DistContext, algo: AlgoConfig, *,
                 temperature: float, pad_id: int, device: torch.device, ref_model: torch.nn.Module | None = None,
                 policy_loss: Callable = grpo_loss):
        self.weights, self.optimizer, self.dist, self.algo = weights, optimizer, dist, algo
        self.temperature, self.pad_id, self.device = temperature, pad_id, device
        self.ref_model, self.policy_loss = ref_model, policy_loss

    def __call__(self, minis: list[list[Rollout]], train_step: int) -> UpdateStats:
        """PPO epochs over ``minis`` (this rank's rollouts of each mini-batch, the same number
        of mini-batches on every rank); ``train_step`` names the step in errors. Returns the
        mean of the optimizer steps' :class:`UpdateStats`."""
        rollouts = [r for mini in minis for r in mini]
        source = self.old_logprobs_source()
        if source == "engine":
            for r in rollouts:
                r.old_logprobs = torch.tensor(r.sample_logprobs, dtype=torch.float32)
        elif source == "recompute":
            # the rollout model holds the current weights (it is the policy, or its fresh copy)
            self.weights.rollout_model.eval()
            self._fill_logprobs(rollouts, self.weights.rollout_model, "old_logprobs")
        if self.ref_model is not None:
            self._fill_logprobs(rollouts, self.ref_model, "ref_logprobs")
        self.weights.train_model.train()
        total = UpdateStats()
        for _ in range(self.algo.ppo_epochs):
            for mini in minis:
                stats = self._optimizer_step(mini, train_step, old_from_forward=source == "forward")
                if stats is not None:
                    total = total + stats
        return total.mean()

    def old_logprobs_source(self) -> str:
        """Where this update's old logprobs come from: "engine", "recompute" or "forward" (the
        training forward's, detached), i.e. ``algo.old_logprobs`` with "auto" resolved: "forward"
        when the update is exactly on-policy (``ppo_epochs == mini_batches == 1``: no weight
        changes before the only forward, so it sees the policy that sampled), else "recompute"."""
        mode = self.algo.old_logprobs
        if mode == "auto":
            return "forward" if self.algo.ppo_epochs == 1 and self.algo.mini_batches == 1 else "recompute"
        return mode

    def _micro_batches(self, rollouts: list[Rollout]) -> Iterator[MicroBatch]:
        for indices in pack_by_token_budget([r.length for r in rollouts], self.algo.micro_batch_tokens):
            yield collate([rollouts[i] for i in indices], self.pad_id, self.device)

    @torch.no_grad()
    def _fill_logprobs(self, rollouts: list[Rollout], model: torch.nn.Module, name: str) -> None:
        """Set each rollout's ``name`` (``[len(response_ids)]`` float32) to ``model``'s logprobs of its response."""
        for mb in self._micro_batches(rollouts):
            logits = response_logits(model, mb.input_ids, mb.attention_mask, mb.response_mask)
            # the targets are the engine's draws, valid by construction: skip the check's sync
            mb.scatter(token_logprobs(logits, mb.response_targets, self.temperature, check_targets=False), name)

    def _optimizer_step(self, rollouts: list[Rollout], train_step: int, *,
                        old_from_forward: bool = False) -> UpdateStats | None:
        """One optimizer step on a mini-batch (this rank's ``rollouts`` plus the other ranks'
        parts), token-mean over all its response tokens. None when it has no tokens at all.
        ``old_from_forward``: the old logprobs are each micro-batch's own logits' (detached),
        not the rollouts' ``old_logprobs``."""
        a, weights = self.algo, self.weights
        num_tokens = int(self.dist.sum_values([float(sum(len(r.response_ids) for r in rollouts))])[0])
        if num_tokens == 0:
            return None
        loss_sum = 0.0
        stat_sums = dict.fromkeys(_LOSS_STATS, 0.0)
        batches = list(self._micro_batches(rollouts))
        if weights.sharded:
            # FSDP2 gathers and reduce-scatters in every forward/backward: every rank must run
            # as many micro-batches as the busiest one, so idle ranks run empty ones
            for _ in range(self.dist.all_reduce_max(len(batches)) - len(batches)):
                self._empty_backward()
        for mb in batches:
            # [N, V] logits of the response rows only: a fresh non-leaf tensor, so the fused
            # loss writes dlogits into its storage (no second logits-sized buffer)
            logits = response_logits(weights.train_model, mb.input_ids, mb.attention_mask, mb.response_mask)
            everywhere = torch.ones(logits.shape[:1], dtype=torch.bool, device=logits.device)
            # read before the loss: its backward overwrites the logits' storage with dlogits
            old = (token_logprobs(logits.detach(), mb.response_targets, self.temperature, check_targets=False)
                   if old_from_forward else mb.gather("old_logprobs"))
            loss, stats = self.policy_loss(
                logits, mb.response_targets, old, mb.response_advantages, everywhere,
                clip_low=a.clip_low, clip_high=a.clip_high, clip_c=a.clip_c, temperature=self.temperature,
                ref_logprobs=mb.gather("ref_logprobs") if self.ref_model is not None else None,
                kl_coef=a.kl_coef, num_tokens=num_tokens, return_entropy=True, check_targets=False)
            del logits
            # FSDP2 averages gradients over ranks; times world size makes that the sum
            (loss * self.dist.world_size if weights.sharded else loss).backward()
            weights.accumulate_gradients()
            loss_sum += float(loss.detach())
            share = float(stats.num_tokens) / num_tokens
            for key in _LOSS_STATS:
                stat_sums[key] += float(getattr(stats, key).detach()) * share
        fault_point("update")
        loss_sum, *stat_totals = self.dist.sum_values([loss_sum, *stat_sums.values()])
        grad_norm, applied = self.optimizer.step(loss_sum, train_step)
        return UpdateStats(loss=loss_sum, grad_norm=grad_norm, update_skipped=float(not applied),
                           train_tokens=float(num_tokens), **dict(zip(_LOSS_STATS, stat_totals)), optimizer_steps=1)

    def _empty_backward(self) -> None:
        """A forward/backward that changes no gradient: one pad token, loss times 0."""
        ids = torch.full((1, 1), self.pad_id, dtype=torch.long, device=self.device)
        (self.weights.train_model(input_ids=ids).logits.sum() * 0.0).backward()
