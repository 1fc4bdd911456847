"""Scoring one sampling round: from sampled responses to rewards and advantages.

A round's rollouts are group-major (prompt k's G responses at ``k*G .. k*G+G-1``).
:meth:`RolloutScorer.score` fills in, for each one:

1. ``text``: the response decoded (special tokens skipped);
2. the reward terms' scores of it, as a :class:`siri.rewards.reward_input.RewardInput` (the
   text, the group's prompt, answer and dataset row, the finish reason, the step), run by a
   :class:`siri.rewards.reward_scorer.RewardScorer` (in process or in worker processes). A
   response cut at the cap (finish_reason ``"length"``) scores ``reward.truncated_reward``
   without a call when that is set. A call that raises, times out, crashes its worker or
   returns NaN scores 0 and is counted in :class:`RewardFailures`. ``correctness`` is the
   correctness term's own score;
3. ``reward``: the weighted sum of the terms plus the configured length terms
   (:func:`siri.rewards.length_shaping.shape_rewards`);
4. ``advantage``: the reward normalised within its group (:func:`siri.ops.group_advantages`).

What every rank then learns of each response is ``siri.algo.step_samples.SampleStats``.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch

from siri.algo.rollout_batch import Rollout
from siri.algo.step_samples import RewardFailures, ScoredRound
from siri.config import Config
from siri.ops.group_advantages import group_advantages
from siri.rewards.length_shaping import LengthShaping, shape_rewards
from siri.rewards.reward_input import RewardInput
from siri.rewards.reward_scorer import RewardScorer

__all__ = ["RolloutScorer"]


class RolloutScorer:
    """Decodes, scores, shapes and turns into advantages the rollouts of a round (steps 1-4 of
    the module docstring).

    Args:
        tokenizer: decodes response ids (``decode(ids, skip_special_tokens=True)``).
        scorer: runs the reward terms (:func:`siri.rewards.reward_scorer.make_scorer`); the
            caller owns it and closes it.
        group_size: G, the responses per prompt (``rollout.group_size``).
        truncated_reward: the score of a truncated response, given without calling the reward
            function (``reward.truncated_reward``); None: truncated responses are scored too.
        length_shaping: the length terms added to the scores (:class:`LengthShaping`).
        advantage_eps, advantage_scale: ``algo.advantage_eps`` / ``algo.advantage_scale``
            (see :func:`siri.ops.group_advantages`).
    """

    def __init__(self, tokenizer: Any, scorer: RewardScorer, *, group_size: int, truncated_reward: float | None,
                 length_shaping: LengthShaping, advantage_eps: float, advantage_scale: str):
        self.tokenizer, self.scorer, self.group_size = tokenizer, scorer, group_size
        self.truncated_reward, self.length_shaping = truncated_reward, length_shaping
        self.advantage_eps, self.advantage_scale = advantage_eps, advantage_scale

    @classmethod
    def from_config(cls, cfg: Config, tokenizer: Any, scorer: RewardScorer) -> RolloutScorer:
        """The scorer a run's ``rollout``, ``reward`` and ``algo`` settings describe."""
        rc = cfg.reward
        shaping = LengthShaping(rc.overlong_buffer, rc.overlong_penalty, rc.length_reward, rc.length_reward_weight,
                                rc.length_target)
        return cls(tokenizer, scorer, group_size=cfg.rollout.group_size, truncated_reward=rc.truncated_reward,
                   length_shaping=shaping, advantage_eps=cfg.algo.advantage_eps,
                   advantage_scale=cfg.algo.advantage_scale)

    def score(self, rollouts: list[Rollout], examples: Sequence[Any], cap: int, step: int | None = None
              ) -> ScoredRound:
        """Fill in each rollout's ``text``, ``correctness``, ``reward`` and ``advantage``.

        Args:
            rollouts: ``len(examples) * G`` rollouts, group-major.
            examples: each group's prompt: ``answer``, and ``prompt`` and ``row`` where it has
                them (``siri.data.PromptExample``), handed to the reward functions.
            cap: the step's cap (the length terms read it).
            step: the training step, handed to the reward functions.

        Returns:
            The rollouts split into their ``len(examples)`` groups, the round's failed reward
            calls, and each term's scores when the terms are reported.
        """
        g = self.group_size
        for r in rollouts:
            r.text = self.tokenizer.decode(r.response_ids, skip_special_tokens=True)
        scored = self.scorer.score([RewardInput.for_example(r.text, examples[i // g], r.finish_reason, step=step)
                                    for i, r in enumerate(rollouts)], truncated_reward=self.truncated_reward)
        for r, value in zip(rollouts, scored.correctness):
            r.correctness = value
        shaped = shape_rewards(scored.rewards, [len(r.response_ids) for r in rollouts], cap, g, self.length_shaping,
                               correctness=scored.correctness)
        # [groups * G] float32 -> [groups * G] float32
        advantages = group_advantages(torch.tensor(shaped, dtype=torch.float32), g, self.advantage_eps,
                                      scale=self.advantage_scale)
        for r, reward, advantage in zip(rollouts, shaped, advantages.tolist()):
            r.reward, r.advantage = reward, advantage
        terms: list[list[dict[str, float]]] = []
        if self.scorer.terms.report_terms:
            per_rollout = [{name: column[i] for name, column in scored.terms.items()} for i in range(len(rollouts))]
            terms = [per_rollout[k * g:(k + 1) * g] for k in range(len(examples))]
        return ScoredRound([rollouts[k * g:(k + 1) * g] for k in range(len(examples))],
                           RewardFailures(scored.errors, scored.timeouts, scored.replaced_workers), terms)
