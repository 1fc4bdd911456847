"""`siri demo --smoke`: every stage of the demo at the smallest size, its outputs, caching and
determinism, and that it trains something. (The full demo's numbers are checked by
scripts/verify_demo.py, not here: they need minutes.)"""
import json
import math
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import transformers

from siri.data import PromptFormatter
from siri.demo.caps import L_MAX_FACTOR, L_MIN_MARGIN
from siri.demo.gates import BaseModelGateError
from siri.demo.report import checkpoint_names
from siri.demo.run import SMOKE_CONFIG, DemoSettings, run_demo
from siri.demo.task import INSTRUCTION, TIERS
from siri.train.metrics import read_run_metrics

SEED = 5
CHECKPOINTS = checkpoint_names(DemoSettings().arms)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    summary = run_demo(out, seed=SEED, config=SMOKE_CONFIG, settings=DemoSettings.smoke(), progress=False)
    return out, summary


def without_paths(value):
    """The summary with every absolute path (checkpoints, runs, the eval file) dropped."""
    if isinstance(value, dict):
        return {k: without_paths(v) for k, v in value.items() if k not in ("checkpoint", "eval_file", "runs")}
    if isinstance(value, list):
        return [without_paths(v) for v in value]
    return value


def test_summary_has_every_checkpoint_and_they_load_with_transformers(demo):
    out, summary = demo
    saved = json.loads((out / "summary.json").read_text())
    assert saved == summary
    assert summary["checkpoints"] == CHECKPOINTS == ["base", "siri_low", "siri_high", "baseline", "compress_only"]
    per_seed = summary["per_seed"][str(SEED)]
    for name in CHECKPOINTS:
        entry = per_seed[name]
        assert 0 <= entry["accuracy"] <= 1 and entry["mean_tokens"] > 0
        assert set(entry["tiers"]) == set(TIERS) and sum(t["num_prompts"] for t in entry["tiers"].values()) == 12
        assert summary["results"][name]["accuracy"]["mean"] == entry["accuracy"]  # one seed: the mean is it
        model = transformers.AutoModelForCausalLM.from_pretrained(entry["checkpoint"])
        tokenizer = transformers.AutoTokenizer.from_pretrained(entry["checkpoint"])
        assert model.config.model_type == "qwen2" and tokenizer.eos_token == "<|im_end|>"
    assert Path(summary["eval_file"]) == out / "data" / "eval.jsonl"
    assert summary["eval_settings"]["temperature"] == 1.0 and summary["eval_settings"]["n"] >= 2
    assert summary["eval_settings"]["max_tokens"] == 3 * summary["l_max"]
    assert summary["verdict"]["lines"] and set(summary["verdict"]["pareto_front"]) <= set(CHECKPOINTS)
    for plot in ("pareto.png", "training_comparison.png", "siri_trajectory.png", "trajectories.png", "mechanism.png"):
        assert (out / "plots" / plot).read_bytes()[:4] == b"\x89PNG"
    timing = json.loads((out / "timing.json").read_text())
    assert timing["seconds"] > 0
    assert set(timing["run_seconds"]) == {f"{arm}/seed{s}" for arm in summary["arms"] for s in summary["seeds"]}
    assert set(timing["eval_seconds"]) == {f"base/seed{s}" for s in summary["seeds"]} | {
        f"{arm}/step_{n}/seed{s}" for arm in summary["arms"] for n in summary["trajectory"]["steps"]
        for s in summary["seeds"]}
    assert timing["jobs"]["run"] >= 1 and timing["jobs"]["eval"] >= 1 and timing["machine"]["cores"] >= 1
    assert summary["variation"] and "One seed illustrates the pipeline" in summary["variation"][0]


def test_smoke_trains_something(demo):
    """Every arm sees rewards above 0 and takes non-zero gradients: a smoke run whose base cannot
    answer (every reward 0, every advantage 0) would exercise nothing."""
    out, _ = demo
    for arm in ("siri", "baseline", "compress_only"):
        metrics = read_run_metrics(out / "runs" / f"seed{SEED}" / arm)
        assert max(m["reward_mean"] for m in metrics) > 0, arm
        assert max(m["grad_norm"] for m in metrics) > 0, arm


