"""siri.demo.predictions on synthetic study summaries: a summary built to show the mechanism holds
every prediction, breaking each prediction's own condition flips it, each refutation occurs when
its condition is met, the paired test sees a consistent per-seed gap an unpaired one would not,
and one seed, None values, missing arms and missing keys give unknowns or a clear ValueError."""
import json
import math
import statistics

import pytest

from siri.demo.predictions import (BASELINE_DRIFT_MAX, FRONTIER_MARGIN, PEAK_R_MAX_RATIO, TROUGH_R_MAX_RATIO,
                                   evaluate_predictions)
from siri.demo.statistics import t_quantile

STEPS = [1, 16, 31, 46, 61, 76, 91]
PEAKS = [31, 61, 91]
TROUGHS = [16, 46, 76]
SEEDS = ("0", "1", "2")
ARMS = ("siri", "baseline", "compress_only", "thinkprune", "length_penalty")
PREDICTIONS = ("baseline_keeps_length_and_redundancy", "troughs_prune_redundancy",
               "peaks_restore_necessary_reasoning", "frontier_grows_each_cycle")
REFUTATIONS = ("confirmations_return_at_peaks", "hard_accuracy_not_recovered",
               "compress_only_matches_siri_high_on_hard", "baseline_compresses_like_siri")

SEED_SHIFT = {"0": 0.0, "1": 0.03, "2": -0.02}  # what moves every arm of a seed together
NOISE = {"base": (0.001, -0.002, 0.0), "siri": (0.004, -0.006, 0.002), "baseline": (-0.003, 0.005, 0.001),
         "compress_only": (0.002, 0.0, -0.004), "thinkprune": (0.0, 0.003, -0.002),
         "length_penalty": (-0.001, 0.002, 0.003)}

BASE = {"tokens": 100.0, "R": 0.20, "hard_accuracy": 0.60, "hard_C": 0.50, "long_hard": 0.50}
TROUGH = {"tokens": 40.0, "R": 0.01, "hard_accuracy": 0.50, "hard_C": 0.60, "long_hard": 0.20}
PEAK = {"tokens": 60.0, "R": 0.05, "hard_accuracy": 0.72, "hard_C": 0.82, "long_hard": 0.55}
FLAT = {"tokens": 102.0, "R": 0.19, "hard_accuracy": 0.70, "hard_C": 0.80, "long_hard": 0.55}
COMPRESSED = {"tokens": 45.0, "R": 0.01, "hard_accuracy": 0.55, "hard_C": 0.60, "long_hard": 0.25}


def point(nominal, arm, seed, index, step=None):
    """One eval point of the summary's shape: fractions moved by the seed's shift plus the arm's
    noise, tokens and R scaled by them."""
    move = SEED_SHIFT[seed] + NOISE[arm][index]
    tokens, r = nominal["tokens"] * (1 + move), nominal["R"] * (1 + move)
    hard = {"accuracy": nominal["hard_accuracy"] + move, "mean_tokens": 1.5 * tokens, "R": r,
            "C": nominal["hard_C"] + move, "U": 0.05, "slip_rate": 0.3, "confirmations": 2.0}
    tiers = {"easy": {**hard, "accuracy": 0.95, "C": None}, "medium": {**hard, "accuracy": 0.85}, "hard": hard}
    out = {"accuracy": 0.8 + move, "mean_tokens": tokens, "R": r, "C": hard["C"], "U": 0.05, "tiers": tiers,
           "long_hard": {"accuracy": nominal["long_hard"] + move, "mean_tokens": 2.0 * tokens, "num_prompts": 4}}
    return out if step is None else {"step": step, **out}


def siri_nominal(step):
    return TROUGH if step in TROUGHS else PEAK if step in PEAKS else BASE


