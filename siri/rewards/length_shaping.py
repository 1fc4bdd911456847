"""Length terms added to the correctness reward: the length-control methods of the
efficient-reasoning literature, as pure functions of response lengths.

SIRI itself needs none of them: its pressure comes from the scheduled cap (a truncated
response scores ``reward.truncated_reward``). They are here so SIRI can be compared with its
peers on one engine, and combined with it:

=================  ==========================================  =================================
function           method (paper)                              what it rewards
=================  ==========================================  =================================
overlong_penalty   DAPO soft overlong punishment (2503.14476)  a linear penalty in the last
                                                               ``buffer`` tokens before the cap
kimi_length        Kimi k1.5 length reward (2501.12599)        shorter than the group's others
l1_target          L1 / LCPO-Exact (2503.04697)                closeness to a target length
=================  ==========================================  =================================

Every length is a response's token count including its stop token (what the engine
returns), so ``length == cap`` for a response cut at the cap.

``reward.length_reward`` names an entry of the registry :data:`LENGTH_REWARDS` (its terms,
its paper's weight, whether it needs ``reward.length_target``); the config's allowed values
and validation read it, so a new method is one entry there.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from siri.rewards.correctness import is_correct

__all__ = ["LENGTH_REWARDS", "LengthReward", "LengthShaping", "kimi_length", "l1_target", "overlong_penalty",
           "shape_rewards"]


def overlong_penalty(length: int, cap: int, buffer: int, factor: float = 1.0) -> float:
    """DAPO's soft overlong punishment: 0 up to ``cap - buffer`` tokens, then falling
    linearly by ``factor / buffer`` per token, to ``-factor`` at ``cap`` (a response cut at
    the cap gets the whole penalty). ``buffer`` 0 gives 0 everywhere.

    Since ``cap`` is the step's cap, the penalty zone follows the length schedule."""
    if buffer <= 0:
        return 0.0
    excess = length - (cap - buffer)
    return -factor * min(max(excess, 0), buffer) / buffer


def kimi_length(lengths: list[int], correct: list[bool]) -> list[float]:
    """Kimi k1.5's length reward over one prompt's group of responses.

    ``lam_i = 0.5 - (len_i - min_len) / (max_len - min_len)``, so the shortest response gets
    0.5 and the longest -0.5; a correct response receives ``lam_i``, a wrong one
    ``min(0, lam_i)`` (short wrong answers are not encouraged). A group whose responses all
    have one length gets 0 for all.
    """
    if len(lengths) != len(correct):
        raise ValueError(f"kimi_length: {len(lengths)} lengths but {len(correct)} correctness flags")
    low, high = min(lengths), max(lengths)
    if high == low:
        return [0.0] * len(lengths)
    lams = [0.5 - (n - low) / (high - low) for n in lengths]
    return [lam if ok else min(0.0, lam) for lam, ok in zip(lams, correct)]


def l1_target(length: int, target: int) -> float:
    """L1's LCPO-Exact length term, ``-|target - length|`` in tokens (the paper weights it
    by alpha = 0.0003 and adds it to the 0/1 correctness)."""
    return -float(abs(target - length))


@dataclass(frozen=True)
class LengthShaping:
    """The length terms a run adds to its rewards (``reward.*`` of the config).

    overlong_buffer / overlong_factor: see :func:`overlong_penalty` (buffer 0: off).
    length_reward: a name in :data:`LENGTH_REWARDS`. weight: multiplies it (null: the
    paper's, the method's ``default_weight``). target: the target length of ``l1_target``.
    """

    overlong_buffer: int = 0
    overlong_factor: float = 1.0
    length_reward: str = "none"
    weight: float | None = None
    target: int | None = None

    @property
    def active(self) -> bool:
        """Whether :func:`shape_rewards` changes anything (an unknown name counts: it raises there)."""
        method = LENGTH_REWARDS.get(self.length_reward)
        return self.overlong_buffer > 0 or method is None or method.terms is not None


