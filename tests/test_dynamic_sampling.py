"""DAPO dynamic sampling with refill: the collector's bookkeeping, the filter's flags
(correctness by default, the shaped reward on request), and the trainer filling every step's
batch with groups of right and wrong answers, exactly reproducible across a resume."""
import json
import warnings

import pytest

from siri import Trainer, load_config
from siri.algo.dynamic_sampling import GroupCollector
from siri.train.metrics import read_metrics
from siri.rewards import is_correct

from training_run import deterministic, weights


def test_collector_refills_in_draw_order_and_discards_the_surplus():
    c = GroupCollector(4, drop_equal=True, refill=True, max_rounds=5)
    c.add_round([True, False, True, True], {1: "r0g1"})
    assert not c.done and [k.slot for k in c.kept] == [0]
    c.add_round([False, True, True, False], {0: "r1g0", 3: "r1g3"})
    assert not c.done and len(c.kept) == 3
    c.add_round([True, False, False, False], {2: "r2g2"})
    assert c.done
    assert [(k.slot, k.round, k.index, k.rollouts) for k in c.kept] == [
        (0, 0, 1, "r0g1"), (1, 1, 0, "r1g0"), (2, 1, 3, "r1g3"), (3, 2, 1, None)]
    # round 2's second group filled the batch; its last two are surplus
    assert c.stats() == {"sampling_rounds": 3, "groups_drawn": 12, "groups_discarded": 8, "groups_trained": 4}
    with pytest.raises(RuntimeError, match="already complete"):
        c.add_round([False] * 4, {})


def test_collector_stops_at_max_rounds_and_keeps_slots_without_refill():
    capped = GroupCollector(4, drop_equal=True, refill=True, max_rounds=2)
    capped.add_round([True] * 4, {})
    capped.add_round([True, False, True, True], {})
    assert capped.done and capped.stats()["groups_trained"] == 1
    drop_only = GroupCollector(4, drop_equal=True)
    drop_only.add_round([False, True, False, True], {})
    assert drop_only.done and [k.slot for k in drop_only.kept] == [0, 2]
    keep_all = GroupCollector(4)
    keep_all.add_round([True, True, False, True], {})
    assert [k.slot for k in keep_all.kept] == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="refill only"):
        GroupCollector(4, refill=True)


def test_the_filter_flags_correctness_by_default_and_the_shaped_reward_on_request():
    """DAPO filters on accuracy (verl's ``filter_groups.metric: acc``): with an overlong buffer
    an all-wrong group shapes to distinct rewards, yet it teaches nothing but length."""
    from siri.algo.dynamic_sampling import group_all_equal
    from siri.rewards.length_shaping import LengthShaping, shape_rewards

    shaping, lengths, cap = LengthShaping(overlong_buffer=6), [15, 17, 19, 20], 20    # all in the buffer
    groups = {"all_wrong": [0.0] * 4, "all_correct": [1.0] * 4, "mixed": [1.0, 0.0, 0.0, 1.0]}
    shaped = {name: shape_rewards(scores, lengths, cap, 4, shaping) for name, scores in groups.items()}
    assert len(set(shaped["all_wrong"])) == len(set(shaped["all_correct"])) == 4, "the buffer must separate them"
    acc = {name: group_all_equal(shaped[name], scores, "acc") for name, scores in groups.items()}
    reward = {name: group_all_equal(shaped[name], scores, "reward") for name, scores in groups.items()}
    assert acc == {"all_wrong": True, "all_correct": True, "mixed": False}
    assert reward == {"all_wrong": False, "all_correct": False, "mixed": False}
    # without length terms the two agree: equal 0/1 rewards are equal correctness flags
    assert group_all_equal([1.0] * 4, [1.0] * 4, "acc") and group_all_equal([1.0] * 4, [1.0] * 4, "reward")
    with pytest.raises(ValueError, match="filter_metric"):
        group_all_equal([1.0] * 4, [1.0] * 4, "score")
    # the flags drive the collector: under acc only the mixed group trains
    c = GroupCollector(3, drop_equal=True)
    c.add_round([acc[name] for name in groups], {})
    assert [k.index for k in c.kept] == [2]


def _run(workspace, run_dir, *overrides):
    cfg = load_config(workspace / "config.yaml", [f"trainer.run_dir={run_dir}", "trainer.steps=4",
                                                  "algo.dynamic_sampling=true", "algo.max_sampling_rounds=6",
                                                  "reward.workers=0", *overrides])
    seen = []
    Trainer(cfg, callbacks=[seen.append]).fit()
    return seen