def summary(seeds=SEEDS, arms=ARMS):
    """A summary built to show the mechanism: the baseline (and the other reference arms) flat at
    the base's length and redundancy, SIRI's R near 0 and long-hard accuracy down at troughs, its
    hard accuracy and C back at peaks with few confirmations, compress_only compressed and worse on
    hard, SIRI's frontier growing each cycle."""
    def nominal(arm, step):
        return siri_nominal(step) if arm == "siri" else COMPRESSED if arm == "compress_only" else FLAT
    return {
        "trajectory": {"steps": list(STEPS), "peaks": list(PEAKS), "troughs": list(TROUGHS),
                       "arms": {arm: {seed: [point(nominal(arm, step), arm, seed, i, step) for step in STEPS]
                                      for i, seed in enumerate(seeds)} for arm in arms}},
        "base_points": {seed: point(BASE, "base", seed, i) for i, seed in enumerate(seeds)},
        "frontier": {"cycles": [1, 2, 3],
                     "siri": {seed: [area + SEED_SHIFT[seed] for area in (0.30, 0.40, 0.50)] for seed in seeds}},
        "l_max": 256, "l_min": 64}


def node(s, arm, seed, step, path):
    """The dict holding the last key of ``path`` in the point of ``arm`` / ``seed`` at ``step``
    (``arm`` "base": the base point)."""
    found = s["base_points"][seed] if arm == "base" else s["trajectory"]["arms"][arm][seed][STEPS.index(step)]
    for key in path[:-1]:
        found = found[key]
    return found


def get(s, arm, step, path):
    return [node(s, arm, seed, step, path)[path[-1]] for seed in s["base_points"]]


def put(s, arm, step, path, values):
    for seed, value in zip(s["base_points"], values):
        node(s, arm, seed, step, path)[path[-1]] = value


HARD_ACCURACY, HARD_C, LONG_HARD = ("tiers", "hard", "accuracy"), ("tiers", "hard", "C"), ("long_hard", "accuracy")


def held(report):
    return {p["name"]: p["held"] for p in report["predictions"]}


def occurred(report):
    return {r["name"]: r["occurred"] for r in report["refutations"]}


def prediction(report, name):
    return next(p for p in report["predictions"] if p["name"] == name)


def refutation(report, name):
    return next(r for r in report["refutations"] if r["name"] == name)


def test_mechanism_summary_holds_every_prediction():
    report = evaluate_predictions(summary())
    assert held(report) == dict.fromkeys(PREDICTIONS, True)
    assert occurred(report) == dict.fromkeys(REFUTATIONS, False)
    assert report["toy_valid"] is True
    lines = report["lines"]
    assert len(lines) == len(PREDICTIONS) + len(REFUTATIONS) + 1
    assert lines[0].startswith("prediction baseline_keeps_length_and_redundancy: held — the baseline's mean tokens")
    assert lines[4].startswith("refutation confirmations_return_at_peaks: did not occur — ")
    assert lines[-1].startswith("toy valid: yes")
    for entry in report["predictions"] + report["refutations"]:
        assert entry["statement"] and entry["why"].endswith(".")
    json.dumps(report)  # the values are plain numbers, lists and dicts


def test_the_numbers_used_are_reported():
    report = evaluate_predictions(summary())
    values = prediction(report, "baseline_keeps_length_and_redundancy")["values"]
    assert values["base_R"] == pytest.approx(statistics.fmean(0.20 * (1 + SEED_SHIFT[s] + n)
                                                              for s, n in zip(SEEDS, NOISE["base"])))
    assert values["drift"] < BASELINE_DRIFT_MAX
    troughs = prediction(report, "troughs_prune_redundancy")["values"]["troughs"]
    assert [row["step_before"] for row in troughs] == [1, 31, 61]  # the first eval, then the previous peak
    assert troughs[0]["long_hard_drop"] == pytest.approx(0.30, abs=0.01)
    peaks = prediction(report, "peaks_restore_necessary_reasoning")["values"]["peaks"]
    assert [row["step"] for row in peaks] == PEAKS
    assert peaks[0]["hard_accuracy"]["mean_difference"] == pytest.approx(0.02 + statistics.fmean(
        a - b for a, b in zip(NOISE["siri"], NOISE["baseline"])))
    assert peaks[0]["hard_accuracy"]["df"] == 2
    assert prediction(report, "frontier_grows_each_cycle")["values"]["mean_areas"] == pytest.approx(
        [0.30 + 1 / 300, 0.40 + 1 / 300, 0.50 + 1 / 300])


