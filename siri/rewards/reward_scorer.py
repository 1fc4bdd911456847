"""Scoring responses with a run's reward terms: :class:`RewardScorer` (built by
:func:`make_scorer`), the one interface training, evaluation during training and ``siri eval``
score through.

Where each term runs:

==========================================  ==============================================
term                                        runs
==========================================  ==============================================
``"module:function"``, ``reward.workers``   in the worker processes of one shared
>= 1                                        ``siri.rewards.pool.RewardPool`` (per-item
                                            ``timeout_s``, plus a hard deadline that kills
                                            and replaces a stuck worker)
``"module:function"``, ``workers: 0``;      in this process, one response at a time
a callable handed over from Python          (``timeout_s`` by SIGALRM, main thread only)
``batched: true``                           in this process, one call with lists per
                                            ``score`` call (a reward model or LLM judge
                                            batches on the GPU); no time limit
==========================================  ==============================================

A term that fails for a response (raises, times out, crashes its worker, returns a non-number)
scores 0 there and is counted (``ScoreResult.errors``...), whichever way it runs.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Callable, Sequence

from siri.rewards.pool import RewardPool, check_workers
from siri.rewards.reward_input import RewardInput, as_reward_input
from siri.rewards.scoring import (DEFAULT_GRACE_S, ClosingContext, ScoreItem, ScoreResult, check_timeout,
                                  score_batched, score_serially)
from siri.rewards.terms import RewardTerms

__all__ = ["CorrectnessJudge", "RewardScorer", "TermScores", "correctness_scores", "make_scorer"]

_WARNED_ERRORS = 3


@dataclass
class TermScores(ScoreResult):
    """The outcome of scoring with every term (or only the correctness term).

    Attributes:
        rewards (list[float]): per item, the weighted sum of the terms' scores (a truncated
            item given ``truncated_reward``: that value).
        correctness (list[float]): per item, the correctness term's own score (unweighted;
            ``truncated_reward`` likewise), what ``siri.rewards.is_correct`` reads.
        terms (dict[str, list[float]]): per term that ran, by name, its own score of each item;
            NaN for an item it was not called on (truncated, given ``truncated_reward``).
        errors, timeouts, crashes, replaced_workers, error_samples: summed over the terms
            (see :class:`siri.rewards.scoring.ScoreResult`).
    """

    correctness: list[float] = field(default_factory=list)
    terms: dict[str, list[float]] = field(default_factory=dict)

    def merge(self, part: ScoreResult) -> None:
        """Add the failure counts of one term's ``part`` (already warned about there)."""
        self.errors += part.errors
        self.timeouts += part.timeouts
        self.crashes += part.crashes
        self.replaced_workers += part.replaced_workers
        self.error_samples += part.error_samples[:_WARNED_ERRORS - len(self.error_samples)]


class RewardScorer(ClosingContext):
    """Scores responses with every term of a reward (see the module docstring for where each
    runs). Use it as a context manager, or call ``close()``, to stop the worker processes.

    Args:
        terms: the reward terms (:class:`siri.rewards.terms.RewardTerms`).
        workers: ``reward.workers``: 0 runs every term in this process; >= 1 starts that many
            worker processes for the importable per-response terms (none: no pool).
        timeout_s: per-item limit in seconds (> 0) of per-response terms, or None for none.
        grace_s: pool only: a worker still busy ``timeout_s + grace_s`` after it got an item
            is killed and replaced.

    Raises:
        ValueError: a bad argument, or a term that cannot be loaded (one line, naming it).
    """

    def __init__(self, terms: RewardTerms, workers: int, timeout_s: float | None, *,
                 grace_s: float = DEFAULT_GRACE_S):
        self.terms = terms
        self.timeout_s = check_timeout(timeout_s)
        pooled = [k for k, t in enumerate(terms.terms) if t.importable and not t.batched] if check_workers(workers) else []
        self.placements = ["pool" if k in pooled else "batched" if t.batched else "in-process"
                           for k, t in enumerate(terms.terms)]
        """Per term, where it runs: ``"pool"``, ``"in-process"`` or ``"batched"``."""
        runners: list[Callable[[list], ScoreResult] | None] = [
            None if where == "pool" else partial(score_batched, t.bound()) if where == "batched"
            else partial(score_serially, t.bound(), timeout_s=self.timeout_s)
            for t, where in zip(terms.terms, self.placements)]
        self.pool: RewardPool | None = None
        if pooled:   # started last, once every in-process term has loaded
            self.pool = pool = RewardPool([str(terms.terms[k].fn) for k in pooled], workers, self.timeout_s,
                                          grace_s=grace_s)
            for slot, k in enumerate(pooled):
                runners[k] = partial(_score_in_pool, pool, slot, terms.terms[k].bound().inputs)
        self._runners = runners

    def score(self, items: Sequence[ScoreItem], *, truncated_reward: float | None = None,
              correctness_only: bool = False) -> TermScores:
        """Score ``items`` (RewardInputs, or ``(response, reference, finish_reason)`` tuples).

        Args:
            items: the responses.
            truncated_reward: when not None, an item with finish_reason ``"length"`` is not
                scored by any term: its reward and correctness are this value
                (``reward.truncated_reward``).
            correctness_only: run only the correctness term (what evaluation needs);
                ``rewards`` then holds its weighted score.

        Returns:
            A :class:`TermScores`, in input order.
        """
        start = time.perf_counter()
        inputs = [as_reward_input(item) for item in items]
        called = [i for i, x in enumerate(inputs) if truncated_reward is None or x.finish_reason != "length"]
        fill = 0.0 if truncated_reward is None else float(truncated_reward)
        result = TermScores(rewards=[fill] * len(inputs), correctness=[fill] * len(inputs))
        combined = [0.0] * len(called)
        chosen = [self.terms.correctness_index] if correctness_only else range(len(self.terms.terms))
        for k in chosen:
            term = self.terms.terms[k]
            runner = self._runners[k]
            assert runner is not None, "every term has a runner once the scorer is built"
            part = runner([inputs[i] for i in called]) if called else ScoreResult([])
            result.merge(part)
            column = [math.nan] * len(inputs)
            for i, value in zip(called, part.rewards):
                column[i] = value
            result.terms[str(term.name)] = column
            if k == self.terms.correctness_index:
                for i, value in zip(called, part.rewards):
                    result.correctness[i] = value
            combined = [total + term.weight * value for total, value in zip(combined, part.rewards)]
        for i, value in zip(called, combined):
            result.rewards[i] = value
        result.seconds = time.perf_counter() - start
        return result

    def close(self) -> None:
        """Stop the worker processes (if any). Idempotent."""
        if self.pool is not None:
            self.pool.close()


