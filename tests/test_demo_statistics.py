"""siri.demo.statistics: Student's t against tables and closed forms, paired differences,
Holm's step-down against Bonferroni, and the two-axis win rule."""
import math
import statistics

import pytest

from siri.demo.statistics import (
    better, compare, holm, outcome, paired_difference, t_cdf, t_quantile, t_two_sided_p,
)


@pytest.mark.parametrize("df, expected", [(1, 12.706), (2, 4.303), (3, 3.182), (4, 2.776), (5, 2.571),
                                          (10, 2.228), (30, 2.042), (math.inf, 1.960)])
def test_t_quantile_matches_the_table(df, expected):
    assert round(t_quantile(0.975, df), 3) == expected
    assert t_quantile(0.025, df) == pytest.approx(-t_quantile(0.975, df))


def test_t_quantile_matches_closed_forms_and_inverts_the_cdf():
    # df = 1 is Cauchy: t_q = tan(pi (q - 1/2)); df = 2: t_q = (2q - 1) / sqrt(2 q (1 - q))
    for q in (0.6, 0.9, 0.975, 0.995, 0.9999):
        assert t_quantile(q, 1) == pytest.approx(math.tan(math.pi * (q - 0.5)), rel=1e-9)
        assert t_quantile(q, 2) == pytest.approx((2 * q - 1) / math.sqrt(2 * q * (1 - q)), rel=1e-9)
        for df in (3, 7.5, 191, 1e6):
            assert t_cdf(t_quantile(q, df), df) == pytest.approx(q, rel=1e-10)
    assert t_quantile(0.5, 4) == 0.0
    assert t_quantile(0.995, 3) == pytest.approx(5.841, abs=5e-4)  # the 1% two-sided column
    assert t_quantile(0.975, 1e7) == pytest.approx(statistics.NormalDist().inv_cdf(0.975), abs=1e-6)


@pytest.mark.parametrize("t", [0.0, 0.1, 1.0, 2.1975, 4.303, 12.706, 50.0, 1e4])
def test_two_sided_p_matches_closed_forms(t):
    # df = 1: p = 1 - (2 / pi) atan|t|; df = 2: p = 1 - |t| / sqrt(2 + t^2); df = inf: erfc(|t| / sqrt 2)
    assert t_two_sided_p(t, 1) == pytest.approx(1 - 2 / math.pi * math.atan(t), rel=1e-9, abs=1e-15)
    assert t_two_sided_p(-t, 2) == pytest.approx(1 - t / math.sqrt(2 + t * t), rel=1e-7, abs=1e-15)
    assert t_two_sided_p(t, math.inf) == pytest.approx(math.erfc(t / math.sqrt(2)), rel=1e-12, abs=1e-300)


def test_two_sided_p_at_the_tabulated_thresholds():
    for df, threshold in ((2, 4.303), (3, 3.182), (10, 2.228)):
        assert t_two_sided_p(threshold, df) == pytest.approx(0.05, abs=2e-4)
    assert t_cdf(-1.0, 4) == pytest.approx(0.18695, abs=1e-5)
    assert t_cdf(0.0, 3) == 0.5 and t_two_sided_p(math.inf, 3) == 0.0


