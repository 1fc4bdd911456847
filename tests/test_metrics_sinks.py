"""siri.train.metrics: the JSONL log, its resume truncation, and the optional TensorBoard / W&B sinks.

tensorboard and wandb are optional extras and not installed in the test environment: the
sinks are exercised against small fake modules put into ``sys.modules``, which record every
call, and a missing package is simulated with a ``None`` entry (``import`` then raises)."""
import json
import math
import sys
import types

import pytest

from siri.train.metrics import MetricsLog, read_metrics


class _FakeSummaryWriter:
    instances: list = []

    def __init__(self, log_dir):
        self.log_dir = log_dir
        self.scalars = []
        self.closed = False
        _FakeSummaryWriter.instances.append(self)

    def add_scalar(self, tag, value, step):
        self.scalars.append((tag, value, step))

    def close(self):
        self.closed = True


@pytest.fixture
def fake_tensorboard(monkeypatch):
    module = types.ModuleType("torch.utils.tensorboard")
    module.SummaryWriter = _FakeSummaryWriter
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", module)
    monkeypatch.setattr(_FakeSummaryWriter, "instances", [])
    return _FakeSummaryWriter.instances


class _FakeWandbRun:
    def __init__(self):
        self.logged = []
        self.finished = False

    def log(self, data, step):
        self.logged.append((dict(data), step))

    def finish(self):
        self.finished = True


@pytest.fixture
def fake_wandb(monkeypatch):
    module = types.ModuleType("wandb")
    module.init_calls = []
    module.runs = []

    def init(**kwargs):
        module.init_calls.append(kwargs)
        run = _FakeWandbRun()
        module.runs.append(run)
        return run

    module.init = init
    monkeypatch.setitem(sys.modules, "wandb", module)
    return module


STEP0 = {"step": 0, "cap": 64, "phase": "compress", "reward_mean": 0.5, "accuracy": 0.25, "loss": float("nan"),
         "grad_norm": float("inf"), "response_len_max": 60, "skipped": True, "note": "text"}
STEP1 = {"step": 1, "cap": 48, "phase": "compress", "reward_mean": 0.75, "accuracy": 0.5, "loss": 0.125,
         "grad_norm": 2.0, "response_len_max": 40, "skipped": False, "note": "text"}


def test_tensorboard_sink_logs_numeric_metrics_at_their_step(tmp_path, fake_tensorboard):
    log = MetricsLog(tmp_path, tensorboard=True)
    assert len(fake_tensorboard) == 1
    writer = fake_tensorboard[0]
    assert writer.log_dir == str(tmp_path / "tensorboard")
    log.log(STEP0)
    log.log(STEP1)
    assert not writer.closed
    log.close()
    assert writer.closed
    tags = {tag for tag, _, _ in writer.scalars}
    # numbers only: not the step itself, not bools, not strings
    assert tags == {"cap", "reward_mean", "accuracy", "loss", "grad_norm", "response_len_max"}
    by_step = {}
    for tag, value, step in writer.scalars:
        by_step.setdefault(step, {})[tag] = value
    assert sorted(by_step) == [0, 1]
    assert by_step[1] == {"cap": 48, "reward_mean": 0.75, "accuracy": 0.5, "loss": 0.125, "grad_norm": 2.0,
                          "response_len_max": 40}
    # TensorBoard gets non-finite values as they are (it draws them); only the JSONL nulls them
    assert math.isnan(by_step[0]["loss"]) and by_step[0]["grad_norm"] == math.inf
    rows = read_metrics(tmp_path / "metrics.jsonl")
    assert rows[0]["loss"] is None and rows[0]["grad_norm"] is None and rows[0]["skipped"] is True
    assert rows[1] == STEP1


def test_wandb_sink_logs_every_metric_but_step_at_that_step(tmp_path, fake_wandb):
    config = {"trainer": {"steps": 2}}
    log = MetricsLog(tmp_path, wandb=True, wandb_project="my-project", config=config)
    assert fake_wandb.init_calls == [{"project": "my-project", "dir": str(tmp_path), "config": config,
                                      "resume": "allow"}]
    run = fake_wandb.runs[0]
    log.log(STEP1)
    log.log(STEP0)
    assert not run.finished
    log.close()
    assert run.finished
    assert [step for _, step in run.logged] == [1, 0]
    first, second = run.logged[0][0], run.logged[1][0]
    assert "step" not in first and "step" not in second
    assert first == {k: v for k, v in STEP1.items() if k != "step"}
    # W&B gets the raw values (bools and strings included, NaN kept as NaN)
    assert second["skipped"] is True and second["note"] == "text" and math.isnan(second["loss"])


