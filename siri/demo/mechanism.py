"""What a response of the demo's task did, read back from its text: whether its first walk
slipped, whether a correction followed, how many harmless confirmations it spent; and the
per-tier rates the demo's predictions are about.

Per tier, over every sampled response (``mechanism_rates``):

- ``R``: the redundancy fraction, confirmation tokens / all response tokens;
- ``C``: P(correction | slip), the share of slipped first walks followed by a correction
  (None when no walk slipped);
- ``U``: P(slip without correction), over all responses;
- ``slip_rate``: P(slip); ``confirmations``: the mean number of confirmations per response.

A first walk *slipped* when it does not end on the list's length (or there is no walk).

``frontier_area`` is the hypervolume of (tokens, accuracy) points against the reference point
(``l_max`` tokens, 0 accuracy), divided by ``l_max``: the area of the tokens-accuracy plane the
points dominate, in accuracy units (1.0 would be every answer right at zero tokens).
"""
from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from siri.demo.task import CONFIRMATION_HEAD, CORRECTION

_ITEM = re.compile(r" ?[a-z](\d+)")
_CONFIRMATION = re.compile(re.escape(CONFIRMATION_HEAD) + r" ?\d*\.?")
_ENDS_OF_FIRST_WALK = (CORRECTION.split(",")[0], CONFIRMATION_HEAD.split(".")[0], "\\boxed")


@dataclass(frozen=True)
class TraceParts:
    """One response's parts. ``first_count``: the number the first walk ends on (None: no
    walk); ``slipped``: it is not the list's length; ``corrected``: a correction follows the
    first walk; ``confirmations``: the confirmation texts, in order."""

    first_count: int | None
    slipped: bool
    corrected: bool
    confirmations: tuple[str, ...]


def parse_response(text: str, list_length: int) -> TraceParts:
    """Split ``text`` (a decoded response) of a problem whose list has ``list_length`` items."""
    end = min([i for i in (text.find(marker) for marker in _ENDS_OF_FIRST_WALK) if i >= 0], default=len(text))
    numbers = [int(m.group(1)) for m in _ITEM.finditer(text[:end])]
    first = numbers[-1] if numbers else None
    return TraceParts(first_count=first, slipped=first != list_length,
                      corrected=CORRECTION.split(",")[0] in text[end:],
                      confirmations=tuple(m.group(0) for m in _CONFIRMATION.finditer(text)))


def mechanism_rates(samples: Iterable[tuple[str, int, int]], count_tokens: Callable[[str], int]) -> dict:
    """``{"R", "C", "U", "slip_rate", "confirmations", "num_samples", "slips"}`` over ``samples``
    of ``(response_text, response_tokens, list_length)``; ``count_tokens(text)`` is how many
    tokens a confirmation takes (the tokenizer's count, no special tokens). Rates are None
    where they have no denominator."""
    responses = slips = corrected = uncorrected = confirmations = 0
    confirmation_tokens = all_tokens = 0
    for text, tokens, length in samples:
        parts = parse_response(text, length)
        responses += 1
        all_tokens += tokens
        confirmations += len(parts.confirmations)
        confirmation_tokens += sum(count_tokens(c) for c in parts.confirmations)
        if parts.slipped:
            slips += 1
            corrected += parts.corrected
            uncorrected += not parts.corrected
    return {"R": confirmation_tokens / all_tokens if all_tokens else None,
            "C": corrected / slips if slips else None,
            "U": uncorrected / responses if responses else None,
            "slip_rate": slips / responses if responses else None,
            "confirmations": confirmations / responses if responses else None,
            "num_samples": responses, "slips": slips}


def frontier_area(points: Iterable[tuple[float, float]], l_max: float) -> float:
    """The hypervolume of ``(tokens, accuracy)`` points (accuracy a fraction) against the
    reference (``l_max``, 0), divided by ``l_max``. Points at or beyond ``l_max`` tokens add
    nothing; accuracy is clipped to [0, 1]."""
    if l_max <= 0:
        raise ValueError(f"l_max must be > 0, got {l_max!r}")
    kept = sorted((max(0.0, float(t)), min(1.0, max(0.0, float(a)))) for t, a in points if t < l_max)
    area, best = 0.0, 0.0
    for (tokens, accuracy), following in zip(kept, [t for t, _ in kept[1:]] + [l_max]):
        best = max(best, accuracy)
        area += best * (following - tokens)
    return area / l_max


def tier_mechanism(samples: Iterable[dict], lengths: Mapping[int, int], tiers: Mapping[int, str],
                   count_tokens: Callable[[str], int]) -> dict[str, dict]:
    """``mechanism_rates`` per tier for eval ``samples`` (``siri.eval.evaluate_examples(...,
    keep_samples=True)``'s, each with ``index``, ``response`` and ``tokens``); ``lengths`` and
    ``tiers`` map an example index to its list's length and its tier."""
    by_tier: dict[str, list[tuple[str, int, int]]] = {}
    for s in samples:
        by_tier.setdefault(tiers[s["index"]], []).append((s["response"], s["tokens"], lengths[s["index"]]))
    return {tier: mechanism_rates(rows, count_tokens) for tier, rows in by_tier.items()}
