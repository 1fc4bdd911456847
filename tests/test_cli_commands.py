"""The `siri` subcommands called in-process through ``siri.cli.main``: what each prints and
returns, and how it hands its arguments to the library (the heavy parts, training and
evaluation, are replaced by recorders; test_cli_errors.py covers the user mistakes)."""
import json
import sys
import types
from pathlib import Path

import pytest

import siri
from siri import cli
from siri.cli import _one_line, main

REPO = Path(__file__).resolve().parents[1]
PAPER_CONFIG = str(REPO / "configs" / "siri_r1_distill_qwen_1.5b.yaml")


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("SIRI_DEBUG", raising=False)
    monkeypatch.setenv("COLUMNS", "200")     # rich tables on one line each


def test_info_prints_the_build_and_the_devices(capsys):
    import torch

    assert main(["info"]) == 0
    out = capsys.readouterr().out
    info = siri.build_info()
    assert out.splitlines()[0].strip() == f"siri {info['version']}"
    rows = {}
    for line in out.splitlines():
        cells = [c.strip() for c in line.split("│")]
        if len(cells) == 4:         # "│ key │ value │"
            rows[cells[1]] = cells[2]
    assert rows["compiled backends"] == ", ".join(info["backends"])
    assert rows["CUDA archs"] == (info["cuda_archs"] or "-")
    assert rows["CPU SIMD level"] == info["simd"] and rows["compiler"] == info["compiler"]
    assert rows["torch (build / runtime)"] == f"{info['torch_version']} / {torch.__version__}"
    assert rows["CPU threads"] == str(torch.get_num_threads())
    if not torch.cuda.is_available():
        assert rows["CUDA device"] == "none visible" and rows["kernels in use"] == "cpu"


def test_train_with_nproc_relaunches_itself_under_torchrun(monkeypatch, capsys):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    launched = []
    monkeypatch.setattr(cli.subprocess, "call", lambda cmd: launched.append(cmd) or 7)
    code = main(["train", PAPER_CONFIG, "trainer.steps=5", "--nproc", "2", "--run-dir", "R"])
    assert code == 7            # torchrun's exit status is the command's
    assert launched == [[sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                         "-m", "siri", "train", PAPER_CONFIG, "trainer.steps=5", "trainer.run_dir=R"]]
    assert "siri train: launching" in capsys.readouterr().out


class _FakeTrainer:
    """Stands in for siri.train.trainer.Trainer: records the config, returns a fixed fit() result."""
    made: list = []
    fail_in: str | None = None
    error: BaseException | None = None

    def __init__(self, cfg):
        if self.fail_in == "init":
            raise self.error
        _FakeTrainer.made.append(cfg)
        self.dist = types.SimpleNamespace(is_main=True, enabled=False)

    def fit(self):
        if self.fail_in == "fit":
            raise self.error
        return {"checkpoint": "RUN/checkpoints/step_5"}


@pytest.fixture
def fake_trainer(monkeypatch):
    import siri.train.distributed
    import siri.train.trainer

    calls = []
    monkeypatch.setattr(_FakeTrainer, "made", [])
    monkeypatch.setattr(siri.train.trainer, "Trainer", _FakeTrainer)
    monkeypatch.setattr(siri.train.distributed, "shutdown", lambda ctx: calls.append(("shutdown", ctx)))
    monkeypatch.setattr(siri.train.distributed, "leave_process_group", lambda: calls.append(("leave",)))
    return calls


