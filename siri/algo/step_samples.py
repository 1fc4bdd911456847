"""What every rank knows about a training step's scored samples.

Each rank generates and scores its own prompt groups (``siri.algo.rollout_scoring``). The
group filter (``siri.algo.dynamic_sampling``) and the step's metrics (``siri.train.metrics``) need
every group, so after each sampling round the ranks exchange a small summary of each response,
:class:`SampleStats`, and :class:`StepSamples` keeps them for the step, with each group's
all-equal flag and the failed reward calls (:class:`RewardFailures`). A round's scoring hands
them over as a :class:`ScoredRound`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence

from siri.algo.dynamic_sampling import KeptGroup, group_all_equal
from siri.algo.rollout_batch import Rollout
from siri.train.distributed import DistContext
from siri.rewards.correctness import is_correct

__all__ = ["RewardFailures", "SampleStats", "ScoredRound", "StepSamples"]


@dataclass(frozen=True)
class SampleStats:
    """One scored response, as the step's metrics and the group filter see it.

    Attributes:
        num_tokens (int): the response's token count, its stop token included (``== cap`` for
            a truncated response).
        reward (float): the shaped reward (correctness plus length terms), which the
            advantage is computed from.
        finish_reason (str): ``"stop"`` or ``"length"`` (cut at the cap).
        correctness (float): the correctness term's own score (``reward.truncated_reward``
            for a truncated response); :func:`siri.rewards.correctness.is_correct` reads it.
        terms (Mapping[str, float]): with several reward terms reported (``reward.fns``):
            each term's own score, by name (NaN where the term was not called: a truncated
            response given ``reward.truncated_reward``); else empty.
    """

    num_tokens: int
    reward: float
    finish_reason: str
    correctness: float
    terms: Mapping[str, float] = field(default_factory=dict)

    @classmethod
    def of(cls, rollout: Rollout, terms: Mapping[str, float] | None = None) -> SampleStats:
        """The statistics of a scored rollout (``RolloutScorer.score`` filled it in), with its
        reward terms' scores when they are reported."""
        return cls(len(rollout.response_ids), rollout.reward, rollout.finish_reason, rollout.correctness,
                   dict(terms or {}))

    @property
    def truncated(self) -> bool:
        """Cut at the cap."""
        return self.finish_reason == "length"

    @property
    def correct(self) -> bool:
        """Right by the one correctness rule (``is_correct`` of ``correctness``)."""
        return is_correct(self.correctness)


@dataclass(frozen=True)
class RewardFailures:
    """Reward calls that failed (each scored 0). Counts add up over rounds and ranks with ``+``.

    Attributes:
        errors (int): failed calls, all causes together.
        timeouts (int): failed calls that ran past ``reward.timeout_s``.
        workers_replaced (int): worker processes killed at the deadline or dead, and replaced.
    """

    errors: int = 0
    timeouts: int = 0
    workers_replaced: int = 0

    def __add__(self, other: RewardFailures) -> RewardFailures:
        return RewardFailures(self.errors + other.errors, self.timeouts + other.timeouts,
                              self.workers_replaced + other.workers_replaced)


@dataclass
class ScoredRound:
    """This rank's scored rollouts of one sampling round (``RolloutScorer.score``).

    Attributes:
        groups: the rollouts split into their prompt groups, in the order of the round's prompts.
        failures: the round's failed reward calls.
        terms: per group, per rollout, each reward term's own score by name (see
            :attr:`SampleStats.terms`); empty when terms are not reported.
    """

    groups: list[list[Rollout]]
    failures: RewardFailures = RewardFailures()
    terms: list[list[dict[str, float]]] = field(default_factory=list)

    def stats(self) -> list[list[SampleStats]]:
        """Each group's :class:`SampleStats`."""
        terms = self.terms or [[{}] * len(group) for group in self.groups]
        return [[SampleStats.of(r, t) for r, t in zip(group, group_terms)]
                for group, group_terms in zip(self.groups, terms)]


@dataclass
class StepSamples:
    """Every rank's scored samples of one step, gathered round by round (:meth:`add_round`).

    Attributes:
        filter_metric: ``algo.filter_metric``, what makes a group all equal
            (:func:`siri.algo.dynamic_sampling.group_all_equal`).
        groups: ``(round, group index in the round) -> the group's G SampleStats``, in draw order.
        all_equal: each drawn group's all-equal flag, in draw order (the same on every rank, so
            every rank keeps the same groups).
        failures: the step's failed reward calls, summed over rounds and ranks.
    """

    filter_metric: str
    groups: dict[tuple[int, int], list[SampleStats]] = field(default_factory=dict)
    all_equal: list[bool] = field(default_factory=list)
    failures: RewardFailures = RewardFailures()

    def add_round(self, dist: DistContext, sampling_round: int, owned: Sequence[int],
                  scored: ScoredRound) -> list[bool]:
        """Gather one round from every rank (a collective: every rank calls it).

        Args:
            dist: the process group.
            sampling_round: the round's index within the step.
            owned: the round's group indices this rank generated (``owned_groups``).
            scored: this rank's scored rollouts of those groups (same order) and its failed
                reward calls of the round.

        Returns:
            The all-equal flag of every group of the round, in group order.
        """
        mine = list(zip(owned, scored.stats()))
        parts = dist.all_gather_objects((mine, scored.failures))
        ordered = sorted((item for part, _ in parts for item in part), key=lambda item: item[0])
        equal = [group_all_equal([s.reward for s in group], [s.correctness for s in group], self.filter_metric)
                 for _, group in ordered]
        self.groups.update({(sampling_round, i): group for i, (_, group) in enumerate(ordered)})
        self.all_equal += equal
        self.failures = sum((counts for _, counts in parts), self.failures)
        return equal

    def drawn(self) -> list[SampleStats]:
        """Every sample of the step (all rounds, every rank), in draw order."""
        return [sample for group in self.groups.values() for sample in group]

    def trained(self, kept: Iterable[KeptGroup]) -> list[SampleStats]:
        """The samples of the groups that train (``GroupCollector.kept``)."""
        return [sample for group in kept for sample in self.groups[(group.round, group.index)]]