@pytest.mark.parametrize("call, message", [
    (lambda: t_quantile(1.0, 3), r"q must be in \(0, 1\)"),
    (lambda: t_quantile(0.9, 0), "degrees of freedom must be > 0"),
    (lambda: t_two_sided_p(math.nan, 3), "t must be a number"),
    (lambda: paired_difference([0.5], [0.4]), "at least 2 seeds"),
    (lambda: paired_difference([0.5, 0.6], [0.4]), "one value per seed on both sides, got 2 and 1"),
    (lambda: paired_difference([0.5, math.nan], [0.4, 0.5]), "finite values"),
    (lambda: paired_difference([0.5, 0.6], [0.4, 0.5]).beyond(0.0), r"alpha must be in \(0, 1\)"),
    (lambda: holm({"a": 1.5}, 0.05), "p-value 'a' must be in"),
])
def test_bad_arguments(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_paired_difference_fields():
    d = paired_difference([3.0, 5.0, 10.0], [1.0, 2.0, 4.0])  # differences 2, 3, 6
    assert d.differences == (2.0, 3.0, 6.0) and d.pairs == 3 and d.df == 2
    assert d.mean == pytest.approx(11 / 3)
    sd = math.sqrt(((2 - 11 / 3) ** 2 + (3 - 11 / 3) ** 2 + (6 - 11 / 3) ** 2) / 2)
    assert d.se == pytest.approx(sd / math.sqrt(3))
    assert d.t == pytest.approx(d.mean / d.se)
    assert d.p_value == pytest.approx(1 - d.t / math.sqrt(2 + d.t ** 2))  # df = 2 closed form
    assert d.threshold(0.05) == pytest.approx(t_quantile(0.975, 2) * d.se)
    assert d.beyond(0.05) == (abs(d.mean) > d.threshold(0.05)) == (d.p_value < 0.05)
    flipped = paired_difference([1.0, 2.0, 4.0], [3.0, 5.0, 10.0])
    assert flipped.t == pytest.approx(-d.t) and flipped.p_value == pytest.approx(d.p_value)


def test_zero_spread_differences():
    constant = paired_difference([0.6, 0.7, 0.8], [0.5, 0.6, 0.7])  # 0.1 each, up to rounding
    assert constant.se == 0.0 and constant.p_value == 0.0 and constant.t == math.inf
    assert constant.beyond(1e-9)
    assert paired_difference([5.0, 5.0], [7.0, 7.0]).t == -math.inf
    same = paired_difference([0.3, 0.4, 0.5], [0.3, 0.4, 0.5])
    assert (same.mean, same.se, same.t, same.p_value) == (0.0, 0.0, 0.0, 1.0)
    assert not same.beyond(0.999)


def unpaired_t_p(a, b):
    """Welch's two-sample t on the means, ignoring the pairing (what a z or t rule on two
    standard errors does), with the Welch-Satterthwaite df."""
    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    t = (statistics.fmean(a) - statistics.fmean(b)) / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    return t, t_two_sided_p(t, df)


def test_pairing_removes_the_seed_effect():
    # seeds move both arms together by +-20 points; the arm is 3-5 points better on every seed
    seed_effect = [-0.20, 0.0, 0.20]
    b = [0.6 + e for e in seed_effect]
    a = [x + gain for x, gain in zip(b, (0.03, 0.05, 0.04))]
    d = paired_difference(a, b)
    # differences 3, 5, 4 points: t = 4 / (1 / sqrt 3) = 6.93 on 2 df, p = 1 - t / sqrt(2 + t^2) = 0.020
    assert d.t == pytest.approx(4 * math.sqrt(3)) and d.p_value == pytest.approx(0.0202, abs=1e-4)
    assert d.beyond(0.05)
    t, p = unpaired_t_p(a, b)
    assert abs(t) < 0.5 and p > 0.5  # the seed spread (20 points) swamps the 4-point gain
    # the old rule, 2 x sqrt(sem_a^2 + sem_b^2), does not see it either
    sems = [statistics.stdev(x) / math.sqrt(3) for x in (a, b)]
    assert abs(statistics.fmean(a) - statistics.fmean(b)) < 2 * math.hypot(*sems)


def test_shuffling_one_arms_seeds_changes_the_result():
    a, b = [0.50, 0.70, 0.90], [0.46, 0.65, 0.87]
    assert paired_difference(a, b).beyond(0.05)
    shuffled = [b[2], b[0], b[1]]  # same values, wrong seeds
    assert paired_difference(a, shuffled).mean == pytest.approx(paired_difference(a, b).mean)
    assert not paired_difference(a, shuffled).beyond(0.05)


def test_length_penalty_against_siri_low_with_three_seeds():
    # the study's per-seed accuracies (percent): SIRI-low 96.5 / 92.2 / 93.2, length penalty 96.9 / 97.8 / 99.6,
    # so per-seed differences +0.4 / +5.6 / +6.4 points; tokens about 0.2 fewer on every seed
    siri_low = {"accuracy": [0.965, 0.922, 0.932], "mean_tokens": [32.0, 32.2, 32.1]}
    length_penalty = {"accuracy": [0.969, 0.978, 0.996], "mean_tokens": [31.7, 32.1, 31.9]}
    result = compare(length_penalty, siri_low, alpha=0.05)
    accuracy = result.differences["accuracy"]
    assert [round(100 * x, 6) for x in accuracy.differences] == [0.4, 5.6, 6.4]
    assert 100 * accuracy.mean == pytest.approx(4.1333, abs=1e-4)
    # derived here: sd of (0.4, 5.6, 6.4) = sqrt(10.6133), se = 1.8809 points, t = 2.1975 on 2 df,
    # p = 1 - t / sqrt(2 + t^2) = 0.159: short of t_{0.975, 2} = 4.303 standard errors
    assert accuracy.t == pytest.approx(4.1333 / math.sqrt(10.6133 / 3), rel=1e-4)
    assert accuracy.p_value == pytest.approx(1 - accuracy.t / math.sqrt(2 + accuracy.t ** 2))
    assert not accuracy.beyond(0.05)
    assert accuracy.beyond(0.2)  # a looser level would call it
    tokens = result.differences["mean_tokens"]
    assert tokens.mean == pytest.approx(-0.2) and not tokens.beyond(0.05)
    assert result.outcome == "tie" and result.better == {"accuracy": 0, "mean_tokens": 0}


def test_compare_reports_a_one_axis_win():
    # a: 5 points more accurate on every seed (1 point of noise), tokens the same within noise
    b = {"accuracy": [0.50, 0.60, 0.70], "mean_tokens": [100.0, 120.0, 90.0]}
    a = {"accuracy": [0.55, 0.66, 0.74], "mean_tokens": [101.0, 118.0, 92.0]}
    result = compare(a, b, alpha=0.05)
    assert result.better == {"accuracy": 1, "mean_tokens": 0}
    assert result.outcome == "a wins"
    assert compare(b, a, alpha=0.05).outcome == "b wins"
    # shorter beyond on tokens at equal accuracy: a win on the other axis
    shorter = {"accuracy": [0.51, 0.59, 0.70], "mean_tokens": [80.0, 101.0, 69.0]}
    assert compare(shorter, b, alpha=0.05).outcome == "a wins"
    # worse beyond on tokens too: a trade-off, not a win
    longer = {"accuracy": a["accuracy"], "mean_tokens": [120.0, 139.0, 111.0]}
    traded = compare(longer, b, alpha=0.05)
    assert traded.better == {"accuracy": 1, "mean_tokens": -1} and traded.outcome == "tie"
    with pytest.raises(ValueError, match="per-seed values of 'mean_tokens' on both sides"):
        compare({"accuracy": [0.5, 0.6]}, b, alpha=0.05)


def test_better_and_outcome():
    up, down, flat = (paired_difference([2.0, 3.0], [1.0, 1.0]), paired_difference([1.0, 1.0], [2.0, 3.0]),
                      paired_difference([1.0, 2.0], [1.0, 2.0]))
    assert better({"accuracy": up, "mean_tokens": down}, {"accuracy": True, "mean_tokens": True}) \
        == {"accuracy": 1, "mean_tokens": 1}  # more accurate and shorter: both favour a
    assert better({"accuracy": up, "mean_tokens": flat}, {"accuracy": False, "mean_tokens": False}) \
        == {"accuracy": 0, "mean_tokens": 0}
    assert outcome({"accuracy": 1, "mean_tokens": 1}) == "a wins"
    assert outcome({"accuracy": 0, "mean_tokens": -1}) == "b wins"
    assert outcome({"accuracy": 1, "mean_tokens": -1}) == outcome({"accuracy": 0, "mean_tokens": 0}) == "tie"
    with pytest.raises(ValueError, match="-1, 0 or \\+1"):
        outcome({"accuracy": 2})


def test_holm_against_bonferroni():
    p = {"a": 0.010, "b": 0.015, "c": 0.030, "d": 0.500}
    bonferroni = {name: value < 0.05 / len(p) for name, value in p.items()}
    assert bonferroni == {"a": True, "b": False, "c": False, "d": False}
    # Holm: 0.010 < 0.05/4, 0.015 < 0.05/3, 0.030 >= 0.05/2: stop
    assert holm(p, 0.05) == {"a": True, "b": True, "c": False, "d": False}
    # step-down stops at the first failure: c alone would pass 0.05/1, but b failed before it
    assert holm({"c": 0.045, "a": 0.01, "b": 0.04}, 0.05) == {"c": False, "a": True, "b": False}
    assert list(holm({"c": 0.045, "a": 0.01, "b": 0.04}, 0.05)) == ["c", "a", "b"]  # input order
    assert holm({"only": 0.049}, 0.05) == {"only": True}  # a family of one: the test itself
    assert holm({"x": 0.0, "y": 0.0, "z": 1.0}, 0.05) == {"x": True, "y": True, "z": False}
    assert holm({}, 0.05) == {}
    # Holm rejects everything Bonferroni does, on random families
    import random
    rng = random.Random(0)
    for _ in range(200):
        family = {str(i): rng.random() ** 3 for i in range(rng.randint(1, 12))}
        rejected = holm(family, 0.05)
        assert all(rejected[name] for name, value in family.items() if value < 0.05 / len(family))
