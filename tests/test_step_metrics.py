"""siri.train.metrics' schema of a step's metrics: step_metrics builds exactly the documented keys in
order, a real training step emits exactly them (plus the documented eval keys when it
evaluates), and the values follow from the samples."""
import statistics

import pytest

from siri import Trainer, load_config
from siri.algo.policy_update import UpdateStats
from siri.algo.step_samples import RewardFailures, SampleStats
from siri.train.metrics import EVAL_METRICS, REQUIRED_FIELDS, STEP_METRICS, StageTimer, step_metrics


def sample(n, reward, finish="stop", correctness=None):
    return SampleStats(n, reward, finish, reward if correctness is None else correctness)


def build(samples, trained=(), mask_truncated=False, update=None):
    return step_metrics(3, 16, "expand", samples=samples, trained=list(trained), mask_truncated=mask_truncated,
                        all_equal=[True, False, False, False],
                        sampling={"sampling_rounds": 2, "groups_drawn": 8, "groups_discarded": 4, "groups_trained": 4},
                        reward_failures=RewardFailures(3, 1, 1), update=update or UpdateStats(), lr=1e-6, skipped_steps=2,
                        seconds={"rollout": 2.0, "reward": 0.5, "update": 1.0, "step": 4.0})


def test_every_documented_key_is_built_in_order_and_documented():
    assert list(build([sample(4, 1.0), sample(8, 0.0)])) == list(STEP_METRICS)
    assert set(REQUIRED_FIELDS) <= set(STEP_METRICS)
    assert not set(STEP_METRICS) & set(EVAL_METRICS)
    for key, text in {**STEP_METRICS, **EVAL_METRICS}.items():
        kind, _, meaning = text.partition(": ")
        assert kind in ("int", "float", "str") and meaning, f"{key}: document it as '<type>: <meaning>'"


def test_values_follow_from_the_samples():
    samples = [sample(5, 1.0), sample(16, 0.0, "length"), sample(7, 0.5, correctness=0.5), sample(16, -0.5, "length", 0.0)]
    update = UpdateStats(loss=0.25, grad_norm=2.0, train_tokens=44.0, entropy=1.5, optimizer_steps=2)
    m = build(samples, trained=samples[1:], mask_truncated=True, update=update)
    types = {"int": int, "float": float, "str": str}
    for key, value in m.items():
        assert type(value) is types[STEP_METRICS[key].partition(":")[0]], key
    assert (m["step"], m["cap"], m["phase"]) == (3, 16, "expand")
    assert m["reward_mean"] == pytest.approx(0.25) and m["reward_std"] == pytest.approx(statistics.stdev([1, 0, 0.5, -0.5]))
    assert m["accuracy"] == 0.5                       # 1.0 and 0.5 are correct (>= 0.5)
    assert (m["response_len_mean"], m["response_len_p50"], m["response_len_max"], m["response_len_min"]) == (11, 11.5, 16, 5)
    assert m["truncation_rate"] == 0.5 and m["truncated_masked"] == 2 and m["groups_all_equal"] == 0.25
    assert (m["reward_errors"], m["reward_timeouts"], m["reward_workers_replaced"]) == (3, 1, 1)
    assert (m["loss"], m["grad_norm"], m["entropy"], m["optimizer_steps"]) == (0.25, 2.0, 1.5, 2)
    assert m["tokens_generated"] == 44 and m["rollout_tokens_per_s"] == 22.0
    assert (m["time_rollout_s"], m["time_reward_s"], m["time_update_s"], m["time_step_s"]) == (2.0, 0.5, 1.0, 4.0)
    assert build(samples, trained=samples, mask_truncated=False)["truncated_masked"] == 0
    assert build([sample(3, 1.0)])["reward_std"] == 0.0


def test_stage_timer_adds_up_each_stage():
    timer = StageTimer()
    for _ in range(2):
        with timer.measure("reward"):
            pass
    seconds = timer.seconds()
    assert set(seconds) == {"rollout", "reward", "update", "step"}
    assert seconds["rollout"] == 0.0 and 0.0 < seconds["reward"] <= seconds["step"]


def test_a_training_step_emits_exactly_the_documented_keys(workspace, tmp_path):
    cfg = load_config(workspace / "config.yaml", [f"trainer.run_dir={tmp_path}", "trainer.steps=2", "reward.workers=0",
                                                  "trainer.save_rollouts=false", "trainer.save_every=0",
                                                  "trainer.save_at_extrema=false",
                                                  f"eval.data={workspace / 'train.jsonl'}", "eval.limit=2", "eval.n=1",
                                                  "trainer.eval_every=2", "trainer.eval_at_extrema=false"])
    rows = []
    Trainer(cfg, callbacks=[rows.append]).fit()
    assert [list(r) for r in rows] == [list(STEP_METRICS), list(STEP_METRICS) + list(EVAL_METRICS)]
