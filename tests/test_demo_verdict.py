"""siri.demo.verdict on hand-computable numbers (paired t over seeds or prompts, the one-axis win rule,
Holm over the tier tests), and plot_pareto's error bars."""
import math

import pytest
from test_plot import assert_png, figures, legends_over_axes  # noqa: F401 (figures is a fixture)

from siri.demo.statistics import paired_difference
from siri.demo.verdict import aggregate, format_mean_spread, pareto_front, spread, verdict
from siri.plot import plot_pareto


def result(accuracy, tokens, per_prompt=None, tiers=None):
    """One eval result in the format of siri.demo.verdict (per_prompt: [(accuracy, tokens), ...])."""
    rows = [{"index": i, "accuracy": a, "mean_tokens": t} for i, (a, t) in enumerate(per_prompt or [])]
    return {"accuracy": accuracy, "mean_tokens": tokens, "truncation_rate": 0.0,
            "num_prompts": len(rows) or 8, "num_samples": 4 * (len(rows) or 8), "per_prompt": rows,
            "tiers": {name: {"accuracy": a, "mean_tokens": t, "num_prompts": n}
                      for name, (a, t, n) in (tiers or {}).items()}}


def seeds(accuracies, tokens, tiers=None):
    """One result per seed: accuracies[i], tokens[i]; tiers: name -> (accuracies, tokens)."""
    return [result(a, t, tiers={name: (ta[i], tt[i], 4) for name, (ta, tt) in (tiers or {}).items()})
            for i, (a, t) in enumerate(zip(accuracies, tokens))]


def constant(accuracy, tokens, tiers=None):
    """Three seeds with the same numbers (standard error 0)."""
    return seeds([accuracy] * 3, [tokens] * 3,
                 {name: ([a] * 3, [t] * 3) for name, (a, t) in (tiers or {}).items()})


def test_aggregate_over_three_seeds():
    stats = aggregate({"siri_low": seeds([0.5, 0.6, 0.7], [10.0, 20.0, 40.0],
                                         tiers={"hard": ([0.2, 0.2, 0.5], [30.0, 30.0, 30.0])})})["siri_low"]
    assert stats["seeds"] == 3
    accuracy, tokens = stats["accuracy"], stats["mean_tokens"]
    assert accuracy["values"] == [0.5, 0.6, 0.7]
    assert accuracy["mean"] == pytest.approx(0.6)
    assert accuracy["std"] == pytest.approx(0.1)  # sample std: sqrt((0.01 + 0 + 0.01) / 2)
    assert (accuracy["min"], accuracy["max"]) == (0.5, 0.7)
    assert accuracy["sem"] == pytest.approx(0.1 / math.sqrt(3))
    assert tokens["mean"] == pytest.approx(70 / 3)
    assert tokens["std"] == pytest.approx(math.sqrt(((10 - 70 / 3) ** 2 + (20 - 70 / 3) ** 2 + (40 - 70 / 3) ** 2) / 2))
    assert (tokens["min"], tokens["max"]) == (10.0, 40.0)
    hard = stats["tiers"]["hard"]
    assert hard["accuracy"]["mean"] == pytest.approx(0.3)
    assert hard["accuracy"]["std"] == pytest.approx(math.sqrt(0.03))  # (0.01 + 0.01 + 0.04) / 2
    assert hard["accuracy"]["sem"] == pytest.approx(0.1)  # sqrt(0.03) / sqrt(3)
    assert hard["mean_tokens"]["std"] == 0.0 and hard["mean_tokens"]["sem"] == 0.0
    assert hard["num_prompts"] == [4, 4, 4]