def _baseline_longer(s):
    put(s, "baseline", STEPS[-1], ("mean_tokens",), [130.0, 135.0, 125.0])


def _baseline_loses_redundancy(s):
    put(s, "baseline", STEPS[-1], ("R",), [0.10, 0.12, 0.11])


def _redundancy_at_a_trough(s):
    put(s, "siri", 46, ("R",), [0.08, 0.09, 0.07])


def _long_hard_kept_at_first_trough(s):
    put(s, "siri", 16, LONG_HARD, [v - 0.03 for v in get(s, "siri", 1, LONG_HARD)])  # drop of 3 points < 5


def _long_hard_kept_at_last_trough(s):
    put(s, "siri", 76, LONG_HARD, [v - 0.04 for v in get(s, "siri", 61, LONG_HARD)])


def _hard_accuracy_down_at_a_peak(s):
    put(s, "siri", 61, HARD_ACCURACY, [v - d for v, d in zip(get(s, "baseline", 61, HARD_ACCURACY),
                                                             (0.10, 0.11, 0.09))])


def _hard_c_down_at_a_peak(s):
    put(s, "siri", 31, HARD_C, [v - d for v, d in zip(get(s, "baseline", 31, HARD_C), (0.20, 0.22, 0.19))])


def _redundancy_at_a_peak(s):
    put(s, "siri", 61, ("R",), [0.12, 0.13, 0.11])


def _frontier_stalls(s):
    for areas in s["frontier"]["siri"].values():
        areas[2] = areas[1] + FRONTIER_MARGIN


def _frontier_shrinks(s):
    for areas in s["frontier"]["siri"].values():
        areas[1] = areas[0] - 0.05


@pytest.mark.parametrize(("name", "breaker"), [
    ("baseline_keeps_length_and_redundancy", _baseline_longer),
    ("baseline_keeps_length_and_redundancy", _baseline_loses_redundancy),
    ("troughs_prune_redundancy", _redundancy_at_a_trough),
    ("troughs_prune_redundancy", _long_hard_kept_at_first_trough),
    ("troughs_prune_redundancy", _long_hard_kept_at_last_trough),
    ("peaks_restore_necessary_reasoning", _hard_accuracy_down_at_a_peak),
    ("peaks_restore_necessary_reasoning", _hard_c_down_at_a_peak),
    ("peaks_restore_necessary_reasoning", _redundancy_at_a_peak),
    ("frontier_grows_each_cycle", _frontier_stalls),
    ("frontier_grows_each_cycle", _frontier_shrinks),
])
def test_each_prediction_fails_on_its_own_condition(name, breaker):
    s = summary()
    breaker(s)
    report = evaluate_predictions(s)
    assert held(report) == {**dict.fromkeys(PREDICTIONS, True), name: False}
    line = next(line for line in report["lines"] if line.startswith(f"prediction {name}:"))
    assert line.startswith(f"prediction {name}: NOT held — ")


def test_not_held_says_which_check_failed():
    s = summary()
    _redundancy_at_a_trough(s)
    why = prediction(evaluate_predictions(s), "troughs_prune_redundancy")["why"]
    assert why == "at trough 46 SIRI's R is 0.080 (must be at most 0.050 = 0.25 x the base's 0.201)."
    assert TROUGH_R_MAX_RATIO == 0.25


def _confirmations_return(s):
    put(s, "siri", PEAKS[-1], ("R",), [0.15, 0.14, 0.16])


def _hard_accuracy_stays_down(s):
    _hard_accuracy_down_at_a_peak(s)


def _compress_only_as_good(s):
    put(s, "compress_only", STEPS[-1], HARD_ACCURACY,
        [v + d for v, d in zip(get(s, "siri", PEAKS[-1], HARD_ACCURACY), (0.01, -0.02, 0.0))])


def _baseline_compresses(s):
    put(s, "baseline", STEPS[-1], ("mean_tokens",),
        [v + d for v, d in zip(get(s, "siri", PEAKS[-1], ("mean_tokens",)), (1.0, -2.0, 0.5))])


