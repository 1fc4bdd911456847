"""Which prompt groups a step trains on: DAPO's dynamic sampling, with refill.

A group whose G rewards are all equal has zero advantage everywhere: it adds no gradient,
only tokens to the token-mean's denominator. DAPO drops the groups whose responses are all
right or all wrong and keeps sampling new prompts until the batch is full again.

Which groups count as "all equal" is ``algo.filter_metric`` (:func:`group_all_equal`):

- ``acc`` (the default; verl's DAPO ``filter_groups.metric: acc``): the responses'
  correctness flags (:func:`siri.rewards.correctness.is_correct` of the reward function's
  own score) are all equal. With length terms (an overlong buffer, a length reward) an
  all-wrong group shapes to distinct rewards; it is dropped all the same, so no step trains
  on the length signal alone.
- ``reward``: the shaped rewards (what the advantage is computed from) are all equal, i.e.
  only the groups with zero advantage are dropped.

Without length terms and with a 0/1 reward the two agree.

:class:`GroupCollector` keeps that account over a step's sampling rounds; the trainer
generates and scores each round, and every rank feeds the collector the same global flags,
so all ranks agree on the kept set.

Three modes (``algo.filter_equal_groups`` / ``algo.dynamic_sampling``); the two that drop
use the same ``algo.filter_metric`` flags:

- keep everything (neither): one round, every group trains in its own slot;
- drop without refill (``filter_equal_groups`` only): one round, equal groups are dropped and
  the step trains on fewer groups, each in the slot it was drawn for;
- drop and refill (``dynamic_sampling``): rounds of ``prompts_per_step`` new prompts until
  ``prompts_per_step`` unequal groups are kept or ``max_rounds`` rounds are drawn; kept groups
  fill slots 0, 1, ... in draw order, and surplus groups of the last round are discarded.

A slot ``k`` in ``0 .. target-1`` is a position in the step's batch; the trainer assigns it to
mini-batch ``k // (target // mini_batches)``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

from siri.rewards.correctness import is_correct

__all__ = ["FILTER_METRICS", "GroupCollector", "KeptGroup", "group_all_equal"]

FILTER_METRICS = ("acc", "reward")
"""Values of ``algo.filter_metric``."""


def group_all_equal(rewards: Sequence[float], correctness: Sequence[float], metric: str = "acc") -> bool:
    """Whether one prompt group is "all equal" under ``metric``, i.e. dropped by the filter.

    Args:
        rewards: the group's shaped rewards (correctness plus length terms).
        correctness: the reward function's own scores, same order.
        metric: ``"acc"``: the correctness flags (``is_correct``) are all equal (all right or
            all wrong); ``"reward"``: the shaped rewards are all equal.

    Raises:
        ValueError: an unknown ``metric``.
    """
    if metric == "acc":
        values: set = {is_correct(score) for score in correctness}
    elif metric == "reward":
        values = set(rewards)
    else:
        raise ValueError(f"filter_metric must be one of {list(FILTER_METRICS)}, got {metric!r}")
    return len(values) <= 1


@dataclass
class KeptGroup:
    """A group that trains: its ``slot`` in the step's batch, the sampling ``round`` and the
    ``index`` of its prompt within that round, and this rank's rollouts of it (None when
    another rank generated it)."""

    slot: int
    round: int
    index: int
    rollouts: Any = None


@dataclass
class GroupCollector:
    """Accumulates a step's kept groups over sampling rounds.

    Args:
        target: groups per step (``rollout.prompts_per_step``).
        drop_equal: drop the groups flagged all equal (:func:`group_all_equal`).
        refill: draw further rounds until ``target`` groups are kept (needs ``drop_equal``).
        max_rounds: the most rounds a step draws (>= 1).
    """

    target: int
    drop_equal: bool = False
    refill: bool = False
    max_rounds: int = 1
    rounds: int = 0
    drawn: int = 0
    kept: list[KeptGroup] = field(default_factory=list)

    def __post_init__(self):
        if self.target < 1 or self.max_rounds < 1:
            raise ValueError(f"GroupCollector: target and max_rounds must be >= 1, got {self.target}, "
                             f"{self.max_rounds}")
        if self.refill and not self.drop_equal:
            raise ValueError("GroupCollector: refill only makes sense when equal groups are dropped")

    def add_round(self, all_equal: list[bool], local: dict[int, Any]) -> None:
        """Record one round.

        Args:
            all_equal: for every group of the round, in draw order, whether it is all equal
                (:func:`group_all_equal`; the same list on every rank).
            local: this rank's rollouts by group index within the round.
        """
        if self.done:
            raise RuntimeError("GroupCollector: the step's batch is already complete")
        round_index, self.rounds = self.rounds, self.rounds + 1
        self.drawn += len(all_equal)
        for index, equal in enumerate(all_equal):
            if self.drop_equal and equal:
                continue
            if self.refill:
                if len(self.kept) == self.target:
                    break             # surplus of the last round
                slot = len(self.kept)
            else:
                slot = index
            self.kept.append(KeptGroup(slot, round_index, index, local.get(index)))

    @property
    def done(self) -> bool:
        """No further round is wanted: one round without refill; with refill, a full batch or
        ``max_rounds`` rounds drawn."""
        if self.rounds == 0:
            return False
        if not self.refill:
            return True
        return len(self.kept) >= self.target or self.rounds >= self.max_rounds

    @property
    def discarded(self) -> int:
        """Groups drawn but not trained on (all equal, or surplus of the last round)."""
        return self.drawn - len(self.kept)

    def stats(self) -> dict[str, float]:
        """Metrics of the step: sampling_rounds, groups_drawn, groups_discarded, groups_trained."""
        return {"sampling_rounds": self.rounds, "groups_drawn": self.drawn, "groups_discarded": self.discarded,
                "groups_trained": len(self.kept)}