def test_one_seed_standard_error_is_over_prompts():
    run = result(0.5, 20.0, per_prompt=[(1.0, 10.0), (1.0, 10.0), (0.0, 30.0), (0.0, 10.0)],
                 tiers={"easy": (1.0, 10.0, 2), "hard": (0.0, 20.0, 2)})
    stats = aggregate({"base": [run]})["base"]
    assert stats["seeds"] == 1
    # per-prompt accuracy 1, 1, 0, 0: sample std sqrt(1/3), over sqrt(4) prompts
    assert stats["accuracy"]["std"] == 0.0
    assert stats["accuracy"]["sem"] == pytest.approx(math.sqrt(1 / 3) / 2)
    # per-prompt tokens 10, 10, 30, 10: mean 15, sample variance (25 + 25 + 225 + 25) / 3 = 100
    assert stats["mean_tokens"]["sem"] == pytest.approx(10 / 2)
    assert stats["accuracy"]["prompts"] == [0, 1, 2, 3]  # kept for the paired test over prompts
    assert stats["mean_tokens"]["prompt_values"] == [10.0, 10.0, 30.0, 10.0]
    assert stats["tiers"]["easy"]["accuracy"]["sem"] is None  # no prompt -> tier map: unknown
    assert "prompts" not in stats["tiers"]["easy"]["accuracy"]
    by_tier = aggregate({"base": [run]}, prompt_tiers={0: "easy", 1: "easy", 2: "hard", 3: "hard"})["base"]["tiers"]
    assert by_tier["easy"]["accuracy"]["sem"] == 0.0
    assert by_tier["hard"]["mean_tokens"]["sem"] == pytest.approx(10.0)  # 30, 10: std 10 sqrt(2), / sqrt(2)
    with pytest.raises(ValueError, match="assigns 3 .* tier 'easy', which reports num_prompts=2"):
        aggregate({"base": [run]}, prompt_tiers={0: "easy", 1: "easy", 2: "easy", 3: "hard"})


def test_pareto_front_with_ties_and_dominated_points():
    points = {"a": (0.8, 100.0), "same_as_a": (0.8, 100.0), "accurate": (0.9, 200.0),
              "worse_both": (0.7, 150.0), "longer": (0.8, 120.0), "less_accurate": (0.75, 100.0)}
    assert pareto_front(points) == ["a", "same_as_a", "accurate"]
    assert pareto_front({"only": (0.1, 5.0)}) == ["only"]


def p_text(p):
    """A p-value as the verdict lines print it."""
    return "p=0" if p == 0 else f"p={p:.1e}" if p < 0.001 else f"p={p:.3f}"


def df2_p(t):
    """The two-sided p-value of t on 2 degrees of freedom (3 seeds), in closed form."""
    return 1 - abs(t) / math.sqrt(2 + t * t)


@pytest.mark.parametrize("accuracies, tokens, wins", [
    ([0.59, 0.60, 0.61], [80.0, 80.0, 80.0], True),    # +10 points on every seed (+-1), -20 tokens: both axes
    ([0.45, 0.60, 0.75], [80.0, 80.0, 80.0], True),    # accuracy within (5..15 points apart), -20 tokens beyond
    ([0.55, 0.60, 0.65], [60.0, 80.0, 100.0], False),  # +10 points (t 3.5 < 4.3), -20 tokens (t 1.7): within
])
def test_domination_within_or_beyond_the_spread(accuracies, tokens, wins):
    aggregated = aggregate({"base": constant(0.9, 50.0), "siri_low": constant(0.5, 100.0),
                            "compress_only": seeds(accuracies, tokens)})
    report = verdict(aggregated)
    assert report["dominations"] == [{"siri": "siri_low", "by": "compress_only",
                                      "accuracy_delta_points": pytest.approx(10.0),
                                      "tokens_delta": pytest.approx(-20.0), "beyond_spread": wins}]
    comparison, = report["comparisons"]  # base is not compared with
    assert comparison["outcome"] == ("compress_only wins" if wins else "tie")
    assert comparison["dominates_on_means"] is True
    accuracy = paired_difference([100 * a for a in accuracies], [50.0] * 3)
    tokens_diff = paired_difference(tokens, [100.0] * 3)
    assert comparison["accuracy"]["p_value"] == pytest.approx(accuracy.p_value)
    assert comparison["accuracy"]["df"] == 2 and comparison["accuracy"]["se"] == pytest.approx(accuracy.se)
    assert comparison["accuracy"]["threshold"] == pytest.approx(4.3027 * accuracy.se, rel=1e-4)
    assert comparison["tokens"]["p_value"] == pytest.approx(tokens_diff.p_value)
    words = ["beyond" if d.p_value < 0.05 else "within" for d in (accuracy, tokens_diff)]
    axes = (f"+10.0 points ({p_text(accuracy.p_value)}, {words[0]}), "
            f"-20.0 tokens ({p_text(tokens_diff.p_value)}, {words[1]}).")
    if wins:
        assert f"compress_only beats siri_low beyond the seed spread: {axes}" in report["lines"]
        assert not any(line.startswith("No arm beats siri_low") for line in report["lines"])
    else:
        assert f"compress_only dominates siri_low on the means, within the seed spread: {axes}" in report["lines"]
        assert "No arm beats siri_low beyond the seed spread." in report["lines"]
    assert any("paired t, df=2, alpha=0.05, Holm over 0 tier tests" in line for line in report["lines"])


