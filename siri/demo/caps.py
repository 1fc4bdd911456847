"""The demo's two caps, measured on the base model, and the sampling probe they come from.

- **L_max** is ``L_MAX_FACTOR`` times the base model's sampled hard-tier p99 length, so it does
  not bind a model that reasons as the base does (in the paper the long cap, 16K, is above the
  base model's mean length).
- **L_min** is ``L_MIN_MARGIN`` tokens above the hard tier's *concise* median (one clean walk and
  the answer, the end token counted): half the hard lists fit under it only with a clean walk
  and nothing else, the longer half does not fit at all, and no correction fits. The necessary
  reasoning of a long hard list is longer than L_min: the situation SIRI's expansion is for.
"""
from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from siri.demo.task import Problem, concise_trace
from siri.engine import LLMEngine, SamplingParams

#: L_max as a multiple of the base model's sampled hard-tier p99 length.
L_MAX_FACTOR = 1.15
#: L_min in tokens above the hard tier's concise median.
L_MIN_MARGIN = 2


@dataclass(frozen=True)
class Sample:
    """One sampled response of the base: its problem, text, length in tokens (the end token
    counted) and finish reason."""

    problem: Problem
    text: str
    tokens: int
    finish_reason: str


def concise_length(tokenizer, problem: Problem) -> int:
    """Tokens of the problem's concise trace (one clean walk and the answer) plus the end token."""
    return len(tokenizer(concise_trace(problem), add_special_tokens=False)["input_ids"]) + 1


def concise_lengths(tokenizer, problems: list[Problem]) -> dict[str, list[int]]:
    """``concise_length`` of each problem, grouped by tier."""
    lengths: dict[str, list[int]] = defaultdict(list)
    for p in problems:
        lengths[p.tier].append(concise_length(tokenizer, p))
    return dict(lengths)


def quantile(values: Sequence[float], q: float) -> float:
    """The nearest-rank ``q`` quantile of ``values`` (not empty)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def choose_caps(base_hard_lengths: list[int], hard_concise: list[int]) -> tuple[int, int]:
    """``(l_max, l_min)``: ``L_MAX_FACTOR`` x the p99 of the base's sampled hard-tier lengths,
    and ``L_MIN_MARGIN`` tokens above the median hard concise trace.

    Raises ValueError when either list is empty or L_min would not be below L_max."""
    if not base_hard_lengths or not hard_concise:
        raise ValueError("choose_caps needs the base model's sampled hard-tier lengths and the hard concise "
                         "traces' lengths (a tier named 'hard')")
    l_max = math.ceil(L_MAX_FACTOR * quantile(base_hard_lengths, 0.99))
    l_min = math.ceil(statistics.median(hard_concise)) + L_MIN_MARGIN
    if l_min >= l_max:
        raise ValueError(f"L_min ({l_min}) is not below L_max ({l_max}): the base model's hard answers are no "
                         f"longer than the concise ones, so there is nothing to compress")
    return l_max, l_min


def distribution(values: list[int], threshold: int) -> dict:
    """count, min, p10, median, p90, p99, max and the fraction above ``threshold``."""
    if not values:
        return {"count": 0}
    ordered = sorted(values)
    return {"count": len(ordered), "min": ordered[0], "p10": quantile(ordered, 0.1),
            "median": statistics.median(ordered), "p90": quantile(ordered, 0.9), "p99": quantile(ordered, 0.99),
            "max": ordered[-1], "fraction_above": sum(v > threshold for v in ordered) / len(ordered),
            "threshold": threshold}


def sample_base(model, tokenizer, problems: list[Problem], prompt_ids: list[list[int]], *, samples: int,
                max_tokens: int, seed: int) -> list[Sample]:
    """``samples`` responses per problem from the base model at temperature 1.0 (as RL samples),
    at most ``max_tokens`` each."""
    engine = LLMEngine(model.eval(), page_size=16, max_num_seqs=256, kv_cache_bytes=256 << 20)
    params = SamplingParams(n=samples, temperature=1.0, max_tokens=max_tokens,
                            stop_token_ids=[tokenizer.eos_token_id], seed=seed)
    return [Sample(problem, tokenizer.decode(c.token_ids, skip_special_tokens=True), len(c.token_ids),
                   c.finish_reason)
            for problem, group in zip(problems, engine.generate(prompt_ids, params)) for c in group]


def length_report(samples: list[Sample], l_min: int) -> dict[str, dict]:
    """Per tier, the distribution of all sampled lengths and of the correct answers'
    (``fraction_above`` L_min: the share a cap of L_min would have cut)."""
    from siri.rewards import capped_reward, is_correct

    every, correct = defaultdict(list), defaultdict(list)
    for s in samples:
        every[s.problem.tier].append(s.tokens)
        if is_correct(capped_reward(s.text, s.problem.answer, s.finish_reason)):
            correct[s.problem.tier].append(s.tokens)
    return {tier: {"all": distribution(every[tier], l_min), "correct": distribution(correct[tier], l_min)}
            for tier in every}
