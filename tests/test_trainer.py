"""The SIRI trainer end to end on a tiny model that the test builds and saves: caps follow the
schedule, truncated responses score 0, every metric is logged, checkpoints are written, and a
run killed with SIGKILL resumes to exactly the metrics and weights of an uninterrupted run."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml

from siri import Trainer, load_config
from siri.train.checkpoint import list_checkpoints, read_info
from siri.train.metrics import REQUIRED_FIELDS, read_metrics

from training_run import STEPS, TESTS, deterministic, run_cli, weights

REPO = TESTS.parent


def test_caps_follow_the_schedule_and_truncation_scores_zero(workspace, uninterrupted):
    cfg = load_config(uninterrupted / "config.yaml")
    schedule = cfg.length_schedule()
    metrics = read_metrics(uninterrupted / "metrics.jsonl")
    assert [m["step"] for m in metrics] == list(range(STEPS))
    for m in metrics:
        assert set(REQUIRED_FIELDS) <= set(m), set(REQUIRED_FIELDS) - set(m)
        assert m["cap"] == schedule(m["step"]) and m["phase"] == schedule.phase(m["step"])
        assert m["response_len_max"] <= m["cap"]
        rollouts = [json.loads(line) for line in (uninterrupted / "rollouts" / f"step_{m['step']}.jsonl").open()]
        assert len(rollouts) == 16
        truncated = [r for r in rollouts if r["finish_reason"] == "length"]
        assert all(r["num_tokens"] == m["cap"] and r["reward"] == 0.0 for r in truncated)
        # the test's reward ignores truncation, so finished responses show it really ran
        for r in rollouts:
            if r["finish_reason"] == "stop":
                assert r["reward"] == float(len(r["response"]) % 2 == 0)
        assert m["truncation_rate"] == len(truncated) / 16
        assert m["reward_mean"] == pytest.approx(sum(r["reward"] for r in rollouts) / 16)
    assert [m["cap"] for m in metrics] == [24, 16, 8, 16, 24, 16]
    assert any(m["truncation_rate"] > 0 for m in metrics), "the caps never bit: the test proves nothing"
    assert any(0 < m["reward_mean"] for m in metrics) and any(m["loss"] != 0 for m in metrics)


def test_checkpoints_are_written_at_period_extrema_and_end(uninterrupted, workspace):
    found = {step: read_info(path)["kinds"] for step, path in list_checkpoints(uninterrupted)}
    # save_every=3 with keep_last=1 keeps only the newest periodic one (step 6 is also final);
    # peaks of cos with period 4 are t=0, 4 (-> step_1, step_5), the trough t=2 (-> step_3)
    assert found == {1: ["peak"], 3: ["periodic", "trough"], 5: ["peak"], 6: ["periodic", "final"]}
    final = weights(uninterrupted / "checkpoints" / "step_6")
    initial = weights(workspace / "model")
    assert any(not torch.equal(final[k], initial[k]) for k in initial), "training did not change the weights"
    saved = yaml.safe_load((uninterrupted / "config.yaml").read_text())
    assert saved["trainer"]["steps"] == STEPS and saved["schedule"]["kind"] == "cosine"


def test_sigkill_then_resume_matches_an_uninterrupted_run(workspace, uninterrupted):
    run_dir = workspace / "killed"
    proc = run_cli(workspace, run_dir, wait=False)
    deadline = time.time() + 300
    while not (run_dir / "checkpoints" / "step_3" / "siri_checkpoint.json").exists():
        assert proc.poll() is None, proc.stderr.read()[-3000:]
        assert time.time() < deadline, "no checkpoint within 300 s"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert len(read_metrics(run_dir / "metrics.jsonl")) < STEPS
    run_cli(workspace, run_dir)        # trainer.resume=auto is the default
    assert deterministic(read_metrics(run_dir / "metrics.jsonl")) == \
        deterministic(read_metrics(uninterrupted / "metrics.jsonl"))
    a, b = weights(run_dir / "checkpoints" / "step_6"), weights(uninterrupted / "checkpoints" / "step_6")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_python_api_callbacks_and_reward_errors(workspace, tmp_path):
    seen = []
    cfg = load_config(workspace / "config.yaml", [f"trainer.run_dir={tmp_path}", "trainer.steps=2",
                                                  "reward.fn=reward_fns:flaky", "reward.truncated_reward=null"])
    result = Trainer(cfg, callbacks=[seen.append]).fit()
    assert [m["step"] for m in seen] == [0, 1]
    assert sum(m["reward_errors"] for m in seen) > 0
    assert result["checkpoint"] == str(tmp_path / "checkpoints" / "step_2")
    # finished: a second fit() is a no-op that resumes at the end
    assert Trainer(cfg).fit()["checkpoint"] == result["checkpoint"]


def test_siri_eval_and_plot_write_their_outputs(workspace, uninterrupted):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    checkpoint_dir = uninterrupted / "checkpoints" / "step_6"
    # DeepScaleR's field names: `siri eval` finds them without --prompt-key / --answer-key
    rows = [json.loads(line) for line in (workspace / "train.jsonl").read_text().splitlines()]
    held = uninterrupted.parent / "held.jsonl"
    held.write_text("".join(json.dumps({"problem": r["prompt"], "answer": r["answer"]}) + "\n" for r in rows))
    out = subprocess.run([sys.executable, "-m", "siri", "eval", str(checkpoint_dir), "--data",
                          str(held), "--n", "2", "--max-tokens", "32", "--quiet",
                          "--instruction", "Answer in \\boxed{}."], env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "held: " in out.stdout and "prompt from 'problem', answer from 'answer'" in out.stdout
    report = json.loads((uninterrupted / "eval" / "step_6.json").read_text())
    bench = report["benchmarks"]["held"]
    assert report["step"] == 6 and bench["num_prompts"] == 24 and bench["num_samples"] == 48
    assert 0 <= bench["accuracy"] <= 1 and 0 < bench["mean_tokens"] <= 32
    assert set(bench["pass_at_k"]) == {"pass@1", "pass@2"} and bench["pass_at_k"]["pass@1"] == bench["accuracy"]
    assert "held" in out.stdout and "step_6.json" in out.stdout
    samples = [json.loads(line) for line in (uninterrupted / "eval" / "step_6.samples.jsonl").read_text().splitlines()]
    assert len(samples) == 48 and {s["reference"] for s in samples} == {r["answer"] for r in rows}
    assert sum(s["correct"] for s in samples) == round(bench["accuracy"] * 48)
    assert {s["benchmark"] for s in samples} == {"held"} and all(s["response"] is not None for s in samples)
    out = subprocess.run([sys.executable, "-m", "siri", "plot", str(uninterrupted)], env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    for name in ("schedule.png", "training.png", "pareto.png"):
        png = uninterrupted / "plots" / name
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name


def short_run(workspace, run_dir, *overrides):
    cfg = load_config(workspace / "config.yaml", [f"trainer.run_dir={run_dir}", "trainer.steps=2",
                                                  "trainer.save_rollouts=false", *overrides])
    metrics = []
    Trainer(cfg, callbacks=[metrics.append]).fit()
    return metrics, weights(run_dir / "checkpoints" / "step_2")


def test_micro_batch_packing_does_not_change_the_update(workspace, tmp_path):
    """Token-mean over the whole step: splitting the step into many micro-batches gives the
    same loss and weights as one big batch."""
    one, w_one = short_run(workspace, tmp_path / "one", "algo.micro_batch_tokens=100000")
    many, w_many = short_run(workspace, tmp_path / "many", "algo.micro_batch_tokens=40")
    for a, b in zip(one, many):
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-6)
        assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-5)
    # Adam divides by sqrt(v): for elements whose gradient is ~0, the fp32 rounding of a
    # different summation order is amplified, so weights agree to a few 1e-5 (lr 3e-3),
    # not to the last bit
    for k in w_one:
        torch.testing.assert_close(w_one[k], w_many[k], atol=3e-5, rtol=0)


def test_on_policy_ratio_is_one(workspace, tmp_path):
    """One epoch, one mini-batch: old logprobs taken from the training forward (the default) or
    recomputed by a separate forward give ratio 1, so no token is clipped and the approximate
    KL is 0; the sampler's own logprobs (the engine's paged forward) agree to float rounding."""
    for mode in ("auto", "recompute"):
        same_forward, _ = short_run(workspace, tmp_path / mode, f"algo.old_logprobs={mode}")
        for m in same_forward:
            assert abs(m["approx_kl"]) < 1e-6 and m["clip_frac_low"] == m["clip_frac_high"] == 0
    engine, _ = short_run(workspace, tmp_path / "engine", "algo.old_logprobs=engine")
    for m in engine:
        assert abs(m["approx_kl"]) < 1e-4 and m["clip_frac_low"] == m["clip_frac_high"] == 0


def test_algorithm_options_run(workspace, tmp_path):
    """KL to a reference model, dual clip, Dr. GRPO scaling, PPO epochs and mini-batches,
    dynamic-sampling filter and warmup all run and show up in the metrics."""
    metrics, _ = short_run(workspace, tmp_path / "options", "algo.kl_coef=0.05", "algo.clip_c=3.0",
                           "algo.advantage_scale=none", "algo.ppo_epochs=2", "algo.mini_batches=2",
                           "algo.filter_equal_groups=true", "optim.warmup_steps=4")
    done = 0
    for m in metrics:
        assert m["groups_trained"] == round(4 * (1 - m["groups_all_equal"]))
        # 2 epochs x the mini-batches (of 2 fixed ones) that kept a group after filtering
        assert m["optimizer_steps"] in ((0,) if m["groups_trained"] == 0 else (2, 4))
        done += m["optimizer_steps"]
        assert m["lr"] == pytest.approx(3e-3 * min(1.0, (done + 1) / 4))
    assert any(m["optimizer_steps"] for m in metrics), "every group was filtered: the test proves nothing"
    assert any(m["approx_kl"] != 0 for m in metrics if m["optimizer_steps"]), "later epochs must be off-policy"


def test_the_paper_recipe_takes_off_policy_steps_where_the_clip_acts(workspace, tmp_path):
    """The recipe's PPO layout (its mini-batches, epochs and clip values) on the tiny model:
    after the first mini-batch the policy has moved, so the ratio is not identically 1 and
    tokens are clipped. With one mini-batch and one epoch the ratio would be exactly 1. (The
    test's reward also scores truncated responses, so most groups carry a gradient.)"""
    algo = yaml.safe_load((REPO / "configs" / "siri_r1_distill_qwen_1.5b.yaml").read_text())["algo"]
    assert algo["mini_batches"] > 1 or algo["ppo_epochs"] > 1, "the recipe is exactly on-policy: the clip never acts"
    keys = ("clip_low", "clip_high", "clip_c", "ppo_epochs", "mini_batches")
    metrics, _ = short_run(workspace, tmp_path / "recipe", "reward.truncated_reward=null",
                           *(f"algo.{k}={algo[k]}" for k in keys))
    for m in metrics:
        assert m["optimizer_steps"] == algo["mini_batches"] * algo["ppo_epochs"]
        assert m["approx_kl"] != 0
    assert sum(m["clip_frac_low"] + m["clip_frac_high"] for m in metrics) > 0