def test_a_win_on_accuracy_alone_is_reported():
    # 5 points better on every seed (+-1), tokens the same within noise (+0.3 on the mean): the old
    # two-axis rule (2 x combined s.e. on both) could never report it
    aggregated = aggregate({
        "siri_low": seeds([0.50, 0.60, 0.70], [100.0, 120.0, 90.0]),
        "length_penalty": seeds([0.55, 0.66, 0.74], [101.0, 118.0, 92.0])})
    report = verdict(aggregated)
    comparison, = report["comparisons"]
    assert comparison["outcome"] == "length_penalty wins"
    assert comparison["accuracy"]["beyond"] is True and comparison["tokens"]["beyond"] is False
    assert comparison["dominates_on_means"] is False and report["dominations"] == []  # tokens +0.3 on the mean
    accuracy = paired_difference([0.55, 0.66, 0.74], [0.50, 0.60, 0.70])
    tokens = paired_difference([101.0, 118.0, 92.0], [100.0, 120.0, 90.0])
    assert (f"length_penalty beats siri_low beyond the seed spread: +5.0 points ({p_text(accuracy.p_value)}, "
            f"beyond), +0.3 tokens ({p_text(tokens.p_value)}, within).") in report["lines"]
    # the same from SIRI's side: SIRI-low beats an arm that is only shorter
    report = verdict(aggregate({"siri_low": seeds([0.50, 0.60, 0.70], [80.0, 101.0, 69.0]),
                                "baseline": seeds([0.51, 0.59, 0.70], [100.0, 120.0, 90.0])}))
    assert report["comparisons"][0]["outcome"] == "siri_low wins"
    assert any(line.startswith("siri_low beats baseline beyond the seed spread: +0.0 points")
               for line in report["lines"])
    assert "No arm beats siri_low beyond the seed spread; none dominates it even on the means." in report["lines"]


def test_length_penalty_against_siri_low_in_the_study():
    # the study's per-seed accuracies: SIRI-low 96.5 / 92.2 / 93.2, length penalty 96.9 / 97.8 / 99.6 (per-seed
    # differences +0.4 / +5.6 / +6.4 points), about 0.2 fewer tokens on every seed
    aggregated = aggregate({"siri_low": seeds([0.965, 0.922, 0.932], [32.0, 32.2, 32.1]),
                            "length_penalty": seeds([0.969, 0.978, 0.996], [31.7, 32.1, 31.9])})
    report = verdict(aggregated)
    comparison, = report["comparisons"]
    # derived: differences 0.4, 5.6, 6.4 have mean 4.133, sd sqrt(10.613), se 1.881: t = 2.197 on 2 df
    mean = (0.4 + 5.6 + 6.4) / 3
    t = mean / math.sqrt(sum((d - mean) ** 2 for d in (0.4, 5.6, 6.4)) / 2 / 3)
    assert t == pytest.approx(2.1975, abs=1e-4)
    assert comparison["accuracy"]["p_value"] == pytest.approx(df2_p(t), rel=1e-6)  # 0.159
    assert comparison["accuracy"]["beyond"] is False  # 2.2 standard errors, not the 4.303 that 2 df need
    assert comparison["accuracy"]["threshold"] == pytest.approx(4.3027 * 4.1333 / t, rel=1e-3)  # 8.1 points
    # tokens: -0.3, -0.1, -0.2: t = -0.2 / (0.1 / sqrt 3) = -3.46, p = 0.074
    assert comparison["tokens"]["p_value"] == pytest.approx(df2_p(0.2 / (0.1 / math.sqrt(3))), rel=1e-6)
    assert comparison["outcome"] == "tie" and report["dominations"][0]["beyond_spread"] is False
    assert ("length_penalty dominates siri_low on the means, within the seed spread: +4.1 points (p=0.159, within), "
            "-0.2 tokens (p=0.074, within).") in report["lines"]
    assert "No arm beats siri_low beyond the seed spread." in report["lines"]
    # at alpha = 0.2 both axes are beyond: a domination
    loose = verdict(aggregated, alpha=0.2)
    assert loose["comparisons"][0]["outcome"] == "length_penalty wins"
    assert any("paired t, df=2, alpha=0.2," in line for line in loose["lines"])


