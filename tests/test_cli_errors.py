"""Every `siri` subcommand turns the mistakes a new user makes into one line on stderr and
exit code 2, never a traceback."""
import subprocess
import sys
from pathlib import Path

import pytest

from siri.cli import main
from siri.models.tiny_lm import save_tiny_lm

REPO = Path(__file__).resolve().parents[1]
PAPER_CONFIG = str(REPO / "configs" / "siri_r1_distill_qwen_1.5b.yaml")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("mistakes")
    (root / "bad.yaml").write_text("model:\n  path: [unclosed\n")
    (root / "tabs.yaml").write_text("model:\n\tpath: a\n")
    (root / "unknown_key.yaml").write_text("model:\n  pth: a\n")
    (root / "empty_dir").mkdir()
    (root / "run_without_metrics").mkdir()
    (root / "problems.jsonl").write_text('{"prompt": "1+1?", "answer": "2"}\n')
    save_tiny_lm(root / "model", ["What is 1 + 1? 2", "What is 2 + 2? 4"], vocab_size=300, layers=1)
    return root


# (argv, words the one-line message must contain); {root} is the fixture's directory
MISTAKES = {
    "info bad flag": (["info", "--verbose"], ["unrecognized arguments: --verbose", "siri info --help"]),
    "no subcommand": ([], ["required"]),
    "unknown subcommand": (["trian"], ["invalid choice"]),
    "train missing config": (["train", "{root}/nope.yaml"], ["not found", "nope.yaml"]),
    "train bad yaml": (["train", "{root}/bad.yaml", "--dry-run"], ["bad.yaml:3:1", "not valid YAML"]),
    "train tab in yaml": (["train", "{root}/tabs.yaml", "--dry-run"], ["tabs.yaml:2:1", "'\\t'"]),
    "train unknown key": (["train", "{root}/unknown_key.yaml", "--dry-run"], ["pth"]),
    "train flag typo": (["train", PAPER_CONFIG, "--dryrun"], ["--dryrun", "siri train --help"]),
    "train bad override": ([ "train", PAPER_CONFIG, "rollout.group_size=many", "--dry-run"], ["rollout.group_size"]),
    "train bad device memory": (["train", PAPER_CONFIG, "--dry-run", "--device-memory-gb", "0"], ["device_memory_gb"]),
    "eval missing model": (["eval", "{root}/no_model", "--data", "aime24"], ["no such model directory"]),
    "eval dir without model": (["eval", "{root}/empty_dir", "--data", "aime24"], ["no config.json"]),
    "eval unknown dataset": (["eval", "{root}/model", "--data", "aime2O"], ["aime2O", "named datasets"]),
    "eval without data": (["eval", "{root}/empty_dir"], ["--data"]),
    "eval bad number": (["eval", "{root}/empty_dir", "--data", "aime24", "--n", "many"], ["--n", "invalid int"]),
    # the allowed values are model.device's and model.dtype's (siri.config.config_choices)
    "eval bad device": (["eval", "{root}/model", "--data", "aime24", "--device", "tpu"],
                        ["--device", "invalid choice", "'auto', 'cpu', 'cuda'"]),
    "eval bad dtype": (["eval", "{root}/model", "--data", "aime24", "--dtype", "fp8"],
                       ["--dtype", "invalid choice", "'float16'"]),
    "demo missing config": (["demo", "--out", "{root}/demo", "--config", "{root}/nope.yaml", "--smoke"],
                            ["not found", "nope.yaml"]),
    "demo bad flag": (["demo", "--fast"], ["--fast", "siri demo --help"]),
    "demo no seeds": (["demo", "--out", "{root}/demo", "--seeds", "0"], ["--seeds must be >= 1, got 0"]),
    "plot missing run": (["plot", "{root}/no_run"], ["does not exist", "no_run"]),
    "plot run without metrics": (["plot", "{root}/run_without_metrics"], ["metrics.jsonl"]),
    "plot missing argument": (["plot"], ["run_dir"]),
}


@pytest.mark.parametrize("case", MISTAKES, ids=list(MISTAKES))
def test_mistake_gives_one_line_and_exit_2(case, files, capsys, monkeypatch):
    import datasets

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def offline(path, *args, **kwargs):   # what the Hub client raises without a network, minus its retries
        raise ConnectionError(f"Couldn't reach '{path}' on the Hub (LocalEntryNotFoundError)")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    argv, words = MISTAKES[case]
    argv = [a.format(root=files) for a in argv]
    try:
        code = main(argv)
    except SystemExit as e:       # argparse exits itself
        code = e.code
    err = capsys.readouterr().err
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for word in words:
        assert word in lines[0], (word, lines[0])


