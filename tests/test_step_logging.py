"""How a training run reports itself: one plain log line per step when stdout is not a terminal
(a log file under SLURM or nohup), the bar only on a terminal; W&B's run id kept in the run
directory so a resumed run continues the same W&B run; the W&B ``samples`` table of whole
prompt groups; and the config checks of these options."""
import json
import logging
import os
import re
import subprocess
import sys
import types

import pytest

from siri import Trainer, load_config
from siri.algo.rollout_batch import Rollout
from siri.config import ConfigError
from siri import progress
from siri.progress import STEP_LOGGER, TrainProgress, step_line, step_logger
from siri.train.metrics import SAMPLE_COLUMNS, WANDB_RUN_ID_FILE, read_metrics
from siri.train.rollout_samples import RolloutSamples, first_groups, prompt_text

from fake_wandb import install as install_fake_wandb
from training_run import TESTS

LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d step (\d+) \((\d+)/3\) cap (\d+) (compress|expand) "
                  r"reward \d\.\d{3} acc \d\.\d{3} len \d+\.\d trunc \d\.\d\d time \d+\.\d\ds$")

METRICS = {"step": 3, "cap": 16, "phase": "expand", "reward_mean": 0.5, "accuracy": 0.25,
           "response_len_mean": 12.34, "truncation_rate": 0.125, "time_step_s": 1.416}