def test_seeds_are_paired_by_position():
    siri_low = seeds([0.50, 0.70, 0.90], [50.0, 50.0, 50.0])
    baseline = seeds([0.46, 0.65, 0.87], [50.0, 50.0, 50.0])  # 3-5 points below SIRI-low on every seed
    paired = verdict(aggregate({"siri_low": siri_low, "baseline": baseline}))
    assert paired["comparisons"][0]["outcome"] == "siri_low wins"
    shuffled = verdict(aggregate({"siri_low": siri_low, "baseline": [baseline[2], baseline[0], baseline[1]]}))
    assert shuffled["comparisons"][0]["outcome"] == "tie"  # same means, wrong pairs
    assert shuffled["comparisons"][0]["accuracy_delta_points"] == pytest.approx(
        paired["comparisons"][0]["accuracy_delta_points"])
    assert shuffled["comparisons"][0]["accuracy"]["p_value"] > 0.5


def test_per_tier_deltas():
    aggregated = aggregate({
        "siri_low": seeds([0.6] * 3, [100.0] * 3, tiers={"hard": ([0.74, 0.75, 0.76], [100.1, 130.1, 160.1]),
                                                         "easy": ([1.0] * 3, [50.0] * 3)}),
        "compress_only": seeds([0.6] * 3, [100.0] * 3, tiers={"hard": ([0.49, 0.50, 0.51], [100.0] * 3),
                                                              "easy": ([1.0] * 3, [40.0] * 3)}),
    })
    report = verdict(aggregated)
    hard, = report["per_tier"]["hard"]
    # accuracy: +25 points on every seed (p = 0); tokens: +0.1, +30.1, +60.1: t = 30.1 / 17.3 = 1.74, p = 0.22
    tokens_t = 30.1 / (30.0 / math.sqrt(3))
    assert hard == {"siri": "siri_low", "reference": "compress_only", "outcome": "siri_low wins",
                    "accuracy_delta_points": pytest.approx(25.0), "accuracy_beyond_spread": True,
                    "tokens_delta": pytest.approx(30.1), "tokens_beyond_spread": False,
                    "accuracy": {"p_value": 0.0, "df": 2, "se": 0.0, "threshold": 0.0, "beyond": True},
                    "tokens": {"p_value": pytest.approx(df2_p(tokens_t)), "df": 2,
                               "se": pytest.approx(30 / math.sqrt(3)),
                               "threshold": pytest.approx(4.3027 * 30 / math.sqrt(3), rel=1e-4), "beyond": False}}
    easy, = report["per_tier"]["easy"]
    assert easy["accuracy_delta_points"] == 0.0 and easy["accuracy_beyond_spread"] is False
    assert easy["tokens_delta"] == pytest.approx(10.0) and easy["tokens_beyond_spread"] is True
    assert easy["outcome"] == "compress_only wins"  # 10 tokens longer on every seed at the same accuracy
    assert "medium" not in report["per_tier"]
    assert (f"hard tier: siri_low vs compress_only: +25.0 points (p=0, beyond), +30.1 tokens "
            f"({p_text(df2_p(tokens_t))}, within): siri_low wins.") in report["lines"]
    assert list(report["per_tier"]) == ["easy", "hard"]  # the order of the tiers argument
    assert report["test"] == {"name": "paired t", "paired_on": "seeds", "pairs": 3, "df": 2, "alpha": 0.05,
                              "tier_tests": 4}