def test_refill_reaches_the_full_batch_and_trains_on_unequal_groups_only(workspace, tmp_path):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        metrics = _run(workspace, tmp_path / "run")
    short = [m["step"] for m in metrics if m["groups_trained"] < 4]
    warned = [str(w.message) for w in caught if "dynamic sampling kept" in str(w.message)]
    assert [int(text.split()[1].rstrip(":")) for text in warned] == short
    assert any(m["sampling_rounds"] > 1 and m["groups_trained"] == 4 for m in metrics), \
        "no step was refilled to a full batch: the test proves nothing"
    for m in metrics:
        # a full batch (prompts_per_step), or the round limit reached (a compression step at
        # cap 8 truncates nearly everything: all-zero groups)
        assert m["groups_trained"] == 4 or m["sampling_rounds"] == 6, m
        assert m["groups_drawn"] == 4 * m["sampling_rounds"]
        assert m["groups_discarded"] == m["groups_drawn"] - m["groups_trained"]
        rows = [json.loads(line) for line in (tmp_path / "run" / "rollouts" / f"step_{m['step']}.jsonl").open()]
        assert {r["round"] for r in rows} == set(range(m["sampling_rounds"]))
        groups = {}
        for r in rows:
            groups.setdefault((r["round"], r["prompt_index"]), []).append(is_correct(r["correctness"]))
        unequal = [key for key, flags in groups.items() if len(set(flags)) > 1]     # draw order
        assert len(unequal) >= m["groups_trained"]
        # the groups with right and wrong answers (algo.filter_metric: acc), in draw order up
        # to a full batch, are trained: their tokens are the update's
        kept_keys = unequal[:4]
        kept_tokens = sum(r["num_tokens"] for r in rows if (r["round"], r["prompt_index"]) in kept_keys)
        assert m["train_tokens"] == kept_tokens


def test_resume_with_refill_is_exact(workspace, tmp_path):
    whole = _run(workspace, tmp_path / "whole")
    cut = tmp_path / "cut"
    _run(workspace, cut, "trainer.steps=2", "trainer.save_every=2")
    resumed = _run(workspace, cut)
    assert deterministic(read_metrics(cut / "metrics.jsonl")) == deterministic(whole)
    assert resumed and resumed[0]["step"] == 2
    final, expected = weights(cut / "checkpoints" / "step_4"), weights(tmp_path / "whole" / "checkpoints" / "step_4")
    for name in expected:
        assert (final[name] == expected[name]).all(), name


def _groups(run_dir, step):
    """The step's drawn groups in draw order: (round, prompt_index) -> its rollout rows."""
    rows = [json.loads(line) for line in (run_dir / "rollouts" / f"step_{step}.jsonl").open()]
    groups: dict = {}
    for r in rows:
        groups.setdefault((r["round"], r["prompt_index"]), []).append(r)
    return groups


@pytest.mark.parametrize("mode", ["refill_acc", "refill_reward", "drop_acc"])
def test_an_all_wrong_group_of_distinct_shaped_rewards_is_dropped_on_acc_and_kept_on_reward(workspace, tmp_path,
                                                                                                mode):
    """With DAPO's overlong buffer an all-wrong group's shaped rewards differ (its responses
    end at different depths into the buffer). ``algo.filter_metric: acc`` (the default) drops
    it, as an all-correct one, for the refill and the plain filter alike; ``reward`` keeps it."""
    overrides = ["reward.overlong_buffer=6", "reward.overlong_penalty=0.5"]
    if mode == "refill_reward":
        overrides.append("algo.filter_metric=reward")
    if mode == "drop_acc":
        overrides += ["algo.dynamic_sampling=false", "algo.filter_equal_groups=true"]
    metrics = _run(workspace, tmp_path / "run", *overrides)
    seen = {"all_wrong_distinct": 0, "all_wrong_distinct_kept": 0, "all_correct": 0, "mixed_kept": 0}
    for m in metrics:
        groups = _groups(tmp_path / "run", m["step"])
        correct = {key: [is_correct(r["correctness"]) for r in group] for key, group in groups.items()}
        rewards = {key: [r["reward"] for r in group] for key, group in groups.items()}
        flags = correct if mode != "refill_reward" else rewards
        equal = {key: len(set(flags[key])) == 1 for key in groups}
        informative = [key for key in groups if not equal[key]]          # draw order
        kept = informative[:4] if mode != "drop_acc" else informative
        assert m["groups_trained"] == len(kept), m
        assert m["groups_all_equal"] == pytest.approx(sum(equal.values()) / len(groups))
        assert m["train_tokens"] == sum(r["num_tokens"] for key in kept for r in groups[key])
        for key in groups:
            all_wrong_distinct = not any(correct[key]) and len(set(rewards[key])) > 1
            seen["all_wrong_distinct"] += all_wrong_distinct
            seen["all_wrong_distinct_kept"] += all_wrong_distinct and key in kept
            seen["all_correct"] += all(correct[key])
            seen["mixed_kept"] += len(set(correct[key])) > 1 and key in kept
    assert seen["all_wrong_distinct"], f"no all-wrong group reached the buffer: the test proves nothing ({seen})"
    assert seen["mixed_kept"], seen
    if mode == "refill_reward":
        assert seen["all_wrong_distinct_kept"], seen
    else:
        assert not seen["all_wrong_distinct_kept"], seen
