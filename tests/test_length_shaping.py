"""The length terms of siri.rewards.length_shaping against hand computations, at the boundary
tokens of DAPO's overlong buffer, for Kimi k1.5's group reward and L1's target reward."""
import json

import pytest

import torch

from siri import Trainer, load_config
from siri.ops.group_advantages import group_advantages
from siri.rewards import is_correct
from siri.rewards.length_shaping import (LengthShaping, kimi_length, l1_target, overlong_penalty,
                                         shape_rewards)


@pytest.mark.parametrize("length, expected", [
    (1, 0.0), (80, 0.0),          # up to cap - buffer: no penalty
    (81, -1 / 20), (90, -10 / 20), (99, -19 / 20),
    (100, -1.0),                  # at the cap (a truncated response): the whole penalty
])
def test_overlong_penalty_is_linear_in_the_buffer(length, expected):
    assert overlong_penalty(length, cap=100, buffer=20, factor=1.0) == pytest.approx(expected, abs=1e-15)
    assert overlong_penalty(length, cap=100, buffer=20, factor=0.5) == pytest.approx(expected / 2, abs=1e-15)


def test_overlong_penalty_follows_the_cap_and_is_off_without_a_buffer():
    # the same length is free under an expansion cap and penalised under a compression cap
    assert overlong_penalty(90, cap=200, buffer=20) == 0.0
    assert overlong_penalty(90, cap=100, buffer=20) == -0.5
    assert overlong_penalty(100, cap=100, buffer=0) == 0.0


def test_kimi_length_reward_by_hand():
    # min 10, max 30: lam = 0.5 - (len - 10) / 20 = [0.5, 0.0, -0.5, -0.5]
    assert kimi_length([10, 20, 30, 30], [True, False, True, False]) == [0.5, 0.0, -0.5, -0.5]
    # a short wrong answer gets no bonus: min(0, 0.5) = 0; a long correct one is penalised
    assert kimi_length([10, 30], [False, True]) == [0.0, -0.5]
    assert kimi_length([12, 15, 18], [True, True, True]) == pytest.approx([0.5, 0.0, -0.5])
    assert kimi_length([7, 7, 7], [True, False, True]) == [0.0, 0.0, 0.0]
    with pytest.raises(ValueError, match="3 lengths but 2"):
        kimi_length([1, 2, 3], [True, False])


def test_l1_target_reward_by_hand():
    assert l1_target(40, 50) == -10.0 and l1_target(60, 50) == -10.0 and l1_target(50, 50) == 0.0


def test_shape_rewards_combines_the_terms_per_group():
    rewards = [1.0, 0.0, 1.0, 0.0, 1.0, 1.0]       # two groups of 3
    lengths = [10, 30, 95, 100, 50, 50]
    cap = 100
    none = shape_rewards(rewards, lengths, cap, 3, LengthShaping())
    assert none == rewards and none is not rewards
    overlong = shape_rewards(rewards, lengths, cap, 3, LengthShaping(overlong_buffer=10, overlong_factor=1.0))
    assert overlong == pytest.approx([1.0, 0.0, 1.0 - 0.5, 0.0 - 1.0, 1.0, 1.0])
    # kimi per group: group 1 min 10 max 95 -> lam = [0.5, 0.5 - 20/85, -0.5]; group 2 all 50 or 100
    kimi = shape_rewards(rewards, lengths, cap, 3, LengthShaping(length_reward="kimi", weight=2.0))
    lam = [0.5, 0.5 - 20 / 85, -0.5]
    g2 = [0.5 - (100 - 50) / 50, 0.5, 0.5]          # lengths 100, 50, 50; wrong, right, right
    assert kimi == pytest.approx([1 + 2 * lam[0], 0 + 2 * min(0, lam[1]), 1 + 2 * lam[2],
                                  0 + 2 * min(0, g2[0]), 1 + 2 * g2[1], 1 + 2 * g2[2]])
    l1 = shape_rewards(rewards, lengths, cap, 3, LengthShaping(length_reward="l1_target", target=50))
    assert l1 == pytest.approx([r - 0.0003 * abs(50 - n) for r, n in zip(rewards, lengths)])


def test_shape_rewards_rejects_bad_input():
    with pytest.raises(ValueError, match="3 rewards and 2 lengths"):
        shape_rewards([0.0] * 3, [1, 2], 10, 3, LengthShaping())
    with pytest.raises(ValueError, match="length_target"):
        shape_rewards([0.0] * 2, [1, 2], 10, 2, LengthShaping(length_reward="l1_target"))
    with pytest.raises(ValueError, match="must be one of"):
        shape_rewards([0.0] * 2, [1, 2], 10, 2, LengthShaping(length_reward="shorter"))