def test_per_tier_claims_are_corrected_with_holm():
    # hard-tier accuracy +8, +12, +16 points: t = 12 / (4 / sqrt 3) = 5.2, p = 0.035: beyond on its own,
    # not after Holm over the 4 tier tests (2 tiers x 2 axes; the others p = 1): 0.035 >= 0.05 / 4
    tiers_low = {"hard": ([0.58, 0.62, 0.66], [50.0] * 3), "easy": ([0.9] * 3, [20.0] * 3)}
    tiers_ref = {"hard": ([0.50, 0.50, 0.50], [50.0] * 3), "easy": ([0.9] * 3, [20.0] * 3)}
    aggregated = aggregate({"siri_low": seeds([0.58, 0.62, 0.66], [50.0] * 3, tiers=tiers_low),
                            "compress_only": seeds([0.5] * 3, [50.0] * 3, tiers=tiers_ref)})
    report = verdict(aggregated)
    p = df2_p(12 / (4 / math.sqrt(3)))
    assert 0.05 / 4 < p < 0.05
    hard, = report["per_tier"]["hard"]
    assert hard["accuracy"]["p_value"] == pytest.approx(p)
    assert hard["accuracy_beyond_spread"] is False and hard["outcome"] == "tie"
    assert report["comparisons"][0]["outcome"] == "siri_low wins"  # the overall test alone: at alpha
    assert any("paired t, df=2, alpha=0.05, Holm over 4 tier tests" in line for line in report["lines"])
    # one tier only: Holm over 2 tests, 0.035 >= 0.05 / 2: still within; at alpha = 0.1 (0.05 per test) beyond
    one_tier = verdict(aggregated, tiers=("hard",))
    assert one_tier["test"]["tier_tests"] == 2 and one_tier["per_tier"]["hard"][0]["accuracy_beyond_spread"] is False
    assert verdict(aggregated, tiers=("hard",), alpha=0.1)["per_tier"]["hard"][0]["outcome"] == "siri_low wins"


def test_absent_checkpoints_are_skipped():
    aggregated = aggregate({"base": constant(0.3, 50.0, tiers={"hard": (0.1, 60.0)}),
                            "siri_low": constant(0.5, 40.0, tiers={"hard": (0.3, 45.0)}),
                            "baseline": constant(0.55, 80.0, tiers={"hard": (0.35, 90.0)})})
    report = verdict(aggregated)
    assert report["pareto_front"] == ["siri_low", "baseline"]
    assert report["dominations"] == []
    assert [(c["siri"], c["other"]) for c in report["comparisons"]] == [("siri_low", "baseline")]
    assert [(c["siri"], c["reference"]) for c in report["per_tier"]["hard"]] == [("siri_low", "baseline")]
    text = "\n".join(report["lines"])
    for absent in ("siri_high", "compress_only", "thinkprune", "length_penalty"):
        assert absent not in text
    # standard errors 0: +5 points and +40 tokens are both beyond, a trade-off
    assert "baseline vs siri_low: a trade-off beyond the seed spread: +5.0 points (p=0, beyond), " \
           "+40.0 tokens (p=0, beyond)." in report["lines"]
    assert "No arm beats siri_low beyond the seed spread; none dominates it even on the means." in report["lines"]


def test_lines_name_every_dominating_arm_but_not_base():
    aggregated = aggregate({"base": constant(0.95, 10.0), "siri_low": constant(0.6, 40.0),
                            "siri_high": constant(0.5, 100.0), "baseline": constant(0.55, 90.0),
                            "thinkprune": constant(0.5, 60.0), "length_penalty": constant(0.7, 100.0),
                            "compress_only": constant(0.4, 30.0)})
    report = verdict(aggregated)
    dominating = {(d["siri"], d["by"]) for d in report["dominations"]}
    assert dominating == {("siri_high", "siri_low"), ("siri_high", "baseline"), ("siri_high", "thinkprune"),
                          ("siri_high", "length_penalty")}
    assert report["pareto_front"] == ["base"]
    for d in report["dominations"]:
        assert any(line.startswith(f"{d['by']} beats {d['siri']} beyond the seed spread: ")
                   for line in report["lines"])
    assert not any(line.startswith("base ") for line in report["lines"])
    # standard errors 0: every nonzero difference is beyond; equal on one axis is a win on the other
    assert {d["by"]: d["beyond_spread"] for d in report["dominations"]} == {
        "siri_low": True, "baseline": True, "thinkprune": True, "length_penalty": True}
    assert ("thinkprune beats siri_high beyond the seed spread: +0.0 points (p=1.000, within), "
            "-40.0 tokens (p=0, beyond).") in report["lines"]
    assert ("length_penalty beats siri_high beyond the seed spread: +20.0 points (p=0, beyond), "
            "+0.0 tokens (p=1.000, within).") in report["lines"]
    # siri_high beats no one, siri_low beats siri_high and compress_only trades off against it
    assert "compress_only vs siri_low: a trade-off beyond the seed spread: -20.0 points (p=0, beyond), " \
           "-10.0 tokens (p=0, beyond)." in report["lines"]
    assert not any(line.startswith("siri_high beats") for line in report["lines"])


