"""The README's demo figures (scripts/readme_figures.py: demo-study-table, demo-per-seed,
demo-verdict, demo-trajectories, demo-timing, demo-gates, demo-mechanism, demo-frontier,
demo-predictions) rendered from a summary that summarize() builds
out of synthetic eval results: every number in the text is the summary's, and a missing
committed summary renders a note instead of failing."""
import json
import random
import re
import statistics
import sys
from pathlib import Path

import pytest

from siri.algo.schedule import make_schedule
from siri.demo.arms import checkpoint_title
from siri.demo.gates import Gate, gate_report
from siri.demo.report import summarize
from siri.demo.trajectory import MECHANISM_COLUMNS, trajectory_summary
from siri.demo.run import DemoSettings
from siri.eval import EvalSettings

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
import readme_figures  # noqa: E402

TIERS = ("easy", "medium", "hard")
GATES = [Gate("truncation", True, 0.004, "<= 2% in every tier", "sampled", {}, "cut hard 0.4%"),
         Gate("correction_needed", False, 0.5, "with >= 80%", "forced prefixes", {}, "with 71.0%, without 21.0%")]
PROMPTS = 12   # four per tier, tiers in turn
N, L_MAX, L_MIN, PERIOD, CYCLES = 4, 103, 39, 30, 3


def eval_result(rng: random.Random, level: float, tokens: float) -> dict:
    """An eval result as siri.demo.run.evaluate_checkpoint returns it (per-prompt rows and tiers)."""
    rows = [{"index": i, "accuracy": rng.choice([0.0, 0.25, 0.5, 0.75, 1.0]) if rng.random() > level else 1.0,
             "mean_tokens": rng.uniform(0.5, 1.5) * tokens} for i in range(PROMPTS)]
    tiers = {t: [r for r in rows if TIERS[r["index"] % 3] == t] for t in TIERS}
    rates = lambda: {"R": rng.random(), "C": rng.random(), "U": rng.random() / 10, "slip_rate": rng.random(),  # noqa: E731
                     "confirmations": 3 * rng.random()}
    return {"accuracy": statistics.fmean(r["accuracy"] for r in rows),
            "mean_tokens": statistics.fmean(r["mean_tokens"] for r in rows), "truncation_rate": 0.0,
            "num_prompts": PROMPTS, "num_samples": PROMPTS * N, "per_prompt": rows, "mechanism": rates(),
            "long_hard": {"accuracy": rng.random(), "mean_tokens": tokens, "num_prompts": 2},
            "tiers": {t: {"accuracy": statistics.fmean(r["accuracy"] for r in rs),
                          "mean_tokens": statistics.fmean(r["mean_tokens"] for r in rs), "num_prompts": len(rs),
                          **rates(), "per_prompt": rs} for t, rs in tiers.items()}}


def synthetic_summary(seeds: list[int], arms=("siri", "baseline", "compress_only")) -> tuple[dict, dict]:
    """(summary, the compared checkpoints' eval results ``{name/seed: result}``) as run_demo builds
    them, from random eval results at SIRI's peak and trough steps."""
    rng = random.Random(len(seeds))
    settings = DemoSettings(arms=tuple(arms), seeds=len(seeds), tiers={t: (1, 2) for t in TIERS})
    schedule = make_schedule("cosine", l_max=L_MAX, l_min=L_MIN, period=PERIOD)
    num_steps = CYCLES * PERIOD + 1
    steps = sorted(t + 1 for t in set(schedule.peaks(num_steps)) | set(schedule.troughs(num_steps)))
    at_steps = {(arm, n, s): eval_result(rng, 0.3 + n / 200, 100 - n / 2) for s in seeds for n in steps for arm in arms}
    named_steps = {"siri_low": ("siri", steps[-2]), "siri_high": ("siri", steps[-1]),
                   **{arm: (arm, steps[-1]) for arm in arms if arm != "siri"}}
    results = {f"base/seed{s}": eval_result(rng, 0.2, 120.0) for s in seeds}
    results.update({f"{name}/seed{s}": at_steps[(arm, n, s)] for s in seeds for name, (arm, n) in named_steps.items()})
    checkpoints = {s: {name: f"/runs/seed{s}/{name}" for name in ("base", *named_steps)} for s in seeds}
    summary = summarize(results, checkpoints, seeds, runs={f"{arm}/seed{s}": f"/runs/seed{s}/{arm}" for s in seeds
                                                            for arm in arms},
                        settings=settings, eval_file="/data/eval.jsonl",
                        eval_settings=EvalSettings(n=N, temperature=0.6, max_tokens=3 * L_MAX, seed=seeds[0]),
                        prompt_tiers={i: TIERS[i % 3] for i in range(PROMPTS)}, l_max=L_MAX, l_min=L_MIN,
                        concise={t: [10, 20] for t in TIERS},
                        base_lengths={"hard": {"all": {"p99": 90}, "correct": {"count": 0}}},
                        trajectory=trajectory_summary(at_steps, schedule, num_steps), gates=gate_report(GATES))
    return json.loads(json.dumps(summary)), results   # as read back from summary.json