def test_wandb_config_defaults_to_an_empty_dict(tmp_path, fake_wandb):
    MetricsLog(tmp_path, wandb=True).close()
    assert fake_wandb.init_calls[0]["config"] == {} and fake_wandb.init_calls[0]["project"] == "siri"


def test_both_sinks_at_once_get_the_same_steps(tmp_path, fake_tensorboard, fake_wandb):
    log = MetricsLog(tmp_path, tensorboard=True, wandb=True)
    log.log(STEP1)
    log.close()
    assert {step for _, _, step in fake_tensorboard[0].scalars} == {1}
    assert [step for _, step in fake_wandb.runs[0].logged] == [1]
    assert fake_tensorboard[0].closed and fake_wandb.runs[0].finished


@pytest.mark.parametrize("sink, module, hint", [
    ("tensorboard", "torch.utils.tensorboard", "trainer.tensorboard needs the tensorboard package: "
                                               "pip install 'siri[tensorboard]'"),
    ("wandb", "wandb", "trainer.wandb needs the wandb package: pip install 'siri[wandb]'"),
])
def test_a_missing_sink_package_names_the_pip_extra(tmp_path, monkeypatch, sink, module, hint):
    monkeypatch.setitem(sys.modules, module, None)     # `import` of a None entry raises ImportError
    with pytest.raises(ImportError) as e:
        MetricsLog(tmp_path, **{sink: True})
    assert str(e.value) == hint
    assert isinstance(e.value.__cause__, ImportError)


def test_resume_keeps_only_the_steps_before_the_resume_step(tmp_path):
    path = tmp_path / "metrics.jsonl"
    lines = [{"step": t, "loss": t / 10} for t in range(6)] + [{"note": "a line without a step"}]
    path.write_text("".join(json.dumps(row) + "\n" for row in lines))
    log = MetricsLog(tmp_path, resume_step=3)
    assert read_metrics(path) == lines[:3]
    log.log({"step": 3, "loss": 0.0})
    log.close()
    assert [row["step"] for row in read_metrics(path)] == [0, 1, 2, 3]
    # a fresh run (resume_step 0) starts the file over
    MetricsLog(tmp_path).close()
    assert path.read_text() == ""


def test_resume_drops_a_half_written_last_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 0, "loss": 1.0}\n{"step": 1, "loss": 0.5}\n{"step": 2, "lo')
    with pytest.warns(UserWarning, match="incomplete last line"):
        MetricsLog(tmp_path, resume_step=5).close()
    assert read_metrics(path) == [{"step": 0, "loss": 1.0}, {"step": 1, "loss": 0.5}]


class _Killed(Exception):
    """Raised by the fake os.kill in place of SIGKILL."""


def test_the_metrics_write_fault_leaves_half_a_line_that_readers_skip(tmp_path, monkeypatch):
    """SIRI_FAULT=metrics_write:2 writes half of step 1's line, then kills the process (here a
    fake os.kill raises instead): the log then ends in a partial line that read_metrics skips
    with a warning, and resuming at step 1 drops it."""
    import os
    import signal

    from siri.train import faults

    kills = []

    def fake_kill(pid, sig):
        kills.append((pid, sig))
        raise _Killed

    monkeypatch.setattr(faults, "_reached", {})
    monkeypatch.setattr(os, "kill", fake_kill)
    monkeypatch.setenv("SIRI_FAULT", "metrics_write:2")
    log = MetricsLog(tmp_path)
    log.log({"step": 0, "loss": 1.0})
    with pytest.raises(_Killed):
        log.log({"step": 1, "loss": 0.5})
    log.close()
    assert kills == [(os.getpid(), signal.SIGKILL)]
    text = (tmp_path / "metrics.jsonl").read_text()
    full = json.dumps({"step": 1, "loss": 0.5}) + "\n"
    assert text == json.dumps({"step": 0, "loss": 1.0}) + "\n" + full[:len(full) // 2]
    with pytest.warns(UserWarning, match=r"metrics.jsonl:2: skipping an incomplete last line"):
        assert read_metrics(tmp_path / "metrics.jsonl") == [{"step": 0, "loss": 1.0}]
    monkeypatch.delenv("SIRI_FAULT")
    with pytest.warns(UserWarning):
        MetricsLog(tmp_path, resume_step=1).close()
    assert read_metrics(tmp_path / "metrics.jsonl") == [{"step": 0, "loss": 1.0}]


def test_an_unparsable_line_before_the_last_is_an_error_naming_it(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 0}\n\n{"step": 1,\n{"step": 2}\n')
    with pytest.raises(ValueError, match=r"metrics.jsonl:3 is not valid JSON"):
        read_metrics(path)