def _score_in_pool(pool: RewardPool, term: int, fields: tuple[str, ...], items: list[RewardInput]) -> ScoreResult:
    """``pool.score(items, term)``, sending only the prompt and row a term reads (a row may be
    long, and every response of a group would carry it through a pipe)."""
    return pool.score([item.keeping(fields) for item in items], term=term)


def make_scorer(reward: Any, workers: int, timeout_s: float | None, *,
                grace_s: float = DEFAULT_GRACE_S) -> RewardScorer:
    """The scorer of ``reward``.

    Args:
        reward: :class:`siri.rewards.terms.RewardTerms` (``RewardTerms.from_config``), or
            what ``RewardTerms.of`` takes: a ``"package.module:function"`` string, a
            callable, or a list of terms.
        workers: 0 scores in this process; >= 1 starts that many worker processes for the
            importable, per-response terms.
        timeout_s: per-item limit in seconds (> 0), or None for none.
        grace_s: pool only: a worker still busy ``timeout_s + grace_s`` after it got an item
            is killed and replaced.

    Returns:
        A :class:`RewardScorer` (``score(items) -> TermScores``, ``close()``, a context
        manager).

    Raises:
        ValueError: a bad argument, or a reward that cannot be loaded (one line, naming it).
    """
    return RewardScorer(RewardTerms.of(reward), workers, timeout_s, grace_s=grace_s)


@dataclass(frozen=True)
class CorrectnessJudge:
    """Correctness scores the way evaluation asks for them: the correctness term of
    ``scorer``, and ``truncated_reward`` (when not None) for a response cut at the cap.

    Attributes:
        scorer: the reward's scorer (during training: the trainer's, sharing its workers).
        truncated_reward: the score of a truncated response, given without a call; None:
            truncated responses are scored too.
    """

    scorer: RewardScorer
    truncated_reward: float | None = None

    @classmethod
    def of(cls, reward: Any, truncated_reward: float | None = None) -> CorrectnessJudge:
        """A judge of ``reward``: a RewardScorer, or anything :func:`make_scorer` takes (then
        scored in this process)."""
        scorer = reward if isinstance(reward, RewardScorer) else make_scorer(reward, 0, None)
        return cls(scorer, truncated_reward)

    def scores(self, items: Sequence[ScoreItem]) -> list[float]:
        """The correctness term's score of each item (0 where it failed)."""
        return self.scorer.score(items, truncated_reward=self.truncated_reward, correctness_only=True).correctness


def correctness_scores(reward: Any, items: Sequence[ScoreItem]) -> list[float]:
    """Each item's correctness score under ``reward`` (``siri.rewards.is_correct`` reads it).

    Args:
        reward: a :class:`CorrectnessJudge`, a :class:`RewardScorer` (its correctness term),
            or a reward function in any form ``siri.rewards.binding`` accepts (or a list of
            terms; scored in this process).
        items: RewardInputs or ``(response, reference, finish_reason)`` tuples.
    """
    judge = reward if isinstance(reward, CorrectnessJudge) else CorrectnessJudge.of(reward)
    return judge.scores(items)
