"""The demo task's two kinds of extra reasoning, read back from text (siri.demo.mechanism), the
frontier area, and the base-model gates that work on samples (siri.demo.gates)."""
import random
import statistics

import pytest

from siri.demo.caps import Sample
from siri.demo.gates import MAX_K_EFFECT, confirmations_gate, truncation_gate
from siri.demo.mechanism import frontier_area, mechanism_rates, parse_response
from siri.demo.task import (CORRECTION, MAX_CONFIRMATIONS, SLIP_FREE_ITEMS, SLIP_RATE, Problem, concise_trace,
                            confirmation, make_problems, slipped_walk, verbose_trace, walk)


def test_only_items_after_the_slip_free_ones_slip_and_every_slip_is_corrected():
    rng = random.Random(0)
    problems = make_problems(3000, rng)
    slips = {tier: [] for tier in ("easy", "medium", "hard")}
    for p in problems:
        text = verbose_trace(p, rng)
        parts = parse_response(text, len(p.items))
        slips[p.tier].append(parts.slipped)
        assert parts.corrected == parts.slipped, text            # a correction exactly when the walk slipped
        assert text.endswith(f"\\boxed{{{p.answer}}}") and len(parts.confirmations) <= MAX_CONFIRMATIONS
    assert not any(slips["easy"]) and not any(slips["medium"])
    # each item after the slip-free ones moves the count by -1, 0 or +1 (a skip and a double cancel)
    expected = statistics.fmean(_net_slip_probability(len(p.items) - SLIP_FREE_ITEMS)
                                for p in problems if p.tier == "hard")
    assert abs(statistics.fmean(slips["hard"]) - expected) < 0.05


def _net_slip_probability(items: int) -> float:
    """P(the count ends off the list's length) after ``items`` slip-prone items."""
    offsets = {0: 1.0}
    for _ in range(items):
        step: dict[int, float] = {}
        for offset, p in offsets.items():
            for move, q in ((-1, SLIP_RATE / 2), (0, 1 - SLIP_RATE), (1, SLIP_RATE / 2)):
                step[offset + move] = step.get(offset + move, 0.0) + p * q
        offsets = step
    return 1 - offsets[0]


def test_confirmations_are_drawn_independently_of_tier_and_slip():
    rng = random.Random(1)
    counts: dict[tuple[str, bool], list[int]] = {}
    for p in make_problems(6000, rng):
        parts = parse_response(verbose_trace(p, rng), len(p.items))
        counts.setdefault((p.tier, parts.slipped), []).append(len(parts.confirmations))
    means = {key: statistics.fmean(v) for key, v in counts.items() if len(v) > 200}
    assert len(means) == 4 and all(abs(m - MAX_CONFIRMATIONS / 2) < 0.15 for m in means.values()), means


def test_walks_and_the_slipped_walk():
    p = Problem(tuple("abcdefghijklmnop"), "hard")
    assert walk(p) == (" " + " ".join(f"{c}{i}" for i, c in enumerate(p.items, 1)), 16)
    assert concise_trace(p) == walk(p)[0] + " \\boxed{16}"
    for seed in range(20):
        text = slipped_walk(p, random.Random(seed))
        assert parse_response(text, 16).slipped and parse_response(text, 16).first_count in (15, 17)
    with pytest.raises(ValueError, match="cannot slip"):
        slipped_walk(Problem(tuple("abc")), random.Random(0))


@pytest.mark.parametrize("text,length,expected", [
    (" a1 b2 c3 \\boxed{3}", 3, (3, False, False, 0)),
    (" a1 b2 \\boxed{2}", 3, (2, True, False, 0)),                        # slip, no correction: U
    (" a1 b2" + CORRECTION + " a1 b2 c3" + confirmation(3) * 2 + " \\boxed{3}", 3, (2, True, True, 2)),
    (confirmation(4) + " \\boxed{4}", 4, (None, True, False, 1)),          # no walk at all counts as a slip
    ("", 2, (None, True, False, 0)),
])
def test_parse_response(text, length, expected):
    parts = parse_response(text, length)
    assert (parts.first_count, parts.slipped, parts.corrected, len(parts.confirmations)) == expected