def test_every_arm_is_evaluated_at_siris_peaks_and_troughs_with_the_final_protocol(demo):
    """One eval protocol: every arm has a checkpoint after N steps for each of SIRI's peaks and
    troughs, each evaluated on the whole held-out set with the final settings; the compared
    checkpoints are points of these trajectories (the same numbers), and nothing is evaluated
    on a subset during training."""
    out, summary = demo
    from siri.config import load_config

    seed = str(SEED)
    schedule = load_config(out / "runs" / f"seed{SEED}" / "siri" / "config.yaml", validate=False).length_schedule()
    steps = len(read_run_metrics(out / "runs" / f"seed{SEED}" / "siri"))
    expected = sorted(t + 1 for t in set(schedule.peaks(steps)) | set(schedule.troughs(steps)))
    assert summary["trajectory"]["steps"] == expected and len(expected) >= 4 and expected[-1] == steps
    assert list(summary["trajectory"]["arms"]) == summary["arms"]
    for arm in summary["arms"]:
        run_dir = out / "runs" / f"seed{SEED}" / arm
        assert not any("eval_accuracy" in m for m in read_run_metrics(run_dir))
        saved = {int(p.name.split("_")[1]) for p in (run_dir / "checkpoints").glob("step_*")}
        assert set(expected) <= saved, (arm, saved)
        points = summary["trajectory"]["arms"][arm][seed]
        assert [p["step"] for p in points] == expected
        assert points[-1]["label"] == f"{steps} peak" and points[-1]["series"] == points[-2]["series"]
        for point in points:
            report = json.loads((out / "eval" / f"seed{SEED}" / arm / f"step_{point['step']}.json").read_text())
            assert report["settings"] == summary["eval_settings"]
            result = report["benchmarks"]["eval"]
            assert result["num_prompts"] == 12 and result["num_samples"] == 12 * summary["eval_settings"]["n"]
            assert (point["accuracy"], point["mean_tokens"]) == (result["accuracy"], result["mean_tokens"])
    per_seed = summary["per_seed"][seed]
    siri = {p["step"]: p for p in summary["trajectory"]["arms"]["siri"][seed]}
    last_trough = max(t + 1 for t in schedule.troughs(steps))
    for name, arm, step in (("siri_low", "siri", last_trough), ("siri_high", "siri", steps),
                            ("baseline", "baseline", steps), ("compress_only", "compress_only", steps)):
        point = {p["step"]: p for p in summary["trajectory"]["arms"][arm][seed]}[step]
        assert per_seed[name]["checkpoint"].endswith(f"step_{step}")
        assert (per_seed[name]["accuracy"], per_seed[name]["mean_tokens"]) == (point["accuracy"], point["mean_tokens"])
    assert siri[last_trough]["label"].endswith("trough")


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


def test_caps_separate_the_tiers_and_arms_use_them(demo):
    out, summary = demo
    l_max, l_min = summary["l_max"], summary["l_min"]
    concise = summary["caps"]["concise_tokens"]
    assert l_min == math.ceil(concise["hard"]["median"]) + L_MIN_MARGIN
    assert l_max == math.ceil(L_MAX_FACTOR * summary["caps"]["base_lengths"]["hard"]["all"]["p99"]) > l_min
    runs = out / "runs" / f"seed{SEED}"
    siri = [m["cap"] for m in read_run_metrics(runs / "siri")]
    assert siri[0] == l_max and min(siri) == l_min and siri[-1] == l_max, siri
    assert {m["cap"] for m in read_run_metrics(runs / "baseline")} == {l_max}
    assert {m["cap"] for m in read_run_metrics(runs / "compress_only")} == {l_min}
    lengths = summary["caps"]["base_lengths"]
    assert set(lengths) == set(TIERS) and all(t["all"]["count"] > 0 for t in lengths.values())


def test_same_seed_same_summary_and_a_rerun_reuses_the_base(demo, tmp_path):
    out, summary = demo
    marker = (out / "base" / "demo_base.json").stat().st_mtime_ns
    again = run_demo(out, seed=SEED, config=SMOKE_CONFIG, settings=DemoSettings.smoke(), progress=False)
    assert (out / "base" / "demo_base.json").stat().st_mtime_ns == marker, "the cached base model was rebuilt"
    assert again == summary
    fresh = run_demo(tmp_path, seed=SEED, config=SMOKE_CONFIG, settings=DemoSettings.smoke(), progress=False)
    assert without_paths(fresh) == without_paths(summary)


def test_cli_smoke_prints_table_verdict_and_final_line(demo):
    """The CLI on the fixture's directory: everything cached is reused (base, runs), the evals run
    again and give the same summary."""
    out, summary = demo
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "COLUMNS": "200"}
    result = subprocess.run([sys.executable, "-m", "siri", "demo", "--smoke", "--quiet", "--seed", str(SEED),
                             "--out", str(out)], env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    for name in CHECKPOINTS:
        assert name in result.stdout
    assert "verdict" in result.stdout and "Pareto front" in result.stdout
    assert "One seed illustrates the pipeline" in result.stdout and "another processor" in result.stdout
    assert "every arm at SIRI" in result.stdout
    assert "demo done" in result.stdout and str(out / "summary.json") in result.stdout.replace("\n", "")
    assert json.loads((out / "summary.json").read_text()) == summary


def test_siri_eval_defaults_to_the_prompt_format_the_model_was_trained_with(demo, tmp_path, capsys):
    """The demo's base and its RL checkpoints carry their prompt format; `siri eval` uses it by
    default (reproducing the demo's own eval of the base exactly), an explicit --instruction
    overrides it, and the report records which was used."""
    from siri.cli import main
    from siri.data import DEEPSCALER_INSTRUCTION
    from siri.data import saved_prompt_format

    out, summary = demo
    base = out / "base"
    assert saved_prompt_format(base).instruction == INSTRUCTION
    checkpoint = Path(summary["per_seed"][str(SEED)]["siri_low"]["checkpoint"])
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
                                            "system_prompt": None, "chat_template_kwargs": None,
                                            "source": str(base / "siri_prompt.json")}
    assert reports["deepscaler"]["prompt"]["instruction"] == DEEPSCALER_INSTRUCTION
    assert reports["deepscaler"]["prompt"]["source"].startswith("command line")
    default_result = reports["default"]["benchmarks"]["eval"]
    assert default_result["accuracy"] == summary["per_seed"][str(SEED)]["base"]["accuracy"]
    assert default_result["mean_tokens"] == summary["per_seed"][str(SEED)]["base"]["mean_tokens"]