def test_a_length_reward_is_one_registry_entry(monkeypatch):
    from siri.config import config_choices, config_from_dict
    from siri.rewards.length_shaping import LENGTH_REWARDS, LengthReward

    assert config_choices()["reward.length_reward"] == tuple(LENGTH_REWARDS) == ("none", "kimi", "l1_target")
    assert (LENGTH_REWARDS["kimi"].default_weight, LENGTH_REWARDS["l1_target"].default_weight) == (1.0, 0.0003)
    monkeypatch.setitem(LENGTH_REWARDS, "shortest", LengthReward(
        terms=lambda rewards, lengths, group_size, target: [-float(n) for n in lengths], default_weight=0.5))
    shaping = LengthShaping(length_reward="shortest")
    assert shaping.active
    assert shape_rewards([1.0, 0.0], [4, 6], 10, 2, shaping) == [1.0 - 2.0, 0.0 - 3.0]
    # the config accepts it, and names it among the allowed values of a bad one
    config_from_dict({"reward": {"length_reward": "shortest"}}).validate(check_files=False)
    with pytest.raises(ValueError, match=r"\['none', 'kimi', 'l1_target', 'shortest'\], got 'longest'"):
        config_from_dict({"reward": {"length_reward": "longest"}}).validate(check_files=False)


def _train(workspace, run_dir, *overrides):
    cfg = load_config(workspace / "config.yaml", [f"trainer.run_dir={run_dir}", "trainer.steps=3", "reward.workers=0",
                                                  *overrides])
    metrics = []
    Trainer(cfg, callbacks=[metrics.append]).fit()
    rows = {m["step"]: [json.loads(line) for line in (run_dir / "rollouts" / f"step_{m['step']}.jsonl").open()]
            for m in metrics}
    return cfg, metrics, rows


def test_the_trainer_adds_the_overlong_penalty_and_the_kimi_reward(workspace, tmp_path):
    cfg, metrics, rows = _train(workspace, tmp_path / "run", "reward.overlong_buffer=6", "reward.overlong_penalty=0.5",
                                "reward.length_reward=kimi", "reward.length_reward_weight=0.1")
    schedule = cfg.length_schedule()
    penalised = 0
    for m in metrics:
        cap = schedule(m["step"])
        for lo in range(0, 16, 4):
            group = rows[m["step"]][lo:lo + 4]
            kimi = kimi_length([r["num_tokens"] for r in group], [is_correct(r["correctness"]) for r in group])
            for r, k in zip(group, kimi):
                # the test reward ignores truncation; the trainer gives truncated responses 0
                assert r["correctness"] == (0.0 if r["finish_reason"] == "length"
                                            else float(len(r["response"]) % 2 == 0))
                expected = r["correctness"] + overlong_penalty(r["num_tokens"], cap, 6, 0.5) + 0.1 * k
                assert r["reward"] == pytest.approx(expected, abs=1e-12)
                penalised += r["num_tokens"] > cap - 6
        assert m["accuracy"] == sum(is_correct(r["correctness"]) for r in rows[m["step"]]) / 16
        assert m["reward_mean"] == pytest.approx(sum(r["reward"] for r in rows[m["step"]]) / 16)
    assert penalised, "no response reached the overlong buffer: the test proves nothing"


def test_mask_truncated_trains_on_finished_responses_only(workspace, tmp_path):
    _, metrics, rows = _train(workspace, tmp_path / "run", "algo.mask_truncated=true")
    assert any(m["truncated_masked"] for m in metrics), "nothing was truncated: the test proves nothing"
    for m in metrics:
        step_rows = rows[m["step"]]
        finished = [r for r in step_rows if r["finish_reason"] == "stop"]
        assert m["truncated_masked"] == len(step_rows) - len(finished)
        # a response that ends with its stop token exactly at the cap is finished, and trains
        assert m["train_tokens"] == sum(r["num_tokens"] for r in finished)
        # truncated responses still count in their group's advantage statistics
        expected = group_advantages(torch.tensor([r["reward"] for r in step_rows]), 4, 1e-6)
        assert [r["advantage"] for r in step_rows] == pytest.approx(expected.tolist(), abs=1e-6)
