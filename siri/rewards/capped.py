"""The length-capped correctness reward of SIRI (and DeepScaleR): a response that did not
finish within the step's cap scores like a wrong answer; otherwise the final answer is
verified against the reference. No length penalty unless one is passed explicitly."""
from __future__ import annotations

from typing import Callable

from siri.rewards.answer import extract_final_answer
from siri.rewards.math_reward import math_equal

__all__ = ["capped_reward"]


def capped_reward(response_text: str, reference: str, finish_reason: str, *,
                  correct: float = 1.0, wrong: float = 0.0,
                  length_penalty: Callable[[str], float] | None = None) -> float:
    """Score one response.

    Args:
        response_text: the decoded response, as cut at the cap.
        reference: the ground-truth answer.
        finish_reason: the engine's "stop" (ended by EOS/stop) or "length" (hit the cap).
        correct: score of a finished response whose last ``\\boxed{}`` equals the reference.
        wrong: score of a wrong, unanswered or truncated response.
        length_penalty: optional, off by default: ``f(response_text) -> float`` subtracted
            from the score of a finished response (truncated ones already score ``wrong``).

    Returns:
        ``wrong`` when ``finish_reason == "length"``, else ``correct`` or ``wrong`` by
        ``math_equal`` on the extracted answer, minus ``length_penalty`` if given.
    """
    if finish_reason == "length":
        return wrong
    answer = extract_final_answer(response_text)
    score = correct if math_equal(answer, reference) else wrong
    if length_penalty is not None:
        score -= float(length_penalty(response_text))
    return score
