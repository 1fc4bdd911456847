"""What counts as a correct response: one definition, used everywhere a response is called
right or wrong.

A reward function (``reward.fn``) returns one number, ``(text, reference, finish_reason) ->
float``; there is no separate verdict beside it. A response is correct when that score,
before any length term is added (the ``correctness`` of a rollout), is at least
:data:`CORRECT_THRESHOLD`. The default reward (``capped_reward``) scores 1 for a verified
answer and 0 otherwise, so for it the flag is exactly the verifier's verdict; a custom reward
should score its correct answers >= 0.5 and its wrong ones below.

Callers: the training ``accuracy`` metric, the dynamic-sampling filter
(``algo.filter_metric: acc``, ``siri.algo.dynamic_sampling``), Kimi's length reward
(``siri.rewards.length_shaping``), ``siri eval`` and evaluation during training
(``siri.eval``), the demo's length probe (``siri.demo.caps``) and ``scripts/verify_demo.py``.
"""
from __future__ import annotations

__all__ = ["CORRECT_THRESHOLD", "is_correct"]

CORRECT_THRESHOLD = 0.5
"""A reward function's score at or above this counts as correct (the default reward: 1 or 0)."""


def is_correct(score: float) -> bool:
    """Whether a reward function's score (before length terms) counts as a correct answer:
    ``score >= CORRECT_THRESHOLD``. NaN is not correct."""
    return score >= CORRECT_THRESHOLD