def test_format_mean_spread_uses_std_over_seeds_else_sem():
    three = aggregate({"a": seeds([0.830, 0.842, 0.854], [10.0, 20.0, 30.0])})["a"]
    assert format_mean_spread(three["accuracy"]) == "84.2% ± 1.2"  # std 0.012, not the s.e. 0.0069
    assert format_mean_spread(three["mean_tokens"], percent=False) == "20.0 ± 10.0"
    one = aggregate({"a": [result(0.5, 20.0, per_prompt=[(0.25, 10.0), (0.75, 30.0)])]})["a"]
    assert spread(one["accuracy"]) == pytest.approx(0.25)  # 2 prompts: s.e. = half their difference
    assert format_mean_spread(one["accuracy"]) == "50.0% ± 25.0"
    no_rows = aggregate({"a": [result(0.5, 20.0)]})["a"]
    assert format_mean_spread(no_rows["accuracy"]) == "50.0%"
    assert format_mean_spread(no_rows["mean_tokens"], percent=False) == "20.0"


def test_one_seed_verdict_pairs_the_prompts_or_says_unknown():
    low_rows = [(0.5, 20.0), (0.25, 22.0), (0.75, 18.0), (0.5, 20.0)]
    base_rows = [(a + 0.25, t - 10.0) for a, t in low_rows]  # every prompt 25 points better, 10 tokens shorter
    report = verdict(aggregate({"siri_low": [result(0.5, 20.0, per_prompt=low_rows)],
                                "baseline": [result(0.75, 10.0, per_prompt=base_rows)]}))
    assert report["test"] == {"name": "paired t", "paired_on": "prompts", "pairs": 4, "df": 3, "alpha": 0.05,
                              "tier_tests": 0}
    assert report["comparisons"][0]["outcome"] == "baseline wins"
    assert "baseline beats siri_low beyond the prompt spread: +25.0 points (p=0, beyond), -10.0 tokens (p=0, beyond)." \
        in report["lines"]
    assert any("Test (prompt spread): paired t, df=prompts-1" in line and "(4 overall)" in line
               for line in report["lines"])
    # the same per-prompt numbers in another prompt order: still paired by prompt index
    shuffled = [result(0.75, 10.0, per_prompt=base_rows)]
    shuffled[0]["per_prompt"].reverse()
    again = verdict(aggregate({"siri_low": [result(0.5, 20.0, per_prompt=low_rows)], "baseline": shuffled}))
    assert again["comparisons"][0]["outcome"] == "baseline wins"
    # other prompts on one side, or no per-prompt rows: nothing to pair
    other_prompts = [result(0.75, 10.0, per_prompt=base_rows)]
    other_prompts[0]["per_prompt"] = [{**row, "index": row["index"] + 10} for row in other_prompts[0]["per_prompt"]]
    for baseline in (other_prompts, [result(0.6, 10.0)]):
        report = verdict(aggregate({"siri_low": [result(0.5, 20.0, per_prompt=low_rows)], "baseline": baseline}))
        assert report["comparisons"][0]["outcome"] == "unknown"
        assert report["comparisons"][0]["accuracy"] == {"p_value": None, "df": None, "se": None, "threshold": None,
                                                        "beyond": None}
        assert report["dominations"][0]["beyond_spread"] is None
        assert "Whether an arm beats siri_low beyond the prompt spread is unknown." in report["lines"]


def test_one_seed_tiers_pair_the_prompts_of_each_tier():
    low_rows = [(1.0, 10.0), (0.75, 12.0), (0.25, 30.0), (0.5, 28.0)]
    ref_rows = [(1.0, 10.0), (0.75, 12.0), (0.0, 30.0), (0.25, 28.0)]  # hard tier: 25 points lower per prompt
    tiers = {0: "easy", 1: "easy", 2: "hard", 3: "hard"}
    report = verdict(aggregate({
        "siri_low": [result(0.625, 20.0, per_prompt=low_rows,
                            tiers={"easy": (0.875, 11.0, 2), "hard": (0.375, 29.0, 2)})],
        "compress_only": [result(0.5, 20.0, per_prompt=ref_rows,
                                 tiers={"easy": (0.875, 11.0, 2), "hard": (0.125, 29.0, 2)})]}, prompt_tiers=tiers))
    hard, = report["per_tier"]["hard"]
    assert hard["accuracy"]["df"] == 1 and hard["accuracy"]["p_value"] == 0.0 and hard["outcome"] == "siri_low wins"
    easy, = report["per_tier"]["easy"]
    assert easy["outcome"] == "tie" and easy["accuracy"]["p_value"] == 1.0


