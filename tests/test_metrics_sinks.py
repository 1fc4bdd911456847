"""siri.train.metrics: the JSONL log, its resume truncation, and the optional TensorBoard / W&B sinks
(the W&B run id kept for resumes, the samples table).

tensorboard and wandb are optional extras and not installed in the test environment: the
sinks are exercised against small fake modules put into ``sys.modules``, which record every
call, and a missing package is simulated with a ``None`` entry (``import`` then raises)."""
import json
import math
import sys
import types

import pytest

from siri.train.metrics import SAMPLE_COLUMNS, WANDB_RUN_ID_FILE, MetricsLog, read_metrics

from fake_wandb import install as install_fake_wandb


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


@pytest.fixture
def fake_wandb(monkeypatch):
    return install_fake_wandb(monkeypatch)


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
    log = MetricsLog(tmp_path, wandb=True, wandb_project="my-project", wandb_entity="team", wandb_name="cosine-1",
                     config=config)
    assert fake_wandb.init_calls == [{"project": "my-project", "entity": "team", "name": "cosine-1",
                                      "dir": str(tmp_path), "config": config, "id": "id-1", "resume": "allow"}]
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
    init = fake_wandb.init_calls[0]
    assert init["config"] == {} and init["project"] == "siri" and init["entity"] is None and init["name"] is None


def test_a_resumed_run_continues_the_stored_wandb_run_and_a_fresh_one_starts_a_new(tmp_path, fake_wandb):
    MetricsLog(tmp_path, wandb=True).close()
    assert (tmp_path / WANDB_RUN_ID_FILE).read_text() == "id-1\n"
    MetricsLog(tmp_path, wandb=True, resume_step=3).close()
    # a fresh start (resume_step 0: resume=never, or killed before the first checkpoint) is a new
    # W&B run, whose steps start over at 0
    MetricsLog(tmp_path, wandb=True).close()
    MetricsLog(tmp_path, wandb=True, resume_step=2).close()
    assert [c["id"] for c in fake_wandb.init_calls] == ["id-1", "id-1", "id-2", "id-2"]
    assert all(c["resume"] == "allow" for c in fake_wandb.init_calls)
    assert (tmp_path / WANDB_RUN_ID_FILE).read_text() == "id-2\n"


def test_a_resume_without_a_stored_id_starts_a_new_run_and_stores_it(tmp_path, fake_wandb):
    MetricsLog(tmp_path, wandb=True, resume_step=4).close()
    MetricsLog(tmp_path, wandb=True, resume_step=5).close()
    assert [c["id"] for c in fake_wandb.init_calls] == ["id-1", "id-1"]


def test_without_wandb_util_the_id_is_eight_hex_digits(tmp_path, fake_wandb, monkeypatch):
    monkeypatch.delattr(fake_wandb, "util")
    MetricsLog(tmp_path, wandb=True).close()
    run_id = fake_wandb.init_calls[0]["id"]
    assert len(run_id) == 8 and int(run_id, 16) >= 0
    assert (tmp_path / WANDB_RUN_ID_FILE).read_text().strip() == run_id
    MetricsLog(tmp_path, wandb=True, resume_step=1).close()
    assert fake_wandb.init_calls[1]["id"] == run_id


def test_samples_go_to_wandb_as_a_table_in_the_steps_log_call(tmp_path, fake_wandb, fake_tensorboard):
    rows = [{"step": 1, "round": 0, "prompt_index": 7, "sample": s, "prompt": "What is 1 + 2?", "answer": "3",
             "response": f"r{s}", "num_tokens": 3 + s, "finish_reason": "stop", "correctness": 1.0, "reward": 1.0,
             "advantage": 0.5} for s in range(2)]
    log = MetricsLog(tmp_path, wandb=True, tensorboard=True)
    log.log(STEP0)
    log.log(STEP1, samples=rows)
    log.close()
    (first, _), (second, step) = fake_wandb.runs[0].logged
    assert "samples" not in first and step == 1
    table = second["samples"]
    assert table.columns == list(SAMPLE_COLUMNS) == ["step", "prompt_index", "sample", "prompt", "response", "answer",
                                                     "reward", "correctness", "advantage", "num_tokens",
                                                     "finish_reason"]
    assert table.data == [[1, 7, 0, "What is 1 + 2?", "r0", "3", 1.0, 1.0, 0.5, 3, "stop"],
                          [1, 7, 1, "What is 1 + 2?", "r1", "3", 1.0, 1.0, 0.5, 4, "stop"]]
    # the other outputs take no samples
    assert "samples" not in {tag for tag, _, _ in fake_tensorboard[0].scalars}
    assert "samples" not in read_metrics(tmp_path / "metrics.jsonl")[1]


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
