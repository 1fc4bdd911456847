"""`siri demo --smoke`: every stage of the demo at the smallest size, its outputs, caching and
determinism. (The full demo's claims are checked by scripts/verify_demo.py, not here: they
need minutes.)"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import transformers

from siri.data import PromptFormatter
from siri.demo.run import CHECKPOINTS, SMOKE_CONFIG, DemoSettings, run_demo
from siri.demo.task import INSTRUCTION
from siri.metrics import read_run_metrics


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    summary = run_demo(out, seed=5, config=SMOKE_CONFIG, settings=DemoSettings.smoke(), progress=False)
    return out, summary


def without_paths(summary):
    drop = {"checkpoint", "eval_file", "runs"}
    return {k: ({kk: vv for kk, vv in v.items() if kk not in drop} if isinstance(v, dict) else v)
            for k, v in summary.items() if k not in drop}


def test_summary_has_every_checkpoint_and_they_load_with_transformers(demo):
    out, summary = demo
    saved = json.loads((out / "summary.json").read_text())
    assert saved == summary
    for name in CHECKPOINTS:
        entry = summary[name]
        assert 0 <= entry["accuracy"] <= 1 and entry["mean_tokens"] > 0
        model = transformers.AutoModelForCausalLM.from_pretrained(entry["checkpoint"])
        tokenizer = transformers.AutoTokenizer.from_pretrained(entry["checkpoint"])
        assert model.config.model_type == "qwen2" and tokenizer.eos_token == "<|im_end|>"
    assert Path(summary["eval_file"]) == out / "data" / "eval.jsonl"
    assert summary["eval_settings"]["temperature"] == 0.6 and summary["eval_settings"]["n"] >= 2
    assert summary["eval_settings"]["max_tokens"] == 3 * summary["l_max"]
    for plot in ("pareto.png", "training_comparison.png"):
        assert (out / "plots" / plot).read_bytes()[:4] == b"\x89PNG"


def test_eval_inputs_are_exactly_what_the_engine_saw(demo):
    out, _ = demo
    tokenizer = transformers.AutoTokenizer.from_pretrained(out / "base")
    formatter = PromptFormatter(tokenizer, instruction=INSTRUCTION)
    rows = [json.loads(line) for line in (out / "data" / "eval.jsonl").open()]
    train = {json.loads(line)["prompt"] for line in (out / "data" / "train.jsonl").open()}
    assert rows and not {r["prompt"] for r in rows} & train, "eval prompts must be held out"
    for r in rows:
        assert r["input"] == formatter.text(r["prompt"])
        assert tokenizer(r["input"], add_special_tokens=False)["input_ids"] == formatter.ids(r["prompt"])
        assert tokenizer.decode(tokenizer(r["input"])["input_ids"]) == r["input"]


def test_arms_use_their_caps(demo):
    out, summary = demo
    l_max, l_min = summary["l_max"], summary["l_min"]
    assert l_min == round(0.55 * l_max)
    siri = [m["cap"] for m in read_run_metrics(out / "runs" / "siri")]
    assert siri[0] == l_max and min(siri) == l_min and siri[-1] == l_max, siri
    assert {m["cap"] for m in read_run_metrics(out / "runs" / "baseline")} == {l_max}
    assert {m["cap"] for m in read_run_metrics(out / "runs" / "compress_only")} == {l_min}


def test_same_seed_same_numbers_and_a_rerun_reuses_the_base(demo, tmp_path):
    out, summary = demo
    marker = (out / "base" / "demo_base.json").stat().st_mtime_ns
    again = run_demo(out, seed=5, config=SMOKE_CONFIG, settings=DemoSettings.smoke(), progress=False)
    assert (out / "base" / "demo_base.json").stat().st_mtime_ns == marker, "the cached base model was rebuilt"
    assert again == summary
    fresh = run_demo(tmp_path, seed=5, config=SMOKE_CONFIG, settings=DemoSettings.smoke(), progress=False)
    assert without_paths(fresh) == without_paths(summary)


def test_cli_smoke_prints_table_and_final_line(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "COLUMNS": "200"}
    out = subprocess.run([sys.executable, "-m", "siri", "demo", "--smoke", "--quiet", "--out", str(tmp_path)],
                         env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    for name in CHECKPOINTS:
        assert name in out.stdout
    assert "demo done" in out.stdout and str(tmp_path / "summary.json") in out.stdout.replace("\n", "")


def test_siri_eval_defaults_to_the_prompt_format_the_model_was_trained_with(demo, tmp_path, capsys):
    """The demo's base and its RL checkpoints carry their prompt format; `siri eval` uses it by
    default (reproducing the demo's own eval of the base exactly), an explicit --instruction
    overrides it, and the report records which was used."""
    from siri.cli import main
    from siri.data import DEEPSCALER_INSTRUCTION
    from siri.prompt_format import saved_prompt_format

    out, summary = demo
    base = out / "base"
    assert saved_prompt_format(base).instruction == INSTRUCTION
    checkpoint = Path(summary["siri_low"]["checkpoint"])
    trained = saved_prompt_format(checkpoint)
    assert trained.instruction == INSTRUCTION and trained.use_chat_template
    s = summary["eval_settings"]
    reports = {}
    for name, extra in (("default", []), ("deepscaler", ["--instruction", DEEPSCALER_INSTRUCTION])):
        path = tmp_path / f"{name}.json"
        code = main(["eval", str(base), "--data", str(out / "data" / "eval.jsonl"), "--n", str(s["n"]),
                     "--temperature", str(s["temperature"]), "--top-p", str(s["top_p"]),
                     "--max-tokens", str(s["max_tokens"]), "--seed", str(s["seed"]), "--quiet", "--device", "cpu",
                     "--out", str(path), *extra])
        assert code == 0, capsys.readouterr().err
        reports[name] = json.loads(path.read_text())
    assert reports["default"]["prompt"] == {"instruction": INSTRUCTION, "use_chat_template": True,
                                            "source": str(base / "siri_prompt.json")}
    assert reports["deepscaler"]["prompt"]["instruction"] == DEEPSCALER_INSTRUCTION
    assert reports["deepscaler"]["prompt"]["source"].startswith("command line")
    default_result = reports["default"]["benchmarks"]["eval"]
    assert default_result["accuracy"] == summary["base"]["accuracy"]
    assert default_result["mean_tokens"] == summary["base"]["mean_tokens"]