def table_rows(text: str) -> dict[str, list[str]]:
    """The markdown table's rows: first cell -> the other cells."""
    rows = [line.strip("|").split("|") for line in text.splitlines() if line.startswith("| ")]
    return {cells[0].strip(): [c.strip() for c in cells[1:]] for cells in rows}


@pytest.mark.parametrize("seeds", [[0, 1, 2], [7]])
def test_the_study_table_shows_the_summary_numbers(seeds):
    summary, results = synthetic_summary(seeds)
    text = readme_figures.demo_study_table(summary)
    rows = table_rows(text)
    assert rows["checkpoint"] == ["accuracy", "tokens", *TIERS]
    assert list(rows)[1:] == ["---"] + [checkpoint_title(name) for name in summary["checkpoints"]]
    for name in summary["checkpoints"]:
        accuracy = [results[f"{name}/seed{s}"]["accuracy"] for s in seeds]
        tokens = [results[f"{name}/seed{s}"]["mean_tokens"] for s in seeds]
        if len(seeds) > 1:
            acc_spread, tok_spread = statistics.stdev(accuracy), statistics.stdev(tokens)
        else:   # one seed: the standard error over the prompts
            rows_ = results[f"{name}/seed{seeds[0]}"]["per_prompt"]
            acc_spread = statistics.stdev(r["accuracy"] for r in rows_) / PROMPTS ** 0.5
            tok_spread = statistics.stdev(r["mean_tokens"] for r in rows_) / PROMPTS ** 0.5
        cells = rows[checkpoint_title(name)]
        assert cells[0] == f"{100 * statistics.fmean(accuracy):.1f}% ± {100 * acc_spread:.1f}"
        assert cells[1] == f"{statistics.fmean(tokens):.1f} ± {tok_spread:.1f}"
        for tier, cell in zip(TIERS, cells[2:]):
            tier_acc = statistics.fmean(results[f"{name}/seed{s}"]["tiers"][tier]["accuracy"] for s in seeds)
            tier_tok = statistics.fmean(results[f"{name}/seed{s}"]["tiers"][tier]["mean_tokens"] for s in seeds)
            assert cell == f"{100 * tier_acc:.0f}% / {tier_tok:.0f}"
    head = text.strip().splitlines()[0]
    assert f"{PROMPTS} problems (4 easy, 4 medium, 4 hard)" in head
    assert f"pass@1 over {N} samples at T=0.6, max {3 * L_MAX} tokens" in head
    assert f"L_max = {L_MAX}, L_min = {L_MIN}" in head
    assert ("std over 3 seeds (0, 1, 2)" in head) if len(seeds) > 1 else ("standard error over prompts" in head)