def test_summary_holds_gates_mechanism_frontier_and_predictions(demo):
    out, summary = demo
    assert [g["name"] for g in summary["gates"]["gates"]] == ["truncation", "confirmations_harmless",
                                                              "correction_needed"]
    assert summary["gates"]["gates"][2]["passed"] is None      # the smoke's lists are too short to slip
    for points in summary["trajectory"]["arms"]["siri"].values():
        for point in points:
            assert {"R", "C", "U", "long_hard"} <= set(point) and 0 <= point["R"] <= 1
            assert {"R", "C", "U", "slip_rate", "confirmations"} <= set(point["tiers"]["hard"])
    assert summary["base_points"][str(SEED)]["R"] > 0               # the base spends tokens on confirmations
    assert summary["frontier"]["cycles"] == [1, 2, 3] and len(summary["frontier"]["siri"][str(SEED)]) == 3
    predictions = summary["predictions"]
    assert len(predictions["predictions"]) == 4 and len(predictions["refutations"]) == 4
    assert len(predictions["lines"]) == 9


def test_a_base_that_fails_a_gate_stops_the_demo_before_rl(demo, tmp_path):
    """The smoke's base cuts a quarter of its hard answers at its L_max; with the gates enforced
    (as in `siri demo`) the run stops with the failing gate's name and trains nothing."""
    out, _ = demo
    settings = replace(DemoSettings.smoke(), enforce_gates=True)
    shutil.copytree(out / "base", tmp_path / "base")
    with pytest.raises(BaseModelGateError, match="truncation"):
        run_demo(tmp_path, seed=SEED, config=SMOKE_CONFIG, settings=settings, progress=False)
    assert not (tmp_path / "runs").exists()


def test_verify_demo_reevaluates_every_checkpoint_with_hf_generate(demo, tmp_path):
    """scripts/verify_demo.py on the smoke run: every compared checkpoint re-evaluated by plain HF
    generate, both numbers and the agreement written to --json (exit 0 exactly when all agree)."""
    out, summary = demo
    report = tmp_path / "verify.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, str(Path(__file__).resolve().parents[1] / "scripts" / "verify_demo.py"),
                             str(out), "--json", str(report)], capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode in (0, 1), result.stderr[-2000:]
    verified = json.loads(report.read_text())
    assert list(verified["seeds"]) == [str(SEED)]
    checked = verified["seeds"][str(SEED)]
    assert list(checked["checkpoints"]) == summary["checkpoints"]
    for name, entry in checked["checkpoints"].items():
        assert entry["siri"]["accuracy"] == summary["per_seed"][str(SEED)][name]["accuracy"]
        assert 0 <= entry["hf"]["accuracy"] <= 1 and entry["hf"]["mean_tokens"] > 0
        assert set(entry["hf"]["tiers"]) == set(TIERS)
    assert verified["agree"] == checked["agree"] == all(e["agrees"] for e in checked["checkpoints"].values())
    assert (result.returncode == 0) == verified["agree"]


def test_the_correction_gate_forces_slipped_prefixes_on_a_real_model(demo):
    """Gate 3 end to end on the smoke base (its own lists are too short to slip, so the smoke
    run reports it unmeasured): slipped first walks are forced, once followed by the correction
    and once by \\boxed{, and the model's completions are scored."""
    import random

    from siri.demo.gates import correction_gate
    from siri.demo.run import format_prompt
    from siri.demo.task import LETTERS, SLIP_FREE_ITEMS, Problem

    out, _ = demo
    model = transformers.AutoModelForCausalLM.from_pretrained(out / "base").eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(out / "base")
    rng = random.Random(0)
    problems = [Problem(tuple(rng.sample(LETTERS, SLIP_FREE_ITEMS + 2)), "hard") for _ in range(3)]
    problems.append(Problem(tuple("abc"), "easy"))                  # too short to slip: left out
    ids = [tokenizer(format_prompt(tokenizer, p), add_special_tokens=False)["input_ids"] for p in problems]
    gate = correction_gate(model, tokenizer, problems, ids, samples=2, max_tokens=24, seed=0)
    assert gate.name == "correction_needed" and gate.passed in (True, False)
    assert gate.detail["prompts"] == 3 and gate.detail["samples_per_prompt"] == 2
    with_correction, without = gate.detail["with_correction"], gate.detail["without_correction"]
    assert 0 <= with_correction <= 1 and 0 <= without <= 1 and gate.value == with_correction - without
    assert gate.passed == (with_correction >= 0.8 and without <= 0.2) and "x 2)" in gate.observed
