"""The demo's parts on their own: tiers, caps, arms and the parallel job runner (the whole
demo runs in test_demo.py)."""
import math
import random

import pytest

from siri.config import load_config
from siri.demo.arms import ARMS, DEFAULT_ARMS, STUDY_ARMS, STUDY_SEEDS, checkpoint_title, checkpoints_of
from siri.demo.caps import L_MAX_FACTOR, L_MIN_MARGIN, choose_caps, distribution
from siri.demo.parallel import run_jobs
from siri.demo.report import variation_note
from siri.demo.trajectory import frontier_summary, mean_trajectory, trajectory_summary
from siri.demo.run import DEFAULT_CONFIG, DemoSettings, siri_schedule
from siri.demo.task import TIERS, make_problems


def test_problems_take_the_tiers_in_turn_and_respect_exclusions():
    train = make_problems(90, random.Random(0))
    assert [p.tier for p in train[:6]] == ["easy", "medium", "hard"] * 2
    for p in train:
        low, high = TIERS[p.tier]
        assert low <= len(p.items) <= high and p.answer == str(len(p.items))
    held_out = make_problems(30, random.Random(1), exclude={p.prompt for p in train})
    assert not {p.prompt for p in held_out} & {p.prompt for p in train}
    assert len({p.prompt for p in train}) == 90


def test_caps_come_from_the_base_p99_and_the_hard_concise_median():
    base_hard = list(range(1, 201))                        # p99 (nearest rank) = 198
    l_max, l_min = choose_caps(base_hard, [40, 50, 44])
    assert l_max == math.ceil(L_MAX_FACTOR * 198) and l_min == 44 + L_MIN_MARGIN
    with pytest.raises(ValueError, match="nothing to compress"):
        choose_caps([30, 31], [40, 50])
    with pytest.raises(ValueError, match="sampled hard-tier lengths"):
        choose_caps([], [40])


def test_length_distribution():
    d = distribution(list(range(1, 11)), threshold=7)
    assert (d["count"], d["min"], d["p10"], d["median"], d["p90"], d["p99"], d["max"]) == (10, 1, 1, 5.5, 9, 10, 10)
    assert d["fraction_above"] == 0.3
    assert distribution([], 3) == {"count": 0}


@pytest.mark.parametrize("arm,caps,reward", [
    ("siri", [116, 49, 116, 49, 116, 116], "none"),
    ("baseline", [116] * 6, "none"),
    ("compress_only", [49] * 6, "none"),
    ("thinkprune", [116, 116, 82, 82, 49, 49], "none"),
    ("length_penalty", [116] * 6, "kimi"),
])
def test_each_arm_is_its_schedule_and_reward(arm, caps, reward):
    cfg = load_config(DEFAULT_CONFIG, [*ARMS[arm].overrides(116, 49, 30), "model.path=/m", "data.train=/d.jsonl"],
                      validate=False)
    schedule = cfg.length_schedule()
    assert [schedule(t) for t in (0, 15, 30, 45, 60, 90)] == caps
    assert cfg.reward.length_reward == reward


def test_arm_sets_and_checkpoints():
    assert DEFAULT_ARMS == ("siri", "baseline", "compress_only") and set(STUDY_ARMS) == set(ARMS)
    assert checkpoints_of("siri") == {"siri_low": "trough", "siri_high": "peak"}
    assert checkpoints_of("thinkprune") == {"thinkprune": "final"}
    assert [checkpoint_title(n) for n in ("base", "siri_low", "siri_high", "baseline", "length_penalty")] == [
        "base", "SIRI-low (last trough)", "SIRI-high (last peak)", "baseline (fixed L_max)", "length penalty (Kimi)"]
    assert all(arm.title for arm in ARMS.values())
    assert DemoSettings.study().seeds == STUDY_SEEDS == 5 and DemoSettings.study().arms == STUDY_ARMS
    with pytest.raises(ValueError, match="arms must include 'siri'"):
        DemoSettings(arms=("baseline",))
    with pytest.raises(ValueError, match="seeds must be >= 1"):
        DemoSettings(seeds=0)


def square(x):
    return x * x


def fail(x):
    raise RuntimeError(f"task {x} failed")


@pytest.mark.parametrize("jobs", [1, 2])
def test_run_jobs_keeps_the_task_order_and_reports_each(jobs):
    done = []
    results = run_jobs(square, {f"t{i}": (i,) for i in range(5)}, jobs, on_done=lambda name, s: done.append(name))
    assert list(results) == [f"t{i}" for i in range(5)] and list(results.values()) == [0, 1, 4, 9, 16]
    assert sorted(done) == sorted(results)