def test_train_in_one_process_runs_the_trainer_and_reports_the_checkpoint(fake_trainer, monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(_FakeTrainer, "fail_in", None)
    code = main(["train", PAPER_CONFIG, "trainer.steps=5", "--run-dir", str(tmp_path / "run")])
    assert code == 0
    (cfg,) = _FakeTrainer.made
    assert cfg.trainer.steps == 5 and cfg.trainer.run_dir == str(tmp_path / "run")
    out = capsys.readouterr().out
    assert f"done: 5 steps; run directory {tmp_path / 'run'}; newest checkpoint RUN/checkpoints/step_5" in out
    assert [c[0] for c in fake_trainer] == ["shutdown"]


class _Exited(Exception):
    pass


@pytest.mark.parametrize("where", ["init", "fit"])
def test_a_rank_failure_exits_with_status_3_and_one_line(fake_trainer, monkeypatch, capsys, where):
    from siri.train.distributed import RankFailure

    exits = []

    def fake_exit(code):
        exits.append(code)
        raise _Exited

    monkeypatch.setattr(_FakeTrainer, "fail_in", where)
    monkeypatch.setattr(_FakeTrainer, "error", RankFailure("rank 1 did not answer within 600 s"))
    monkeypatch.setattr(cli.os, "_exit", fake_exit)
    with pytest.raises(_Exited):
        main(["train", PAPER_CONFIG, "trainer.steps=5"])
    assert exits == [3]
    assert capsys.readouterr().err.strip() == "siri train: rank 1 did not answer within 600 s"
    assert fake_trainer == []     # os._exit: no clean shutdown of a group with a dead peer


def test_a_setup_error_leaves_the_process_group_then_reports_it(fake_trainer, monkeypatch, capsys):
    monkeypatch.setattr(_FakeTrainer, "fail_in", "init")
    monkeypatch.setattr(_FakeTrainer, "error", ValueError("checkpoint step_4 cannot be read on rank 1"))
    assert main(["train", PAPER_CONFIG, "trainer.steps=5"]) == 2
    assert fake_trainer == [("leave",)]
    assert capsys.readouterr().err.strip() == "siri train: error: checkpoint step_4 cannot be read on rank 1"


def test_dry_run_of_a_local_model_and_data_file(tmp_path, capsys):
    from tiny_models import tiny_model

    tiny_model(max_position_embeddings=512).save_pretrained(tmp_path / "model")
    data = tmp_path / "train.jsonl"
    data.write_text('{"prompt": "1+1?", "answer": "2"}\n')
    code = main(["train", PAPER_CONFIG, "--dry-run", f"model.path={tmp_path / 'model'}", f"data.train={data}",
                 "schedule.l_max=256", "schedule.l_min=128", "schedule.period=4", "trainer.steps=8",
                 "data.max_prompt_tokens=64", "rollout.page_size=16", "model.device=cpu", "--device-memory-gb", "4"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert f"model {tmp_path / 'model'}: found locally (max_position_embeddings 512)" in out
    assert f"data {data}\n" in out        # an existing file: no load_dataset note
    assert "length schedule: cosine, 8 steps" in out
    assert "dry run: config is valid; nothing was loaded or trained" in out


def test_dry_run_of_a_named_dataset_with_a_local_copy(tmp_path, monkeypatch, capsys):
    import siri.models.loading

    copy = tmp_path / "deepscaler.jsonl"
    copy.write_text('{"problem": "1+1?", "answer": "2"}\n')
    # the paper's model as if it were not in this machine's Hugging Face cache
    monkeypatch.setattr(siri.models.loading, "local_model_config", lambda path, trust_remote_code=False: None)
    assert main(["train", PAPER_CONFIG, "--dry-run", f"data.path={copy}"]) == 0
    out = capsys.readouterr().out
    assert f"data deepscaler from {copy}\n" in out
    assert ("model deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B: not on this machine: transformers downloads it when "
            "training starts") in out


def test_dry_run_says_how_a_dataset_name_that_is_no_file_will_be_read(capsys, monkeypatch):
    import siri.models.loading

    monkeypatch.setattr(siri.models.loading, "local_model_config", lambda path, trust_remote_code=False: None)
    assert main(["train", PAPER_CONFIG, "--dry-run", "data.train=deepscalr"]) == 0
    out = capsys.readouterr().out
    assert "data deepscalr: not a local file nor a named dataset (aime24, aime25, amc, deepscaler, math500)" in out
    assert main(["train", PAPER_CONFIG, "--dry-run"]) == 0
    assert "data deepscaler: agentica-org/DeepScaleR-Preview-Dataset, loaded with" in capsys.readouterr().out


def test_eval_hands_benchmarks_settings_and_prompt_format_to_the_evaluator(tmp_path, monkeypatch, capsys):
    import siri.eval

    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    seen = {}

    def fake_evaluate(model_path, benchmarks, settings, **kwargs):
        seen.update(model_path=model_path, benchmarks=benchmarks, settings=settings, **kwargs)
        return {"label": kwargs["label"], "benchmarks": {}}

    printed = []
    monkeypatch.setattr(siri.eval, "evaluate_model", fake_evaluate)
    monkeypatch.setattr(siri.eval, "print_eval_table", printed.append)
    out_path = tmp_path / "report.json"
    code = main(["eval", str(model), "--data", "aime24=/copies/aime.parquet", "--data", "mine=/data/held.jsonl",
                 "--data", "math500", "--data", "/data/extra.jsonl", "--n", "3", "--temperature", "0.5",
                 "--top-p", "0.9", "--max-tokens", "128", "--seed", "4", "--batch-prompts", "2", "--no-instruction",
                 "--no-chat-template", "--device", "cpu", "--dtype", "float32", "--label", "L", "--out",
                 str(out_path), "--quiet", "--prompt-key", "question", "--answer-key", "reward_model.ground_truth"])
    assert code == 0
    assert seen["benchmarks"] == {"aime24": ("aime24", "/copies/aime.parquet"), "mine": ("/data/held.jsonl", None),
                                  "math500": ("math500", None), "extra": ("/data/extra.jsonl", None)}
    s = seen["settings"]
    assert (s.n, s.temperature, s.top_p, s.max_tokens, s.seed, s.batch_prompts) == (3, 0.5, 0.9, 128, 4, 2)
    fmt = seen["prompt_format"]
    assert fmt.instruction is None and fmt.use_chat_template is False
    assert (seen["prompt_key"], seen["answer_key"]) == ("question", "reward_model.ground_truth")
    assert (seen["device"], seen["dtype"], seen["label"], seen["progress"]) == ("cpu", "float32", "L", False)
    assert seen["out"] == out_path and fmt.source.startswith("command line over siri eval's default")
    assert printed == [{"label": "L", "benchmarks": {}}]
    out = capsys.readouterr().out
    assert "instruction None, chat template off" in out and f"report: {out_path}" in out


def test_eval_defaults_to_the_saved_prompt_format_and_the_model_dirs_report(tmp_path, monkeypatch, capsys):
    import siri.eval
    from siri.data import PromptFormat

    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    PromptFormat("Answer in a box.", use_chat_template=False).save(model)
    seen = {}
    monkeypatch.setattr(siri.eval, "evaluate_model", lambda *a, **k: seen.update(k) or {"benchmarks": {}})
    monkeypatch.setattr(siri.eval, "print_eval_table", lambda report: None)
    assert main(["eval", str(model), "--data", "aime24"]) == 0
    fmt = seen["prompt_format"]
    assert fmt.instruction == "Answer in a box." and fmt.use_chat_template is False
    assert seen["out"] == model / "eval.json" and seen["progress"] is True
    assert fmt.source == str(model / "siri_prompt.json")
    assert seen["prompt_key"] is None and seen["answer_key"] is None
    assert f"report: {model / 'eval.json'}" in capsys.readouterr().out


def test_plot_lists_the_pareto_plot_when_there_are_evals(tmp_path, monkeypatch, capsys):
    import siri.plot

    paths = [tmp_path / "plots" / "training.png", tmp_path / "plots" / "pareto.png"]
    monkeypatch.setattr(siri.plot, "plot_run", lambda run_dir: paths)
    assert main(["plot", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.splitlines() == [str(p) for p in paths]        # no "no pareto.png" hint


@pytest.mark.parametrize("flags, config, arms, seeds, jobs", [
    (["--smoke"], "smoke", None, 1, None),
    (["--smoke", "--study", "--jobs", "2"], "smoke", "study", 5, 2),
    (["--study"], None, "study", 5, None),
    (["--study", "--seeds", "3"], None, "study", 3, None),
    (["--seeds", "2"], None, None, 2, None),
])
def test_demo_combines_smoke_and_study_settings(monkeypatch, tmp_path, flags, config, arms, seeds, jobs):
    import siri.demo.run as demo_run

    seen = {}
    monkeypatch.setattr(demo_run, "run_demo", lambda out, **kwargs: seen.update(out=out, **kwargs))
    assert main(["demo", "--out", str(tmp_path / "d"), "--seed", "3", "schedule.period=10", *flags]) == 0
    settings = seen["settings"]
    assert seen["out"] == str(tmp_path / "d") and seen["seed"] == 3 and seen["overrides"] == ["schedule.period=10"]
    assert seen["config"] == (demo_run.SMOKE_CONFIG if config == "smoke" else None)
    smoke = demo_run.DemoSettings.smoke()
    if config == "smoke":       # the smallest sizes, with the study's arms and seeds when asked
        assert settings == type(settings)(**{**vars(smoke), "arms": settings.arms, "seeds": seeds, "jobs": jobs})
    expected_arms = demo_run.DemoSettings.study().arms if arms == "study" else demo_run.DemoSettings().arms
    assert settings.arms == expected_arms and settings.seeds == seeds and settings.jobs == jobs


def test_demo_rejects_jobs_below_one(capsys):
    assert main(["demo", "--jobs", "0", "--smoke"]) == 2
    assert capsys.readouterr().err.strip() == "siri demo: error: --jobs must be >= 1, got 0"


def test_ctrl_c_is_one_line_and_exit_130(tmp_path, monkeypatch, capsys):
    import siri.plot

    def interrupted(run_dir):
        raise KeyboardInterrupt

    monkeypatch.setattr(siri.plot, "plot_run", interrupted)
    assert main(["plot", str(tmp_path)]) == 130
    assert capsys.readouterr().err == "siri plot: interrupted\n"


def test_siri_debug_shows_the_traceback_instead_of_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SIRI_DEBUG", "1")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        main(["plot", str(tmp_path / "no_run")])
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("error, line", [
    (FileNotFoundError(2, "No such file or directory", "/a/b.yaml"), "No such file or directory: /a/b.yaml"),
    (OSError("disk full"), "disk full"),
    (ValueError("first line\n\n   second line  \n"), "first line second line"),
    (ValueError(), "ValueError"),
    (json.JSONDecodeError("Expecting value", "x", 0), "Expecting value: line 1 column 1 (char 0)"),
])
def test_one_line_error_messages(error, line):
    assert _one_line(error) == line


def test_python_m_siri_cli_is_the_same_command(tmp_path, monkeypatch, capsys):
    """`python -m siri.cli ...` (the module run as a script) exits with main()'s status."""
    import runpy
    import warnings

    monkeypatch.setattr(sys, "argv", ["siri", "plot", str(tmp_path / "no_run")])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)     # siri.cli is already imported
        with pytest.raises(SystemExit) as e:
            runpy.run_module("siri.cli", run_name="__main__")
    assert e.value.code == 2
    assert capsys.readouterr().err.startswith("siri plot: error: run directory ")
