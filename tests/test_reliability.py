"""Reliability: crashes at any point lose at most the steps since the last checkpoint and
resume to exactly the uninterrupted run; non-finite losses skip the update; failing
rewards score 0; corrupted data is skipped and counted (or fails naming file and row)."""
import json
import signal
import time

import pytest
import torch
import yaml

from siri import Trainer, load_config
from siri.train.checkpoint import latest_checkpoint
from siri.train.metrics import read_metrics
from siri.train.trainer import TrainingAborted
from training_run import STEPS, deterministic, run_cli, weights

# (fault point, visit): see siri/train/faults.py. Checkpoints of the workspace config land at
# steps 1 (peak), 3 (trough + periodic), 5 (peak), 6 (final + periodic).
CRASHES = [
    ("rollout", 3),             # inside step 2: resumes from step_1
    ("update", 5),              # inside step 4's update: resumes from step_3
    ("checkpoint_write", 2),    # step_3 half written (no marker): resumes from step_1
    ("checkpoint_renamed", 3),  # step_5 in place, old checkpoints not yet pruned
    ("metrics_write", 4),       # half of step 3's metrics line on disk
]


@pytest.mark.parametrize("point, visit", CRASHES, ids=[f"{p}:{n}" for p, n in CRASHES])
def test_crash_then_resume_equals_uninterrupted(workspace, uninterrupted, tmp_path, point, visit):
    run_dir = tmp_path / "run"
    crashed = run_cli(workspace, run_dir, env={"SIRI_FAULT": f"{point}:{visit}"}, check=False)
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr[-2000:]
    assert len(read_metrics(run_dir / "metrics.jsonl")) < STEPS
    run_cli(workspace, run_dir)
    assert deterministic(read_metrics(run_dir / "metrics.jsonl")) == \
        deterministic(read_metrics(uninterrupted / "metrics.jsonl"))
    a, b = weights(run_dir / "checkpoints" / "step_6"), weights(uninterrupted / "checkpoints" / "step_6")
    assert all(torch.equal(a[k], b[k]) for k in b)
    assert not [p for p in (run_dir / "checkpoints").iterdir() if p.name.startswith(".")], "temp dirs left"


def test_sigkill_at_random_moments(workspace, uninterrupted, tmp_path):
    """Three external SIGKILLs at random times of one run, then a final resume."""
    run_dir = tmp_path / "run"
    rng = torch.Generator().manual_seed(int(time.time()))
    for _ in range(3):
        proc = run_cli(workspace, run_dir, wait=False)
        time.sleep(4 + 4 * torch.rand((), generator=rng).item())
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    run_cli(workspace, run_dir)
    assert deterministic(read_metrics(run_dir / "metrics.jsonl")) == \
        deterministic(read_metrics(uninterrupted / "metrics.jsonl"))
    a, b = weights(run_dir / "checkpoints" / "step_6"), weights(uninterrupted / "checkpoints" / "step_6")
    assert all(torch.equal(a[k], b[k]) for k in b)


def config(workspace, run_dir, *overrides):
    return load_config(workspace / "config.yaml", [f"trainer.run_dir={run_dir}", "trainer.save_rollouts=false",
                                                   *overrides])


def test_non_finite_loss_skips_the_update_and_aborts_after_k(workspace, tmp_path, monkeypatch):
    import siri.train.trainer as trainer_module

    real = trainer_module.grpo_loss
    poison_steps = {1}

    def poisoned(*args, **kwargs):
        loss, stats = real(*args, **kwargs)
        return (loss * float("nan"), stats) if trainer.step in poison_steps else (loss, stats)

    monkeypatch.setattr(trainer_module, "grpo_loss", poisoned)
    trainer = Trainer(config(workspace, tmp_path / "nan", "trainer.steps=3"))
    snapshots = []

    def snapshot(_):
        snapshots.append(({k: v.clone() for k, v in trainer.model.state_dict().items()},
                          {k: v.clone() for k, v in trainer.optimizer.state_dict()["state"][0].items()}))

    trainer.callbacks.append(snapshot)
    metrics = []
    trainer.callbacks.append(metrics.append)
    trainer.fit()
    assert [m["update_skipped"] for m in metrics] == [0.0, 1.0, 0.0]
    assert [m["skipped_steps"] for m in metrics] == [0, 1, 1]
    (w0, o0), (w1, o1), (w2, _) = snapshots
    assert all(torch.equal(w0[k], w1[k]) for k in w0), "a skipped step changed the weights"
    assert all(torch.equal(o0[k], o1[k]) for k in o0), "a skipped step changed the optimizer state"
    assert any(not torch.equal(w1[k], w2[k]) for k in w1), "training did not resume after the skip"

    poison_steps.update(range(100))
    trainer = Trainer(config(workspace, tmp_path / "nan-abort", "trainer.steps=5", "trainer.max_consecutive_skips=2"))
    with pytest.raises(TrainingAborted, match="2 consecutive optimizer steps had a non-finite loss"):
        trainer.fit()