def test_mechanism_rates_count_tokens_of_confirmations_only():
    confirm = confirmation(3)
    samples = [(" a1 b2 c3" + confirm + " \\boxed{3}", 10, 3),           # clean, one confirmation
               (" a1 b2" + CORRECTION + " a1 b2 c3 \\boxed{3}", 20, 3),   # slip, corrected
               (" a1 b2 \\boxed{2}", 10, 3),                              # slip, not corrected
               (" a1 b2 c3 \\boxed{3}", 10, 3)]
    rates = mechanism_rates(samples, lambda text: 4 if text == confirm else 1000)
    assert rates["R"] == pytest.approx(4 / 50) and rates["C"] == 0.5 and rates["U"] == 0.25
    assert rates["slip_rate"] == 0.5 and rates["confirmations"] == 0.25 and rates["slips"] == 2
    clean = mechanism_rates([(" a1 \\boxed{1}", 3, 1)], len)
    assert clean["C"] is None and clean["U"] == 0 and clean["R"] == 0
    assert mechanism_rates([], len)["R"] is None


def test_frontier_area_is_the_dominated_area_over_l_max():
    assert frontier_area([(50, 0.8)], 100) == pytest.approx(0.4)
    # two points: the union of [50, 100] x [0, .8] and [80, 100] x [0, .9]
    assert frontier_area([(80, 0.9), (50, 0.8)], 100) == pytest.approx((30 * 0.8 + 20 * 0.9) / 100)
    assert frontier_area([(50, 0.8), (60, 0.5)], 100) == pytest.approx(0.4)    # a dominated point adds nothing
    assert frontier_area([(120, 1.0)], 100) == 0.0 and frontier_area([], 100) == 0.0
    shorter = frontier_area([(40, 0.8)], 100)
    assert shorter > frontier_area([(50, 0.8)], 100) < frontier_area([(50, 0.9)], 100)
    with pytest.raises(ValueError, match="l_max must be > 0"):
        frontier_area([(1, 1)], 0)


def _sample(tier: str, confirmations: int, right: bool, finish: str = "stop") -> Sample:
    p = Problem(tuple("abcd"), tier)
    answer = p.answer if right else "5"
    return Sample(p, walk(p)[0] + confirmation(answer) * confirmations + f" \\boxed{{{answer}}}", 20, finish)


def test_truncation_gate_takes_the_worst_tier():
    samples = [_sample("easy", 0, True)] * 100 + [_sample("hard", 0, True)] * 97 + \
        [_sample("hard", 0, False, "length")] * 3
    gate = truncation_gate(samples)
    assert gate.passed is False and gate.value == pytest.approx(0.03) and gate.detail["per_tier"]["easy"] == 0
    assert truncation_gate(samples[:-1] + [_sample("hard", 0, True)]).passed is True


def test_confirmations_gate_weights_tiers_equally():
    # K = 0 answers are mostly hard ones (harder), K = 1 mostly easy: pooled accuracy would differ by
    # K although within each tier K changes nothing
    samples = ([_sample("easy", 0, True)] * 10 + [_sample("hard", 0, True)] * 45 + [_sample("hard", 0, False)] * 45
               + [_sample("easy", 1, True)] * 90 + [_sample("hard", 1, True)] * 5 + [_sample("hard", 1, False)] * 5)
    gate = confirmations_gate(samples)
    assert gate.passed is True and gate.value == pytest.approx(0.0)
    harmful = samples + [_sample("easy", 1, False)] * 10                     # K = 1 now loses easy answers
    gate = confirmations_gate(harmful)
    assert gate.passed is False and gate.value > MAX_K_EFFECT
    assert confirmations_gate([_sample("easy", 0, True)]).passed is None     # one K: nothing to compare