def test_the_console_script_prints_no_traceback(files):
    """The real entry point (`python -m siri`), not just main(): one line, exit 2."""
    out = subprocess.run([sys.executable, "-m", "siri", "plot", str(files / "no_run")], capture_output=True,
                         text=True, cwd=REPO)
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0 and "Traceback" not in out.stderr


def test_plot_says_why_there_is_no_pareto_plot(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text("".join(
        f'{{"step": {t}, "cap": {64 - 8 * t}, "phase": "compress", "reward_mean": 0.5, '
        f'"response_len_mean": 30.0, "truncation_rate": 0.1}}\n' for t in range(4)))
    assert main(["plot", str(run)]) == 0
    out = capsys.readouterr().out
    assert "no pareto.png" in out and "siri eval" in out
    assert (run / "plots" / "training.png").is_file()


def _parsed(monkeypatch, argv):
    """The namespace `siri ARGV` hands its subcommand (recorded instead of run)."""
    from siri import cli

    seen = []
    for name in ("cmd_train", "cmd_eval", "cmd_demo"):
        monkeypatch.setattr(cli, name, lambda args: seen.append(args) or 0)
    assert main(argv) == 0
    return {k: v for k, v in vars(seen[0]).items() if k not in ("func", "parser")}


ORDERS = {
    "train": [["train", PAPER_CONFIG, "trainer.steps=5", "schedule.l_min=64", "--dry-run", "--run-dir", "R"],
              ["train", PAPER_CONFIG, "--dry-run", "trainer.steps=5", "schedule.l_min=64", "--run-dir", "R"],
              ["train", PAPER_CONFIG, "--dry-run", "trainer.steps=5", "--run-dir", "R", "schedule.l_min=64"],
              ["train", "--dry-run", PAPER_CONFIG, "trainer.steps=5", "--run-dir", "R", "schedule.l_min=64"]],
    "demo": [["demo", "schedule.period=10", "trainer.steps=3", "--smoke", "--quiet", "--seed", "2"],
             ["demo", "--smoke", "schedule.period=10", "trainer.steps=3", "--quiet", "--seed", "2"],
             ["demo", "--smoke", "schedule.period=10", "--quiet", "trainer.steps=3", "--seed", "2"],
             ["demo", "--smoke", "--quiet", "--seed", "2", "schedule.period=10", "trainer.steps=3"]],
}


@pytest.mark.parametrize("command", ORDERS)
def test_overrides_may_come_before_between_or_after_flags(command, monkeypatch):
    """`siri train CONFIG --dry-run trainer.steps=5` parses as `siri train CONFIG trainer.steps=5
    --dry-run` does: overrides and flags in any order give the same arguments (and, for train,
    the same resolved config)."""
    from siri.config import config_to_dict, load_config

    parsed = [_parsed(monkeypatch, argv) for argv in ORDERS[command]]
    assert all(p == parsed[0] for p in parsed), parsed
    assert parsed[0]["command"] == command and parsed[0]["quiet" if command == "demo" else "dry_run"]
    if command == "train":
        assert parsed[0]["overrides"] == ["trainer.steps=5", "schedule.l_min=64"]
        cfg = config_to_dict(load_config(PAPER_CONFIG, parsed[0]["overrides"]))
        assert cfg["trainer"]["steps"] == 5 and cfg["schedule"]["l_min"] == 64
    else:
        assert parsed[0]["overrides"] == ["schedule.period=10", "trainer.steps=3"] and parsed[0]["smoke"]


@pytest.mark.parametrize("argv", [["train", PAPER_CONFIG, "--dry-run", "trainer.steps=5", "--bogus"],
                                  ["demo", "--smoke", "schedule.period=10", "--bogus", "trainer.steps=3"]],
                         ids=["train", "demo"])
def test_an_unknown_flag_among_overrides_is_named_alone(argv, capsys):
    """An unknown flag between or after overrides is the one thing reported (the overrides
    around it are accepted, not lumped into the error)."""
    with pytest.raises(SystemExit) as e:
        main(argv)
    err = capsys.readouterr().err
    assert e.value.code == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert f"siri {argv[0]}: error: unrecognized arguments: --bogus (see 'siri {argv[0]} --help')" == lines[0]