@pytest.mark.parametrize(("name", "maker"), [
    ("confirmations_return_at_peaks", _confirmations_return),
    ("hard_accuracy_not_recovered", _hard_accuracy_stays_down),
    ("compress_only_matches_siri_high_on_hard", _compress_only_as_good),
    ("baseline_compresses_like_siri", _baseline_compresses),
])
def test_each_refutation_occurs_on_its_condition(name, maker):
    s = summary()
    maker(s)
    report = evaluate_predictions(s)
    assert occurred(report) == {**dict.fromkeys(REFUTATIONS, False), name: True}
    assert f"refutation {name}: occurred — " in "\n".join(report["lines"])
    assert report["toy_valid"] is (name != "baseline_compresses_like_siri")


def test_an_invalid_toy_is_said():
    s = summary()
    _baseline_compresses(s)
    report = evaluate_predictions(s)
    assert report["toy_valid"] is False
    assert report["lines"][-1].startswith("toy valid: NO — ")
    assert held(report)["baseline_keeps_length_and_redundancy"] is False
    assert PEAK_R_MAX_RATIO == 0.5


def test_a_baseline_that_compresses_less_than_siri_keeps_the_toy_valid():
    s = summary()
    put(s, "baseline", STEPS[-1], ("mean_tokens",), [80.0, 83.0, 78.0])  # -20% from the base, far above SIRI's 60
    report = evaluate_predictions(s)
    assert occurred(report)["baseline_compresses_like_siri"] is False
    assert report["toy_valid"] is True
    assert held(report)["baseline_keeps_length_and_redundancy"] is False


def test_the_test_is_paired_by_seed():
    """SIRI's hard accuracy 3 points below the baseline's at every seed, the seeds themselves 30
    points apart: the per-seed differences are consistent (paired: beyond) although the two
    arms' spreads overlap completely (unpaired: far within)."""
    s = summary()
    baseline, gaps = [0.30, 0.60, 0.90], (0.030, 0.031, 0.029)
    put(s, "baseline", 61, HARD_ACCURACY, baseline)
    put(s, "siri", 61, HARD_ACCURACY, [b - g for b, g in zip(baseline, gaps)])
    siri = get(s, "siri", 61, HARD_ACCURACY)
    unpaired_t = (statistics.fmean(siri) - statistics.fmean(baseline)) / math.sqrt(
        statistics.variance(siri) / 3 + statistics.variance(baseline) / 3)
    assert abs(unpaired_t) < t_quantile(0.975, 4) / 10  # even at the unpaired test's largest df

    report = evaluate_predictions(s)
    assert held(report)["peaks_restore_necessary_reasoning"] is False
    assert occurred(report)["hard_accuracy_not_recovered"] is True
    test = refutation(report, "hard_accuracy_not_recovered")["values"]["peaks"][1]["hard_accuracy"]
    assert test["mean_difference"] == pytest.approx(-0.030)
    assert test["below_beyond"] and test["p_value"] < 0.05
    assert "at peak 61 SIRI's hard accuracy minus the baseline's is -3.0 points" in \
        refutation(report, "hard_accuracy_not_recovered")["why"]


def test_one_seed_leaves_the_paired_parts_unknown():
    report = evaluate_predictions(summary(seeds=("0",)))
    assert held(report) == {**dict.fromkeys(PREDICTIONS, True), "peaks_restore_necessary_reasoning": None}
    assert "needs at least 2 seeds" in prediction(report, "peaks_restore_necessary_reasoning")["why"]
    assert occurred(report) == {"confirmations_return_at_peaks": False, "hard_accuracy_not_recovered": None,
                                "compress_only_matches_siri_high_on_hard": None,
                                "baseline_compresses_like_siri": False}  # the baseline did not shorten at all
    assert report["toy_valid"] is True
    assert "prediction peaks_restore_necessary_reasoning: unknown — " in "\n".join(report["lines"])


def test_one_seed_and_a_failed_unpaired_check_is_not_held():
    """Three-valued: a check that fails decides, whatever the unknown paired parts would say."""
    s = summary(seeds=("0",))
    put(s, "siri", 61, ("R",), [0.15])
    assert held(evaluate_predictions(s))["peaks_restore_necessary_reasoning"] is False