@pytest.mark.parametrize("results, message", [
    ({}, "at least one checkpoint"),
    ({"a": constant(0.5, 1.0), "b": constant(0.5, 1.0)[:2]}, r"same number of seeds, got \{'a': 3, 'b': 2\}"),
    ({"a": []}, "at least one result"),
    ({"a": [result(1.5, 1.0)]}, r"results\['a'\]\[0\] has accuracy 1.5, outside \[0, 1\]"),
    ({"a": [{"accuracy": 0.5}]}, r"results\['a'\]\[0\] needs a numeric 'mean_tokens'"),
    ({"a": [result(0.5, 1.0, tiers={"hard": (0.5, 1.0, 4)}), result(0.5, 1.0)]}, "different tiers across seeds"),
    ({"a": [{**result(0.5, 1.0, per_prompt=[(0.5, 1.0)] * 3), "num_prompts": 4}]},
     "3 per_prompt rows but num_prompts=4"),
])
def test_bad_input(results, message):
    with pytest.raises(ValueError, match=message):
        aggregate(results)


def test_verdict_rejects_mixed_seed_counts():
    aggregated = {**aggregate({"a": constant(0.5, 1.0)}), **aggregate({"b": [result(0.5, 1.0)]})}
    with pytest.raises(ValueError, match="same number of seeds"):
        verdict(aggregated)
    with pytest.raises(ValueError, match="at least one"):
        verdict({})
    with pytest.raises(ValueError, match=r"alpha must be in \(0, 1\)"):
        verdict(aggregate({"a": constant(0.5, 1.0)}), alpha=0.0)


def test_plot_pareto_draws_error_bars(tmp_path, figures):  # noqa: F811 (the imported fixture)
    from matplotlib.colors import to_rgba
    from matplotlib.container import ErrorbarContainer

    points = [{"label": "siri_low", "series": "siri", "accuracy": 0.6, "mean_tokens": 40.0,
               "accuracy_err": 0.05, "tokens_err": 4.0},
              {"label": "siri_high", "series": "siri", "accuracy": 0.62, "mean_tokens": 70.0,
               "accuracy_err": 0.02, "tokens_err": 6.0},
              {"label": "baseline", "series": "fixed", "accuracy": 0.58, "mean_tokens": 90.0}]
    out = plot_pareto(points, tmp_path / "pareto.png")
    assert_png(out)
    ax, = figures[0].axes
    bars = [c for c in ax.containers if isinstance(c, ErrorbarContainer)]
    assert len(bars) == 1  # the "fixed" series has no errors: no error bars
    assert bars[0].has_xerr and bars[0].has_yerr
    segments = {tuple((round(x, 6), round(y, 6)) for x, y in segment)
                for collection in bars[0].lines[2] for segment in collection.get_segments()}
    assert ((40.0, 0.55), (40.0, 0.65)) in segments  # siri_low's accuracy_err 0.05
    assert ((64.0, 0.62), (76.0, 0.62)) in segments  # siri_high's tokens_err 6
    assert all(tuple(c) == to_rgba("C0", 0.8) for collection in bars[0].lines[2] for c in collection.get_colors())
    assert bars[0].lines[1], "no caps"
    assert not legends_over_axes(figures[0])
    assert "better" in ax.get_title(loc="left")
    assert [t.get_text() for t in figures[0].legends[0].get_texts()] == ["siri", "fixed"]

    figures.clear()
    plot_pareto([{k: v for k, v in p.items() if not k.endswith("_err")} for p in points], tmp_path / "plain.png")
    assert not [c for c in figures[0].axes[0].containers if isinstance(c, ErrorbarContainer)]
    with pytest.raises(ValueError, match=r"must be >= 0, not at \['siri_low'\]"):
        plot_pareto([{**points[0], "tokens_err": -1.0}], tmp_path / "bad.png")