def shape_rewards(rewards: list[float], lengths: list[int], cap: int, group_size: int,
                  shaping: LengthShaping, correctness: list[float] | None = None) -> list[float]:
    """Add the length terms of ``shaping`` to a step's rewards.

    Args:
        rewards: ``[groups * group_size]`` rewards before length terms, group-major (prompt
            k's responses at ``k*G .. k*G+G-1``); truncated responses already hold
            ``reward.truncated_reward``.
        lengths: the responses' token counts, same order.
        cap: the step's cap.
        shaping: the terms to add.
        correctness: the correctness term's scores, same order, from which ``kimi`` takes its
            correctness flags (:func:`siri.rewards.correctness.is_correct`); None: ``rewards``
            (a one-term reward is its own correctness).

    Returns the shaped rewards (a new list; ``rewards`` is not changed).
    """
    correctness = rewards if correctness is None else correctness
    if len(rewards) != len(lengths) or len(rewards) % group_size:
        raise ValueError(f"shape_rewards: {len(rewards)} rewards and {len(lengths)} lengths for groups of "
                         f"{group_size}")
    if len(correctness) != len(rewards):
        raise ValueError(f"shape_rewards: {len(rewards)} rewards but {len(correctness)} correctness scores")
    shaped = [r + overlong_penalty(n, cap, shaping.overlong_buffer, shaping.overlong_factor)
              for r, n in zip(rewards, lengths)]
    method = _method(shaping.length_reward)
    if method.terms is None:
        return shaped
    weight = shaping.weight if shaping.weight is not None else method.default_weight
    terms = method.terms(correctness, lengths, group_size, shaping.target)
    return [s + weight * t for s, t in zip(shaped, terms)]


# ---- the registry of ``reward.length_reward`` methods ------------------------------------

LengthTerms = Callable[[list[float], list[int], int, int | None], list[float]]
"""``(correctness, lengths, group_size, target) -> one term per response`` (same order as
:func:`shape_rewards`' arguments)."""


@dataclass(frozen=True)
class LengthReward:
    """One value of ``reward.length_reward``: how its terms are computed and how much they
    weigh by default."""

    terms: LengthTerms | None
    """The per-response terms; None adds nothing (``"none"``)."""
    default_weight: float = 0.0
    """The weight its paper uses, applied when ``reward.length_reward_weight`` is null."""
    needs_target: bool = False
    """Whether it reads ``reward.length_target`` (config validation requires one >= 1)."""


def _kimi_terms(rewards: list[float], lengths: list[int], group_size: int, target: int | None) -> list[float]:
    terms: list[float] = []
    for lo in range(0, len(rewards), group_size):
        terms += kimi_length(lengths[lo:lo + group_size], [is_correct(r) for r in rewards[lo:lo + group_size]])
    return terms


def _l1_target_terms(rewards: list[float], lengths: list[int], group_size: int,
                     target: int | None) -> list[float]:
    if target is None:
        raise ValueError("length_reward 'l1_target' needs a target length (reward.length_target)")
    return [l1_target(n, target) for n in lengths]


LENGTH_REWARDS: dict[str, LengthReward] = {
    "none": LengthReward(terms=None),
    # Kimi k1.5 adds its length reward as is
    "kimi": LengthReward(terms=_kimi_terms, default_weight=1.0),
    # L1 weights the distance to the target by alpha = 0.0003 per token
    "l1_target": LengthReward(terms=_l1_target_terms, default_weight=0.0003, needs_target=True),
}
"""The values of ``reward.length_reward`` (the config's choices come from here), by name."""


def _method(name: str) -> LengthReward:
    try:
        return LENGTH_REWARDS[name]
    except KeyError:
        raise ValueError(f"length_reward must be one of {list(LENGTH_REWARDS)}, got {name!r}") from None
