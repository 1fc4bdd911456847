"""Scoring many responses with one reward function: the shared result type, the per-item
timeout and error handling, the serial (in-process) path and the batched one. The pool of
worker processes (``siri.rewards.pool``) builds on these, and
``siri.rewards.reward_scorer.make_scorer`` puts a run's reward terms on them.

Every path gives the same rewards for the same calls: a reward that raises, times out or
returns something that is not a finite number scores 0.0 and is counted in
``ScoreResult.errors``; the first three errors of a call are also reported with
``warnings.warn``. Items are :class:`siri.rewards.reward_input.RewardInput` objects (or
``(response, reference, finish_reason)`` tuples), and the reward function is called with the
fields it declares (``siri.rewards.binding``).
"""
from __future__ import annotations

import math
import signal
import threading
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol, Sequence, Union

from siri.rewards.binding import BoundReward, bind_reward
from siri.rewards.loader import load_reward_fn
from siri.rewards.reward_input import RewardInput, as_reward_input

__all__ = ["DEFAULT_GRACE_S", "ScoreItem", "ScoreResult", "Scorer", "SerialScorer", "call_with_timeout",
           "score_batched", "score_serially"]

ScoreItem = Union[RewardInput, tuple[str, str, str]]
"""One response to score: a RewardInput, or ``(response_text, reference, finish_reason)``."""

DEFAULT_GRACE_S = 2.0
"""Seconds a pool worker gets beyond ``timeout_s`` before the parent kills it."""

_WARNED_ERRORS = 3


class _RewardTimeout(TimeoutError):
    """The ``TimeoutError`` raised by ``call_with_timeout`` itself (not one the reward raised)."""