def _c_none_at_a_peak(s):
    node(s, "siri", "1", 61, HARD_C)["C"] = None  # no slips in that seed's hard lists


def _long_hard_unknown_at_a_trough(s):
    node(s, "siri", "2", 16, ("long_hard", "num_prompts"))["num_prompts"] = 0
    node(s, "siri", "2", 16, LONG_HARD)["accuracy"] = None


def _frontier_area_missing(s):
    s["frontier"]["siri"]["0"][2] = None


@pytest.mark.parametrize(("name", "blank"), [
    ("peaks_restore_necessary_reasoning", _c_none_at_a_peak),
    ("troughs_prune_redundancy", _long_hard_unknown_at_a_trough),
    ("frontier_grows_each_cycle", _frontier_area_missing),
])
def test_none_values_give_unknown(name, blank):
    s = summary()
    blank(s)
    report = evaluate_predictions(s)
    assert held(report) == {**dict.fromkeys(PREDICTIONS, True), name: None}
    assert "unknown" in prediction(report, name)["why"]


def test_no_base_redundancy_leaves_the_redundancy_claims_unknown():
    s = summary()
    s["base_points"]["1"]["R"] = None
    report = evaluate_predictions(s)
    assert held(report) == {"baseline_keeps_length_and_redundancy": None, "troughs_prune_redundancy": None,
                            "peaks_restore_necessary_reasoning": None, "frontier_grows_each_cycle": True}
    assert occurred(report)["confirmations_return_at_peaks"] is None


def test_a_failure_decides_despite_an_unknown():
    s = summary()
    _c_none_at_a_peak(s)
    _redundancy_at_a_peak(s)
    assert held(evaluate_predictions(s))["peaks_restore_necessary_reasoning"] is False


def test_missing_compress_only_is_unknown():
    report = evaluate_predictions(summary(arms=("siri", "baseline")))
    assert held(report) == dict.fromkeys(PREDICTIONS, True)
    assert occurred(report) == {**dict.fromkeys(REFUTATIONS, False), "compress_only_matches_siri_high_on_hard": None}
    assert "'compress_only'" in refutation(report, "compress_only_matches_siri_high_on_hard")["why"]


def test_missing_baseline_is_unknown():
    report = evaluate_predictions(summary(arms=("siri", "compress_only")))
    assert held(report) == {"baseline_keeps_length_and_redundancy": None, "troughs_prune_redundancy": True,
                            "peaks_restore_necessary_reasoning": None, "frontier_grows_each_cycle": True}
    assert occurred(report) == {"confirmations_return_at_peaks": False, "hard_accuracy_not_recovered": None,
                                "compress_only_matches_siri_high_on_hard": False,
                                "baseline_compresses_like_siri": None}
    assert report["toy_valid"] is None
    assert report["lines"][-1].startswith("toy valid: unknown")


@pytest.mark.parametrize("key", ["trajectory", "base_points", "frontier"])
def test_a_missing_section_is_a_value_error(key):
    s = summary()
    del s[key]
    with pytest.raises(ValueError, match=f"lacks '{key}'"):
        evaluate_predictions(s)


def test_a_trajectory_without_peaks_is_a_value_error():
    s = summary()
    del s["trajectory"]["peaks"]
    with pytest.raises(ValueError, match="trajectory lacks 'peaks'"):
        evaluate_predictions(s)


def test_seeds_that_differ_between_arms_are_a_value_error():
    s = summary()
    del s["trajectory"]["arms"]["thinkprune"]["2"]
    with pytest.raises(ValueError, match="seeds differ between arms"):
        evaluate_predictions(s)


def test_base_seeds_that_differ_from_the_arms_are_a_value_error():
    s = summary()
    del s["base_points"]["0"]
    with pytest.raises(ValueError, match="base_points has seeds"):
        evaluate_predictions(s)


def test_alpha_must_be_a_level():
    with pytest.raises(ValueError, match="alpha"):
        evaluate_predictions(summary(), alpha=1.5)