def test_the_per_seed_line_lists_each_seed_in_order():
    summary, results = synthetic_summary([3, 4, 5])
    text = readme_figures.demo_per_seed(summary)
    assert text.startswith("\n\nPer seed (accuracy %, seeds 3 / 4 / 5): ")
    for name in summary["checkpoints"]:
        values = " / ".join(f"{100 * results[f'{name}/seed{s}']['accuracy']:.1f}" for s in (3, 4, 5))
        assert f"{checkpoint_title(name)} {values}" in text
    assert "seed 7)" in readme_figures.demo_per_seed(synthetic_summary([7])[0])


def test_the_verdict_figure_is_the_printed_lines():
    summary, _ = synthetic_summary([0, 1, 2])
    text = readme_figures.demo_verdict(summary)
    assert text.strip().splitlines() == [f"- {line}" for line in summary["verdict"]["lines"]]
    assert any(line.startswith("Pareto front:") for line in summary["verdict"]["lines"])


def test_the_trajectory_table_has_every_arm_at_every_peak_and_trough():
    seeds = [0, 1, 2]
    summary, _ = synthetic_summary(seeds)
    rows = table_rows(readme_figures.demo_trajectories(summary))
    labels = ["1 peak", "16 trough", "31 peak", "46 trough", "61 peak", "76 trough", "91 peak"]
    assert rows["arm"] == labels
    for arm, by_seed in summary["trajectory"]["arms"].items():
        cells = rows[checkpoint_title(arm)]
        for i, (label, cell) in enumerate(zip(labels, cells)):
            points = [by_seed[str(s)][i] for s in seeds]
            assert {p["label"] for p in points} == {label}
            accuracy = [p["accuracy"] for p in points]
            tokens = statistics.fmean(p["mean_tokens"] for p in points)
            assert cell == f"{100 * statistics.fmean(accuracy):.0f}% ± {100 * statistics.stdev(accuracy):.0f} / {tokens:.0f}"
    one = table_rows(readme_figures.demo_trajectories(synthetic_summary([7])[0]))
    assert "±" not in "".join(one[checkpoint_title("siri")])


def test_the_timing_figure_shows_the_wall_times():
    timing = {"seconds": 653.4, "run_seconds": {"siri/seed0": 70.2, "baseline/seed0": 95.4},
              "eval_seconds": {"base/seed0": 11.3, "siri/step_16/seed0": 2.0, "siri/step_91/seed0": 4.6},
              "jobs": {"run": 2, "eval": 2}, "machine": {"cores": 2, "cpu": "Some CPU", "gpu": None}}
    text = readme_figures.demo_timing(timing)
    assert text == ("\n\nThe run took **10 min 53 s** (2 cores, Some CPU): 2 RL runs of 70-95 s each, 3 evaluations "
                    "of 2-11 s each, 2 RL runs and 2 evaluations at a time.\n\n")
    older = {k: v for k, v in timing.items() if k not in ("jobs", "machine")}
    assert readme_figures.demo_timing(older) == ("\n\nThe run took **10 min 53 s**: 2 RL runs of 70-95 s each, "
                                                 "3 evaluations of 2-11 s each.\n\n")