def call_with_timeout(fn: Callable, args: tuple, seconds: float | None):
    """``fn(*args)``, raising TimeoutError after ``seconds`` (SIGALRM; main thread only, as
    signals are; elsewhere, or with ``seconds`` None/0, no limit).

    The limit is a ``setitimer(ITIMER_REAL)`` whose handler raises in the main thread, so it
    interrupts Python code and sleeps but not a long call inside C code, and a reward that
    arms its own alarm (math-verify's ``signal.alarm``) replaces or cancels it. The pool's
    per-task deadline (``siri.rewards.pool``) is the limit that always holds."""
    if not seconds or threading.current_thread() is not threading.main_thread():
        return fn(*args)

    def expire(signum, frame):
        raise _RewardTimeout(f"reward function took longer than {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        return fn(*args)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@dataclass
class ScoreResult:
    """The outcome of scoring a list of items.

    Attributes:
        rewards (list[float]): one finite reward per item, in input order; 0.0 for an item
            that failed (raised, timed out, returned a non-number or NaN/inf, or whose worker
            process died).
        errors (int): items that failed, all causes together (so ``errors >= timeouts +
            crashes``).
        timeouts (int): failed items that ran past ``timeout_s`` (``call_with_timeout``'s
            SIGALRM fired) or past the pool's hard deadline ``timeout_s + grace_s`` (the worker
            was killed).
        crashes (int): failed items whose worker process died while scoring them (``os._exit``,
            a segfault, an uncaught ``SystemExit``...).
        replaced_workers (int): worker processes started during the call to replace one that
            was killed or died (0 on the serial path).
        seconds (float): wall-clock time of the call.
        error_samples (list[str]): ``"ExceptionType: message"`` of the first three errors.
    """

    rewards: list[float]
    errors: int = 0
    timeouts: int = 0
    crashes: int = 0
    replaced_workers: int = 0
    seconds: float = 0.0
    error_samples: list[str] = field(default_factory=list)

    def add_error(self, description: str, *, timeout: bool = False, crash: bool = False) -> None:
        """Count one failed item (its reward must already be 0.0); warn for the first three.

        Args:
            description: ``"ExceptionType: message"``.
            timeout: the item ran out of time.
            crash: the item's worker process died.
        """
        self.errors += 1
        self.timeouts += timeout
        self.crashes += crash
        if len(self.error_samples) < _WARNED_ERRORS:
            self.error_samples.append(description)
            warnings.warn(f"reward function failed ({description}); the response scores 0", stacklevel=3)


def score_one(fn: BoundReward, item: RewardInput, timeout_s: float | None) -> tuple[float, str | None, bool]:
    """Call ``fn(item)`` under ``call_with_timeout`` and check what it returns.

    Returns:
        ``(reward, error, timed_out)``: the reward as a finite float and None, or 0.0 and
        ``"ExceptionType: message"`` when the call raised (any ``Exception``), timed out, or
        returned a non-number or a non-finite number; ``timed_out`` says whether
        ``call_with_timeout``'s own limit fired. Exceptions that are not ``Exception``
        (``SystemExit``, ``KeyboardInterrupt``) propagate.
    """
    try:
        return _finite(call_with_timeout(fn, (item,), timeout_s)), None, False
    except Exception as e:  # noqa: BLE001 - a user's reward must not kill a days-long run
        timed_out = isinstance(e, _RewardTimeout)
        return 0.0, f"{'TimeoutError' if timed_out else type(e).__name__}: {e}", timed_out


def _finite(value: Any) -> float:
    """``value`` as a finite float, else TypeError / ValueError saying what it was."""
    if isinstance(value, (str, bytes, bytearray)):
        raise TypeError(f"reward function returned {type(value).__name__} {value!r:.60}, not a number")
    reward = float(value)
    if not math.isfinite(reward):
        raise ValueError(f"reward function returned {reward}")
    return reward


def score_serially(reward_fn: Callable, items: Sequence[ScoreItem], timeout_s: float | None) -> ScoreResult:
    """Score ``items`` one by one in this thread.

    Args:
        reward_fn: a reward function in any form ``siri.rewards.binding`` accepts, or a
            ``BoundReward``.
        items: RewardInputs or ``(response_text, reference, finish_reason)`` tuples.
        timeout_s: per-item limit (``call_with_timeout``: SIGALRM, main thread only); None
            or 0: none.

    Returns:
        A ``ScoreResult`` (``crashes`` and ``replaced_workers`` are 0): failures score 0.0,
        are counted, and the first three are warned about.

    Raises:
        ValueError: ``reward_fn`` cannot be bound (``bind_reward``).
    """
    start = time.perf_counter()
    fn = bind_reward(reward_fn)
    result = ScoreResult(rewards=[0.0] * len(items))
    for i, item in enumerate(items):
        reward, error, timed_out = score_one(fn, as_reward_input(item), timeout_s)
        result.rewards[i] = reward
        if error is not None:
            result.add_error(error, timeout=timed_out)
    result.seconds = time.perf_counter() - start
    return result


def score_batched(reward_fn: Callable, items: Sequence[ScoreItem]) -> ScoreResult:
    """Score ``items`` with one call of a batched reward function, in this thread.

    The function gets one list per input it declares (``BoundReward.call_batch``) and must
    return a sequence of numbers, one per item. A call that raises, or returns something that
    is not a sequence of ``len(items)`` entries, scores every item 0.0 and counts each as an
    error; an entry that is not a finite number scores 0.0 and counts as one. The call has no
    time limit: a reward model's batch may take long, and a signal cannot stop a GPU call.
    An empty ``items`` makes no call.

    Raises:
        ValueError: ``reward_fn`` cannot be bound (``bind_reward``).
    """
    start = time.perf_counter()
    fn = bind_reward(reward_fn)
    inputs = [as_reward_input(item) for item in items]
    result = ScoreResult(rewards=[0.0] * len(inputs))
    if not inputs:
        return result
    try:
        values = list(fn.call_batch(inputs))
        if len(values) != len(inputs):
            raise ValueError(f"batched reward function {fn.name!r} returned {len(values)} values for "
                             f"{len(inputs)} responses")
    except Exception as e:  # noqa: BLE001 - a user's reward must not kill a days-long run
        for _ in inputs:
            result.add_error(f"{type(e).__name__}: {e}")
        result.seconds = time.perf_counter() - start
        return result
    for i, value in enumerate(values):
        try:
            result.rewards[i] = _finite(value)
        except Exception as e:  # noqa: BLE001 - as above
            result.add_error(f"{type(e).__name__}: {e}")
    result.seconds = time.perf_counter() - start
    return result


class Scorer(Protocol):
    """Scores a list of items: ``SerialScorer``, ``RewardPool`` and
    ``siri.rewards.reward_scorer.RewardScorer`` (which ``make_scorer`` returns)."""

    def score(self, items: Sequence[ScoreItem]) -> ScoreResult: ...

    def close(self) -> None: ...


class ClosingContext:
    """``with scorer: ...`` calls ``scorer.close()`` on the way out."""

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class SerialScorer(ClosingContext):
    """Scores in the caller's thread with ``score_serially`` (``reward.workers: 0``, and
    reward callables handed over from Python).

    Args:
        reward: the reward, ``"package.module:function"`` (``load_reward_fn``) or a callable,
            in any form ``siri.rewards.binding`` accepts (a ValueError names what is wrong).
        timeout_s: per-item limit in seconds (SIGALRM: enforced only when ``score`` runs in
            the main thread), or None for none.
    """

    def __init__(self, reward: str | Callable, timeout_s: float | None):
        self.timeout_s = check_timeout(timeout_s)
        self.reward_fn = bind_reward(load_reward_fn(reward) if isinstance(reward, str) else reward,
                                     reward if isinstance(reward, str) else None)

    def score(self, items: Sequence[ScoreItem]) -> ScoreResult:
        """``score_serially(reward_fn, items, timeout_s)``."""
        return score_serially(self.reward_fn, items, self.timeout_s)


def check_timeout(timeout_s: float | None, name: str = "timeout_s") -> float | None:
    """``timeout_s`` if it is None (no limit) or a finite number > 0, else a one-line
    ValueError naming the argument ``name``."""
    if timeout_s is None:
        return None
    if isinstance(timeout_s, bool) or not isinstance(timeout_s, (int, float)) or not 0 < timeout_s < math.inf:
        raise ValueError(f"{name} must be > 0 seconds or None (no limit), got {timeout_s!r}")
    return float(timeout_s)
