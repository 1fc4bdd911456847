"""siri.demo.verdict on hand-computable numbers, and plot_pareto's error bars."""
import math

import pytest
from test_plot import assert_png, figures, legends_over_axes  # noqa: F401 (figures is a fixture)

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
    assert stats["tiers"]["easy"]["accuracy"]["sem"] is None  # no prompt -> tier map: unknown
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


@pytest.mark.parametrize("accuracies, tokens, beyond", [
    ([0.55, 0.60, 0.65], [80.0, 80.0, 80.0], True),    # +10 points vs 2 x 2.9 s.e., -20 tokens vs 0
    ([0.45, 0.60, 0.75], [80.0, 80.0, 80.0], False),   # same means, +10 points vs 2 x 8.7 s.e.
    ([0.55, 0.60, 0.65], [60.0, 80.0, 100.0], False),  # accuracy beyond, -20 tokens vs 2 x 11.5 s.e.
])
def test_domination_within_or_beyond_the_spread(accuracies, tokens, beyond):
    aggregated = aggregate({"base": constant(0.9, 50.0), "siri_low": constant(0.5, 100.0),
                            "compress_only": seeds(accuracies, tokens)})
    report = verdict(aggregated)
    assert report["dominations"] == [{"siri": "siri_low", "by": "compress_only",
                                      "accuracy_delta_points": pytest.approx(10.0),
                                      "tokens_delta": pytest.approx(-20.0), "beyond_spread": beyond}]
    where = "beyond" if beyond else "within"
    assert (f"compress_only dominates siri_low: +10.0 points, -20.0 tokens, {where} the seed spread "
            "(2 x combined s.e.).") in report["lines"]
    assert ("No arm dominates siri_low beyond the seed spread." in report["lines"]) is not beyond
    assert any("2 x the combined standard error" in line for line in report["lines"])


def test_per_tier_deltas():
    aggregated = aggregate({
        "siri_low": seeds([0.6] * 3, [100.0] * 3, tiers={"hard": ([0.74, 0.75, 0.76], [100.1, 130.1, 160.1]),
                                                         "easy": ([1.0] * 3, [50.0] * 3)}),
        "compress_only": seeds([0.6] * 3, [100.0] * 3, tiers={"hard": ([0.49, 0.50, 0.51], [100.0] * 3),
                                                              "easy": ([1.0] * 3, [40.0] * 3)}),
    })
    report = verdict(aggregated)
    hard, = report["per_tier"]["hard"]
    # accuracy: +25 points vs 2 x sqrt(2) x 0.577 points; tokens: +30.1 vs 2 x 30 / sqrt(3) = 34.6
    assert hard == {"siri": "siri_low", "reference": "compress_only",
                    "accuracy_delta_points": pytest.approx(25.0), "accuracy_beyond_spread": True,
                    "tokens_delta": pytest.approx(30.1), "tokens_beyond_spread": False}
    easy, = report["per_tier"]["easy"]
    assert easy["accuracy_delta_points"] == 0.0 and easy["accuracy_beyond_spread"] is False
    assert easy["tokens_delta"] == pytest.approx(10.0) and easy["tokens_beyond_spread"] is True
    assert "medium" not in report["per_tier"]
    assert ("hard tier: siri_low vs compress_only: +25.0 points (beyond spread), +30.1 tokens (within spread)."
            in report["lines"])
    assert list(report["per_tier"]) == ["easy", "hard"]  # the order of the tiers argument


def test_absent_checkpoints_are_skipped():
    aggregated = aggregate({"base": constant(0.3, 50.0, tiers={"hard": (0.1, 60.0)}),
                            "siri_low": constant(0.5, 40.0, tiers={"hard": (0.3, 45.0)}),
                            "baseline": constant(0.55, 80.0, tiers={"hard": (0.35, 90.0)})})
    report = verdict(aggregated)
    assert report["pareto_front"] == ["siri_low", "baseline"]
    assert report["dominations"] == []
    assert [(c["siri"], c["reference"]) for c in report["per_tier"]["hard"]] == [("siri_low", "baseline")]
    text = "\n".join(report["lines"])
    for absent in ("siri_high", "compress_only", "thinkprune", "length_penalty"):
        assert absent not in text
    assert "No arm dominates siri_low, not even on the means." in report["lines"]


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
        assert any(line.startswith(f"{d['by']} dominates {d['siri']}: ") for line in report["lines"])
    assert not any(line.startswith("base dominates") for line in report["lines"])
    # standard errors 0: beyond the spread unless equal on one axis (the rule needs both axes)
    assert {d["by"]: d["beyond_spread"] for d in report["dominations"]} == {
        "siri_low": True, "baseline": True, "thinkprune": False, "length_penalty": False}
    assert "thinkprune dominates siri_high: +0.0 points, -40.0 tokens, beyond the seed spread (2 x combined s.e.)." \
        not in report["lines"]  # equal accuracy: not beyond the spread on that axis
    assert "thinkprune dominates siri_high: +0.0 points, -40.0 tokens, within the seed spread (2 x combined s.e.)." \
        in report["lines"]


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


def test_one_seed_verdict_speaks_of_the_prompt_spread_or_an_unknown_one():
    rows = [(0.5, 10.0), (0.5, 10.0)]
    report = verdict(aggregate({"siri_low": [result(0.5, 20.0, per_prompt=rows)],
                                "baseline": [result(0.6, 10.0, per_prompt=rows)]}))
    assert "baseline dominates siri_low: +10.0 points, -10.0 tokens, beyond the prompt spread (2 x combined s.e.)." \
        in report["lines"]
    report = verdict(aggregate({"siri_low": [result(0.5, 20.0)], "baseline": [result(0.6, 10.0)]}))
    assert report["dominations"][0]["beyond_spread"] is None
    assert "Whether an arm dominates siri_low beyond the prompt spread is unknown." in report["lines"]


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