def test_a_missing_committed_summary_renders_a_note_and_the_check_passes(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(readme_figures, "DEMO_RESULTS", tmp_path / "docs" / "demo")
    names = ["demo-study-table", "demo-per-seed", "demo-verdict", "demo-trajectories", "demo-timing", "demo-gates",
             "demo-mechanism", "demo-frontier", "demo-predictions"]
    for name in names:
        note = readme_figures.FIGURES[name]()
        assert len(note.strip().splitlines()) == 1 and "is missing" in note and readme_figures.DEMO_COMMAND in note
    note = readme_figures.FIGURES["demo-verify"]()
    assert "verify.json is missing" in note and "verify_demo.py siri-study --all-seeds" in note
    page = tmp_path / "page.md"
    page.write_text("".join(f"<!-- figures:{name} --><!-- /figures:{name} -->\n" for name in names))
    monkeypatch.setattr(readme_figures, "REPO", tmp_path)
    monkeypatch.setattr(readme_figures, "FILES", [page])
    monkeypatch.setattr(readme_figures, "FIGURES", {name: readme_figures.FIGURES[name] for name in names})
    assert readme_figures.main([]) == 0 and readme_figures.main(["--check"]) == 0
    assert page.read_text().count("is missing") == len(names)
    # committing the study's files changes the figures; the check names them until they are rewritten
    summary, _ = synthetic_summary([0, 1, 2])
    (tmp_path / "docs" / "demo").mkdir(parents=True)
    (tmp_path / "docs" / "demo" / "summary.json").write_text(json.dumps(summary))
    (tmp_path / "docs" / "demo" / "timing.json").write_text(json.dumps(
        {"seconds": 60.0, "run_seconds": {"siri/seed0": 30.0}, "eval_seconds": {"base/seed0": 5.0}}))
    assert readme_figures.main(["--check"]) == 1
    assert "demo-study-table" in capsys.readouterr().out
    assert readme_figures.main([]) == 0 and readme_figures.main(["--check"]) == 0
    text = page.read_text()
    assert "is missing" not in text and re.search(r"\| SIRI-low \(last trough\) \| [\d.]+% ± [\d.]+ \|", text)
    assert summary["verdict"]["lines"][0] in text and "The run took **1 min 0 s**" in text


@pytest.mark.parametrize("seeds", [[0], [0, 1, 2]])
def test_the_gates_mechanism_frontier_and_predictions_figures_show_the_summary(seeds):
    summary, _ = synthetic_summary(seeds)
    gates = readme_figures.demo_gates(summary)
    assert f"L_max = {L_MAX} (the base's sampled hard-tier p99 is 90 tokens), L_min = {L_MIN}" in gates
    assert "- gate truncation: passed: cut hard 0.4%" in gates and "correction_needed: FAILED: with 71.0%" in gates
    mechanism = table_rows(readme_figures.demo_mechanism(summary))
    for arm in summary["arms"]:
        points = summary["trajectory"]["arms"][arm]
        last = [statistics.fmean(read(points[str(s)][-1]) for s in seeds)
                for read in (MECHANISM_COLUMNS[c] for c in ("R", "hard accuracy", "hard slip rate", "hard C",
                                                            "long hard accuracy"))]
        assert mechanism[checkpoint_title(arm)][-1] == " / ".join(f"{100 * v:.0f}" for v in last)
    frontier = table_rows(readme_figures.demo_frontier(summary))
    areas = [summary["frontier"]["arms"]["siri"][str(s)][2] for s in seeds]
    spread = f" ± {statistics.stdev(areas):.3f}" if len(seeds) > 1 else ""
    assert frontier["SIRI"][-1] == f"{statistics.fmean(areas):.3f}{spread}"
    predictions = readme_figures.demo_predictions(summary)
    assert predictions.strip().splitlines() == [f"- {line}" for line in summary["predictions"]["lines"]]


def test_the_verify_figure_counts_agreements_and_names_the_largest_differences():
    entry = lambda siri_acc, hf_acc, siri_tok, hf_tok, ok: {  # noqa: E731
        "siri": {"accuracy": siri_acc, "mean_tokens": siri_tok}, "hf": {"accuracy": hf_acc, "mean_tokens": hf_tok},
        "agrees": ok}
    verify = {"samples": 4, "hf_seed": 1, "tolerance": {"accuracy_points": 4, "mean_tokens_fraction": 0.1},
              "agree": False, "seeds": {
                  "0": {"agree": True, "checkpoints": {"base": entry(0.9, 0.92, 50.0, 51.0, True)}},
                  "1": {"agree": False, "checkpoints": {"base": entry(0.9, 0.85, 50.0, 40.0, False),
                                                        "siri_low": entry(0.5, 0.5, 20.0, 20.0, True)}}}}
    text = readme_figures.demo_verify(verify)
    assert "agrees with siri's eval on **2 of 3** checkpoints (2 seeds;" in text
    assert "accuracy -5.0 points (base, seed 1), mean tokens -20.0% (base, seed 1)" in text