def test_rewards_that_raise_hang_or_return_nan_score_zero(workspace, tmp_path):
    cfg = config(workspace, tmp_path / "bad-reward", "trainer.steps=1", "reward.fn=reward_fns:misbehaving",
                 "reward.timeout_s=0.2", "reward.truncated_reward=null")
    metrics = []
    started = time.perf_counter()
    Trainer(cfg, callbacks=[metrics.append]).fit()
    assert time.perf_counter() - started < 60
    assert metrics[0]["reward_errors"] == 16 and metrics[0]["reward_mean"] == 0.0


def write_jsonl(path, lines):
    path.write_bytes(b"".join(line if isinstance(line, bytes) else (json.dumps(line) + "\n").encode()
                              for line in lines))
    return path


def test_corrupted_rows_are_skipped_and_counted(workspace, tmp_path):
    good = [json.loads(line) for line in (workspace / "train.jsonl").open()]
    path = write_jsonl(tmp_path / "corrupt.jsonl", [
        *good[:8], b"{not json\n", b"\xff\xfe broken utf-8\n", {"answer": "3"}, {"prompt": "Q", "answer": ""},
        {"prompt": ["a", "list"], "answer": "1"}, {"prompt": "Q", "answer": None}, *good[8:],
        {"prompt": "what " * 200, "answer": "1"}])
    run_dir = tmp_path / "run"
    Trainer(config(workspace, run_dir, f"data.train={path}", "trainer.steps=1")).fit()
    report = yaml.safe_load((run_dir / "data_report.yaml").read_text())
    assert report["usable_prompts"] == len(good)
    assert report["skipped_too_long"] == 1
    assert sum(report["skipped_bad_rows"].values()) == 6, report
    with pytest.raises(ValueError, match=r"corrupt\.jsonl.*line 9"):
        Trainer(config(workspace, tmp_path / "raise", f"data.train={path}", "data.on_error=raise"))


def test_no_usable_prompt_is_an_error_before_training(workspace, tmp_path):
    path = write_jsonl(tmp_path / "long.jsonl", [{"prompt": "what " * 200, "answer": "1"}] * 3)
    with pytest.raises(ValueError, match="no usable prompts"):
        Trainer(config(workspace, tmp_path / "run", f"data.train={path}"))
    assert latest_checkpoint(tmp_path / "run") is None


def test_a_reward_that_kills_or_hangs_its_worker_does_not_stop_training(workspace, tmp_path):
    """Worker processes that die, or hang where the worker's own timer cannot interrupt them,
    are replaced; their responses score 0 and are counted; the others score normally."""
    run_dir = tmp_path / "dying-reward"
    cfg = config(workspace, run_dir, "trainer.steps=1", "reward.fn=reward_fns:dies_or_hangs", "reward.timeout_s=0.2",
                 "reward.truncated_reward=null", "reward.workers=2", "trainer.save_rollouts=true")
    metrics = []
    started = time.perf_counter()
    Trainer(cfg, callbacks=[metrics.append]).fit()
    assert time.perf_counter() - started < 120
    rows = [json.loads(line) for line in (run_dir / "rollouts" / "step_0.jsonl").open()]
    kinds = [len(r["response"]) % 3 for r in rows]
    assert 0 in kinds and 1 in kinds and 2 in kinds, "the responses do not exercise every failure"
    m = metrics[0]
    assert m["reward_workers_replaced"] == m["reward_errors"] == kinds.count(0) + kinds.count(1)
    assert m["reward_timeouts"] == kinds.count(1)
    assert [r["correctness"] for r in rows] == [float(kind == 2) for kind in kinds]