def test_siri_train_into_a_file_writes_one_line_per_step_and_no_bar(workspace, tmp_path):
    """``siri train cfg.yaml > log.txt``: progress on (the default) and stdout a file, so no bar
    but one timestamped line per step, and nothing else but the closing line."""
    run_dir = tmp_path / "run"
    env = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE")}
    env.update(PYTHONPATH=str(TESTS), OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    log_file = tmp_path / "log.txt"
    with log_file.open("w") as out:
        done = subprocess.run([sys.executable, "-m", "siri", "train", str(workspace / "config.yaml"),
                               f"trainer.run_dir={run_dir}", "trainer.steps=3", "trainer.progress=true",
                               "trainer.save_every=0", "trainer.save_at_extrema=false", "trainer.save_rollouts=false",
                               "reward.workers=0"], env=env, stdout=out, stderr=subprocess.PIPE, text=True,
                              timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = log_file.read_text().splitlines()
    assert len(lines) == 4, lines
    assert lines[-1].startswith("done: 3 steps")
    parsed = [LINE.match(line) for line in lines[:3]]
    assert all(parsed), lines
    metrics = read_metrics(run_dir / "metrics.jsonl")
    assert [(int(m[1]), int(m[2]), int(m[3]), m[4]) for m in parsed] == \
        [(r["step"], r["step"] + 1, r["cap"], r["phase"]) for r in metrics]
    assert f"reward {metrics[1]['reward_mean']:.3f} acc {metrics[1]['accuracy']:.3f}" in lines[1]


def test_a_step_line_shows_the_eval_metrics_of_a_step_that_evaluated():
    assert step_line(METRICS, 6) == ("step 3 (4/6) cap 16 expand reward 0.500 acc 0.250 len 12.3 trunc 0.12 "
                                     "time 1.42s")
    evaluated = {**METRICS, "eval_accuracy": 0.75, "eval_response_len_mean": 10.06, "eval_truncation_rate": 0.0,
                 "eval_seconds": 2.5}
    assert step_line(evaluated, 6).endswith("time 1.42s | eval acc 0.750 len 10.1 trunc 0.00 time 2.50s")


@pytest.mark.parametrize("interactive, progress_on, bar, lines", [
    (False, True, False, True),      # a log file: lines whatever trainer.progress says
    (False, False, False, True),
    (True, True, True, False),       # a terminal: the bar, or nothing
    (True, False, False, False),
])
def test_the_bar_is_for_terminals_and_the_lines_for_everything_else(monkeypatch, caplog, interactive, progress_on,
                                                                    bar, lines):
    monkeypatch.setattr(progress, "is_interactive", lambda: interactive)
    caplog.set_level(logging.INFO, logger=STEP_LOGGER)
    report = TrainProgress.for_training(progress_on, total=6)
    try:
        assert (report.enabled, report.lines) == (bar, lines)
        report.stage("rollout", 3, 16, "expand")
        report.step_done(METRICS)
    finally:
        report.close()
    expected = [step_line(METRICS, 6)] if lines else []
    assert [r.getMessage() for r in caplog.records if r.name == STEP_LOGGER] == expected


@pytest.fixture
def unconfigure_logging(monkeypatch):
    """Call it in the test (pytest adds its own handlers to the root logger as the test starts):
    no handler on the root logger or on "siri", and "siri" at NOTSET; restored afterwards."""
    siri_logger = logging.getLogger(STEP_LOGGER)
    level = siri_logger.level

    def unconfigure():
        monkeypatch.setattr(logging.getLogger(), "handlers", [])
        monkeypatch.setattr(siri_logger, "handlers", [])
        siri_logger.setLevel(logging.NOTSET)
        return siri_logger

    yield unconfigure
    siri_logger.setLevel(level)


def test_unconfigured_logging_gets_one_stdout_handler(unconfigure_logging, capsys):
    siri_logger = unconfigure_logging()
    logger = step_logger()
    assert logger is siri_logger and len(logger.handlers) == 1 and logger.level == logging.INFO
    assert step_logger().handlers == logger.handlers          # installed once
    logger.info("step 0 (1/6) cap 16")
    out = capsys.readouterr().out          # the handler writes to the sys.stdout of the moment
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d step 0 \(1/6\) cap 16\n", out)


def test_a_users_logging_configuration_is_left_alone(unconfigure_logging, monkeypatch):
    unconfigure_logging()
    monkeypatch.setattr(logging.getLogger(), "handlers", [logging.NullHandler()])
    logger = step_logger()
    assert logger.handlers == [] and logger.level == logging.NOTSET


# ---- W&B: the run id and the samples table from a training run -------------------------------

def test_a_wandb_run_logs_whole_groups_every_n_steps_and_its_resume_continues_it(workspace, tmp_path, monkeypatch):
    wandb = install_fake_wandb(monkeypatch)
    overrides = [f"trainer.run_dir={tmp_path}", "trainer.wandb=true", "trainer.wandb_entity=team",
                 "trainer.wandb_name=cosine-small", "trainer.log_samples_every=2", "trainer.log_samples_prompts=3",
                 "trainer.save_every=1", "trainer.save_at_extrema=false", "trainer.save_rollouts=false"]
    cfg = load_config(workspace / "config.yaml", [*overrides, "trainer.steps=2"])
    Trainer(cfg).fit()
    Trainer(load_config(workspace / "config.yaml", [*overrides, "trainer.steps=3"])).fit()     # resumes at 2

    stored = (tmp_path / WANDB_RUN_ID_FILE).read_text().strip()
    assert [c["id"] for c in wandb.init_calls] == [stored, stored] == ["id-1", "id-1"]
    for call in wandb.init_calls:
        assert (call["entity"], call["name"], call["project"], call["resume"], call["dir"]) == \
            ("team", "cosine-small", "siri", "allow", str(tmp_path))
    first, resumed = wandb.runs
    assert [step for _, step in first.logged] == [0, 1] and [step for _, step in resumed.logged] == [2]
    assert first.finished and resumed.finished
    # (t + 1) % 2 == 0: only step 1 has a table
    assert "samples" not in first.logged[0][0] and "samples" not in resumed.logged[0][0]
    table = first.logged[1][0]["samples"]
    assert table.columns == list(SAMPLE_COLUMNS)
    rows = [dict(zip(table.columns, row)) for row in table.data]
    group_size = cfg.rollout.group_size
    groups: dict[int, list[dict]] = {}
    for row in rows:
        groups.setdefault(row["prompt_index"], []).append(row)
    assert len(groups) == 3 and len(rows) == 3 * group_size
    data = [json.loads(line) for line in (workspace / "train.jsonl").read_text().splitlines()]
    cap = cfg.length_schedule()(1)
    for index, group in groups.items():
        assert [r["sample"] for r in group] == list(range(group_size))
        assert all(r["step"] == 1 and r["prompt"] == data[index]["prompt"] and r["answer"] == data[index]["answer"]
                   for r in group)
        assert all(0 < r["num_tokens"] <= cap and r["finish_reason"] in ("stop", "length") for r in group)
        # GRPO advantages of a whole group sum to zero
        assert sum(r["advantage"] for r in group) == pytest.approx(0.0, abs=1e-5)


# ---- RolloutSamples: collected only when used --------------------------------------------------

def _examples(n):
    return [types.SimpleNamespace(index=10 + k, prompt=f"problem {k}", answer=str(k)) for k in range(n)]


def _rollouts(n, group_size):
    return [Rollout([1], [5] * (1 + i), [0.0] * (1 + i), "stop", text=f"response {i}", correctness=1.0,
                    reward=float(i % 2), advantage=0.5 - i % 2) for i in range(n * group_size)]


def test_rollout_rows_are_saved_with_their_prompt_and_tables_come_on_due_steps(tmp_path):
    samples = RolloutSamples(tmp_path, group_size=2, save=True, table_every=2, table_prompts=1)
    for step in range(2):
        samples.start(step)
        samples.add(0, _examples(2), _rollouts(2, 2))
        samples.add(1, _examples(1), _rollouts(1, 2))
        samples.finish()
        saved = [json.loads(line) for line in (tmp_path / "rollouts" / f"step_{step}.jsonl").open()]
        assert len(saved) == 6 and saved[0]["prompt"] == "problem 0" and saved[4]["round"] == 1
        assert saved[3] == {"step": step, "round": 0, "prompt_index": 11, "sample": 1, "prompt": "problem 1",
                            "answer": "1", "response": "response 3", "num_tokens": 4, "finish_reason": "stop",
                            "correctness": 1.0, "reward": 1.0, "advantage": -0.5}
        assert samples.table == ([] if step == 0 else saved[:2])


def test_nothing_is_collected_when_neither_the_file_nor_a_table_needs_it(tmp_path, monkeypatch):
    import siri.train.rollout_samples as module

    calls = []
    monkeypatch.setattr(module, "rollout_rows", lambda *args: calls.append(args[0]) or [])
    samples = RolloutSamples(tmp_path, group_size=2, save=False, table_every=3, table_prompts=4)
    for step in range(6):
        samples.start(step)
        samples.add(0, _examples(1), _rollouts(1, 2))
        samples.finish()
    assert calls == [2, 5] and not (tmp_path / "rollouts").exists()


def test_first_groups_takes_whole_groups_in_order():
    rows = [{"round": r, "prompt_index": p, "sample": s} for r, p in ((0, 4), (0, 2), (1, 4)) for s in range(3)]
    assert first_groups(rows, 2) == rows[:6]
    assert first_groups(rows, 5) == rows and first_groups(rows, 0) == []


# ---- config ------------------------------------------------------------------------------------

def test_the_logging_options_default_and_load(workspace):
    t = load_config(workspace / "config.yaml").trainer
    assert (t.wandb_entity, t.wandb_name, t.log_samples_every, t.log_samples_prompts) == (None, None, 10, 4)
    t = load_config(workspace / "config.yaml", ["trainer.wandb_entity=lab", "trainer.wandb_name=run-1",
                                                "trainer.log_samples_every=0"]).trainer
    assert (t.wandb_entity, t.wandb_name, t.log_samples_every) == ("lab", "run-1", 0)


@pytest.mark.parametrize("override, message", [
    ("trainer.log_samples_every=-1", "'trainer.log_samples_every' must be >= 0, got -1"),
    ("trainer.log_samples_prompts=0", "'trainer.log_samples_prompts' must be >= 1, got 0"),
    ("trainer.wandb_entity=''", "'trainer.wandb_entity' must be a non-empty name or null, got ''"),
    ("trainer.wandb_name=' '", "'trainer.wandb_name' must be a non-empty name or null, got ' '"),
    ("trainer.wandb_project=''", "'trainer.wandb_project' must be a non-empty name, got ''"),
    ("trainer.wandb_name=3", "'trainer.wandb_name' must be a string, got 3"),
    ("trainer.log_samples_every=ten", "'trainer.log_samples_every' must be an integer, got 'ten'"),
])
def test_bad_logging_options_name_the_field(workspace, override, message):
    with pytest.raises(ConfigError) as e:
        load_config(workspace / "config.yaml", [override])
    assert str(e.value) == message


def test_a_chat_prompt_is_shown_as_one_line_per_message():
    assert prompt_text("What is 2 + 2?") == "What is 2 + 2?"
    assert prompt_text([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2 + 2?"}]) == \
        "system: Be brief.\nuser: 2 + 2?"
