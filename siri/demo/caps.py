"""The demo's two caps, from the task's tiers, and the base model's measured lengths per tier.

L_min sits between the medium tier's longest *concise* trace (one walk and the answer) and the
hard tier's shortest: every easy and medium problem can be solved under L_min once the
re-checks are gone, no hard one can. L_max leaves the hard tier's longest concise trace room
(``L_MAX_FACTOR`` times it), so hard problems are solvable at L_max without their re-checks.
The base model's sampled lengths per tier, and of its correct answers, are reported so the
separation can be checked on the model itself, not only on the ideal traces.
"""
from __future__ import annotations

import math
import statistics
from collections import defaultdict

from siri.demo.task import Problem, concise_trace
from siri.engine import LLMEngine, SamplingParams
from siri.rewards import capped_reward, is_correct

#: L_max as a multiple of the hard tier's longest concise trace.
L_MAX_FACTOR = 1.6


def concise_lengths(tokenizer, problems: list[Problem]) -> dict[str, list[int]]:
    """Tokens of each problem's concise trace plus the end token, grouped by tier."""
    lengths: dict[str, list[int]] = defaultdict(list)
    for p in problems:
        lengths[p.tier].append(len(tokenizer(concise_trace(p), add_special_tokens=False)["input_ids"]) + 1)
    return dict(lengths)


def choose_caps(concise: dict[str, list[int]]) -> tuple[int, int]:
    """``(l_max, l_min)`` from the concise lengths of the "medium" and "hard" tiers.

    Raises ValueError when the tiers overlap (no L_min separates them)."""
    medium_max, hard_min, hard_max = max(concise["medium"]), min(concise["hard"]), max(concise["hard"])
    if medium_max >= hard_min:
        raise ValueError(f"the medium tier's concise traces (up to {medium_max} tokens) reach the hard tier's "
                         f"(from {hard_min}): no L_min separates them; widen the gap between TIERS")
    return math.ceil(L_MAX_FACTOR * hard_max), (medium_max + hard_min + 1) // 2


def distribution(values: list[int], threshold: int) -> dict:
    """count, min, p10, median, p90, max and the fraction above ``threshold``."""
    if not values:
        return {"count": 0}
    ordered = sorted(values)
    quantile = lambda q: ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)]  # noqa: E731
    return {"count": len(ordered), "min": ordered[0], "p10": quantile(0.1), "median": statistics.median(ordered),
            "p90": quantile(0.9), "max": ordered[-1],
            "fraction_above": sum(v > threshold for v in ordered) / len(ordered), "threshold": threshold}


def base_lengths(model, tokenizer, problems: list[Problem], prompt_ids: list[list[int]], *, samples: int,
                 max_tokens: int, l_min: int, seed: int) -> dict[str, dict]:
    """Sample the base model (temperature 1.0) ``samples`` times per problem; per tier, the
    distribution of all response lengths and of the correct ones (``fraction_above`` L_min:
    the share of correct answers a cap of L_min would have cut)."""
    engine = LLMEngine(model.eval(), page_size=16, max_num_seqs=256, kv_cache_bytes=256 << 20)
    params = SamplingParams(n=samples, temperature=1.0, max_tokens=max_tokens,
                            stop_token_ids=[tokenizer.eos_token_id], seed=seed)
    every, correct = defaultdict(list), defaultdict(list)
    for problem, group in zip(problems, engine.generate(prompt_ids, params)):
        for c in group:
            every[problem.tier].append(len(c.token_ids))
            if is_correct(capped_reward(tokenizer.decode(c.token_ids, skip_special_tokens=True), problem.answer,
                                        c.finish_reason)):
                correct[problem.tier].append(len(c.token_ids))
    return {tier: {"all": distribution(every[tier], l_min), "correct": distribution(correct[tier], l_min)}
            for tier in every}