def test_run_jobs_raises_a_task_error_and_rejects_bad_jobs():
    with pytest.raises(RuntimeError, match="task 3 failed"):
        run_jobs(fail, {"a": (3,)}, 2)
    with pytest.raises(ValueError, match="jobs must be >= 1"):
        run_jobs(square, {"a": (1,)}, 0)


def test_the_trajectory_is_averaged_over_the_seeds_that_all_evaluated_a_step():
    rng = random.Random()
    labels = ["1", "5 trough", "9 peak", "13 trough"]
    seeds = {str(s): [{"label": label, "series": f"cycle {i // 2 + 1}", "accuracy": rng.random(),
                       "mean_tokens": rng.uniform(10, 100)} for i, label in enumerate(labels)] for s in range(3)}
    del seeds["2"][1]  # one seed lacks an evaluation: the step is left out, not averaged over two
    averaged = mean_trajectory(seeds)
    assert [p["label"] for p in averaged] == ["1", "9 peak", "13 trough"]
    for point in averaged:
        same = [next(q for q in points if q["label"] == point["label"]) for points in seeds.values()]
        accuracy = [q["accuracy"] for q in same]
        mean = sum(accuracy) / 3
        assert point["accuracy"] == pytest.approx(mean)
        assert point["accuracy_err"] == pytest.approx((sum((a - mean) ** 2 for a in accuracy) / 2) ** 0.5)
        assert point["mean_tokens"] == pytest.approx(sum(q["mean_tokens"] for q in same) / 3)
        assert point["series"] == same[0]["series"]
    single = mean_trajectory({"0": seeds["0"]})
    assert [p["accuracy"] for p in single] == [p["accuracy"] for p in seeds["0"]]
    assert all(p["accuracy_err"] is None and p["tokens_err"] is None for p in single)
    assert mean_trajectory({"0": [], "1": []}) == []


def test_every_arm_is_evaluated_at_siris_peaks_and_troughs_counted_as_checkpoints():
    """The trajectory steps are SIRI's peaks and troughs as checkpoints count them (step_N =
    after N steps); every arm gets a point at each, in step order, labelled by SIRI's schedule,
    and the final peak closes cycle 3 instead of opening a cycle 4."""
    schedule, num_steps = siri_schedule(DEFAULT_CONFIG, [], 116, 49, 3)
    assert num_steps == 91
    extrema = sorted(set(schedule.peaks(num_steps)) | set(schedule.troughs(num_steps)))
    steps = [t + 1 for t in extrema]
    assert steps == [1, 16, 31, 46, 61, 76, 91]
    results = {(arm, n, s): {"accuracy": n / 100, "mean_tokens": 100.0 - n, "truncation_rate": 0.0,
                             "tiers": {"hard": {"accuracy": n / 200, "mean_tokens": 50.0, "num_prompts": 3}}}
               for s in (4, 5) for n in reversed(steps) for arm in ("siri", "baseline")}
    trajectory = trajectory_summary(results, schedule, num_steps)
    assert trajectory["steps"] == steps and list(trajectory["arms"]) == ["siri", "baseline"]
    for arm in ("siri", "baseline"):
        assert list(trajectory["arms"][arm]) == ["4", "5"]
        points = trajectory["arms"][arm]["5"]
        assert [p["step"] for p in points] == steps
        assert [p["label"] for p in points] == ["1 peak", "16 trough", "31 peak", "46 trough", "61 peak",
                                                "76 trough", "91 peak"]
        assert [p["series"] for p in points] == ["cycle 1"] * 3 + ["cycle 2"] * 2 + ["cycle 3"] * 2
        assert points[2]["accuracy"] == 0.31 and points[2]["tiers"]["hard"]["accuracy"] == 0.155
        assert points[2]["tiers"]["hard"]["C"] is None and points[2]["long_hard"]["num_prompts"] == 0
    assert (trajectory["peaks"], trajectory["troughs"]) == ([31, 61, 91], [16, 46, 76])
    frontier = frontier_summary(trajectory, l_max=100)
    assert frontier["cycles"] == [1, 2, 3] and frontier["steps"] == [[16, 31], [46, 61], [76, 91]]
    # cycle 1: (84 tokens, 16%) is dominated by (69, 31%); the areas grow as the points move out
    assert frontier["siri"]["5"][0] == pytest.approx(31 * 0.31 / 100)
    assert frontier["siri"]["5"] == sorted(frontier["siri"]["5"]) and frontier["arms"]["baseline"] == frontier["arms"]["siri"]


def test_one_seed_says_it_illustrates_and_points_to_the_study():
    one = " ".join(variation_note(1))
    assert "One seed illustrates the pipeline" in one and "siri demo --study" in one and "paired" in one
    assert "another processor" in one
    several = " ".join(variation_note(3))
    assert "3 seeds" in several and "another processor" in several and "illustrates" not in several
