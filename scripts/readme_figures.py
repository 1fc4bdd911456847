"""Regenerate the figures that README.md and docs/reproduce.md quote from siri's own output.

A figure is the text between ``<!-- figures:NAME -->`` and ``<!-- /figures:NAME -->`` (a block
of lines or a few words inside a sentence). Each NAME in :data:`FIGURES` is produced from the
current code: the memory plan that ``siri train CONFIG --dry-run`` prints, and numbers from the
same plan (:func:`siri.train.memory_plan.plan_memory`); the demo study's table, per-seed line,
verdict, trajectories and wall times from its committed ``docs/demo/summary.json`` and
``timing.json`` (a one-line note while they are missing). Nothing is downloaded: the paper's
model shapes are built into siri.

    python scripts/readme_figures.py              # rewrite the figures that changed
    python scripts/readme_figures.py --check      # exit 1, with a diff, when a figure differs
    python scripts/readme_figures.py --list       # the figure names and where they appear
    python scripts/readme_figures.py --only NAME  # just these (repeat --only)

A marker whose NAME is not in :data:`FIGURES`, or a figure that appears in no file, is an error.
"""
from __future__ import annotations

import argparse
import difflib
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
#: The files whose figures this script keeps current.
FILES = [REPO / "README.md", REPO / "docs" / "reproduce.md"]
MARKER = re.compile(r"<!-- figures:([\w.-]+) -->(.*?)<!-- /figures:\1 -->", re.DOTALL)
OPENING = re.compile(r"<!-- (/?)figures:([\w.-]+) -->")
#: The paper's recipe, and the DAPO baseline it is compared with.
SIRI_1_5B = "configs/siri_r1_distill_qwen_1.5b.yaml"
DAPO_16K = "configs/dapo_fixed_16k.yaml"
#: The dry runs' console width (rich wraps at it), fixed so the output is the same in any terminal.
COLUMNS = "200"


def dry_run_memory_plan(config: str, *args: str) -> str:
    """The memory-plan part of ``siri train CONFIG --dry-run ARGS`` (its table, verdict and
    advice), as a console block that starts with the command."""
    env = {**os.environ, "COLUMNS": COLUMNS, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "siri", "train", config, "--dry-run", *args]
    out = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    if out.returncode != 0:
        sys.exit(f"readme_figures.py: `siri train {config} --dry-run {' '.join(args)}` failed:\n{out.stderr[-2000:]}")
    lines = [line.rstrip() for line in out.stdout.splitlines()]
    start = next((i for i, line in enumerate(lines) if line.strip().startswith("memory plan per device")), None)
    end = next((i for i, line in enumerate(lines) if line.startswith("dry run: config is valid")), len(lines))
    if start is None:
        sys.exit(f"readme_figures.py: no memory plan in the output of the dry run of {config}")
    command = " ".join(["siri", "train", config, "--dry-run", *args])
    body = "\n".join([f"$ {command}", "...  (the resolved config and the schedule's caps come first)",
                      *lines[start:end]])
    return f"\n```console\n{body}\n```\n"


def _plan(config: str, overrides: list[str], gpus: int = 8, gib: float = 80.0):
    from siri.config import load_config
    from siri.train.memory_plan import plan_memory

    return plan_memory(load_config(REPO / config, overrides), world_size=gpus, device_memory_gb=gib)


#: Rows of the 8 x 80 GB table: (config, overrides, what the row is).
LAYOUTS_8X80 = [
    (SIRI_1_5B, [], "SIRI, as shipped (`ddp`, checkpointing on)"),
    (SIRI_1_5B, ["trainer.parallelism=fsdp"], "SIRI, `trainer.parallelism=fsdp`"),
    (SIRI_1_5B, ["rollout.keep_kv_cache=true"], "SIRI, `rollout.keep_kv_cache=true`"),
    (SIRI_1_5B, ["model.gradient_checkpointing=false"], "SIRI, `model.gradient_checkpointing=false`"),
    (DAPO_16K, [], "DAPO-16K, as shipped"),
]


def memory_table_8x80() -> str:
    """A markdown table of the memory plan per GPU on 8 x 80 GB for the recipe's layouts."""
    from siri.train.memory_plan import GiB

    rows = ["| config | persistent | update peak | rollout peak | KV pool | KV tokens per GPU | of the worst case "
            "| verdict |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for config, overrides, label in LAYOUTS_8X80:
        p = _plan(config, overrides)
        verdict = "fits" if p.fits else "does not fit"
        rows.append(f"| {label} | {p.persistent_bytes / GiB:.1f} GiB | {p.training_peak / GiB:.1f} GiB "
                    f"| {p.rollout_peak / GiB:.1f} GiB | {p.kv_bytes / GiB:.1f} GiB | {p.kv_tokens / 1e6:.2f}M "
                    f"| {100 * p.kv_tokens / p.kv_tokens_wanted:.0f}% | {verdict} (peak {p.peak / GiB:.1f} of "
                    f"{p.usable_bytes / GiB:.0f} GiB usable) |")
    return "\n\n" + "\n".join(rows) + "\n\n"  # blank lines: a table is a block of its own in markdown


def kept_kv_pool_1_5b() -> str:
    """The 1.5B recipe's KV pool on one 80 GB GPU with and without ``rollout.keep_kv_cache``."""
    from siri.train.memory_plan import GiB

    kept, released = _plan(SIRI_1_5B, ["rollout.keep_kv_cache=true"]), _plan(SIRI_1_5B, [])
    return f"{kept.kv_bytes / GiB:.1f} GiB pool ({released.kv_bytes / GiB:.1f} GiB with the pool released each step)"


def cuda_graphs_1_5b() -> str:
    """The CUDA graphs' memory in the 1.5B recipe's plan."""
    from siri.train.memory_plan import GiB

    return f"{_plan(SIRI_1_5B, []).graph_bytes / GiB:.2f} GiB"


#: ``benchmarks/bench_vs_trl.py --out DIR`` results, one directory per measured setup.
VS_TRL_RESULTS = REPO / "docs" / "bench"


def vs_trl_table() -> str:
    """A markdown table of every ``docs/bench/*/bench_vs_trl.json``: seconds per step and per
    generated token (median, and the range over the timed steps) of siri and TRL, the split into
    generation and update, peak memory, and the ratios TRL / siri."""
    import json

    rows = ["| model | dtype | prompts x G, cap | steps timed | tool | s/step (range) | ms/token (range) | "
            "generation s | update s | peak MiB |", "|---|---|---|---|---|---|---|---|---|---|"]
    ratios = []
    for path in sorted(VS_TRL_RESULTS.glob("*/bench_vs_trl.json")):
        r = json.loads(path.read_text())
        setup = f"{r['prompts_per_step']} x {r['group_size']}, {r['cap']}"
        for tool in ("siri", "trl"):
            t = r[tool]
            lo, hi = t["step_s_range"]
            tlo, thi = t["s_per_token_range"]
            rows.append(f"| {r['model']} | {r['dtype']} | {setup} | {r['repeats']} | {tool} | {t['step_s']:.2f} "
                        f"({lo:.2f}-{hi:.2f}) | {1e3 * t['s_per_token']:.2f} ({1e3 * tlo:.2f}-{1e3 * thi:.2f}) | "
                        f"{t['generation_s']:.2f} | {t['update_s']:.2f} | {t['peak_extra_bytes'] / 2**20:.0f} |")
        q = r["ratios_trl_over_siri"]
        ratios.append(f"- {r['model']}, {r['dtype']}: TRL / siri per generated token "
                      f"**{q['s_per_token']:.2f}x**, per step {q['step_s']:.2f}x, generation "
                      f"{q.get('generation_s', float('nan')):.2f}x, update {q.get('update_s', float('nan')):.2f}x "
                      f"({r['threads']} threads, torch {r['torch']}; `{path.relative_to(REPO)}`)")
    return "\n" + "\n".join(rows) + "\n\n" + "\n".join(ratios) + "\n"


#: The committed study behind the README's demo figures: ``summary.json`` and ``timing.json`` of
#: :data:`DEMO_COMMAND`'s output directory, copied here.
DEMO_RESULTS = REPO / "docs" / "demo"
DEMO_COMMAND = "siri demo --study --out siri-study"


def _demo_file(name: str) -> dict | None:
    import json

    path = DEMO_RESULTS / name
    return json.loads(path.read_text()) if path.exists() else None


def _demo_missing(name: str) -> str:
    return (f"\n\n*The study's committed {name} is missing: run `{DEMO_COMMAND}` and copy its `{name}` to "
            f"`docs/demo/`.*\n\n")


def demo_study_table(summary: dict | None = None) -> str:
    """The study's table from its ``summary.json`` (``summary``, or ``docs/demo/summary.json``):
    a line saying the eval protocol and the spread, then one row per compared checkpoint:
    accuracy and tokens as mean ± spread (std over seeds; with one seed the standard error over
    prompts), and per tier mean accuracy / mean tokens."""
    from siri.demo.arms import checkpoint_title
    from siri.demo.verdict import format_mean_spread

    summary = summary if summary is not None else _demo_file("summary.json")
    if summary is None:
        return _demo_missing("summary.json")
    s, seeds, tiers = summary["eval_settings"], summary["seeds"], list(summary["tiers"])
    first = summary["per_seed"][str(seeds[0])][summary["checkpoints"][0]]
    per_tier = ", ".join(f"{first['tiers'][t]['num_prompts']} {t}" for t in tiers if t in first["tiers"])
    spread = (f"mean ± std over {len(seeds)} seeds ({', '.join(map(str, seeds))})" if len(seeds) > 1
              else f"one seed ({seeds[0]}): mean ± standard error over prompts")
    rows = [f"Held-out eval: {first['num_prompts']} problems ({per_tier}), pass@1 over {s['n']} samples at "
            f"T={s['temperature']:g}, max {s['max_tokens']} tokens; L_max = {summary['l_max']}, "
            f"L_min = {summary['l_min']}; {spread}; per tier: mean accuracy / mean tokens.", "",
            "| checkpoint | accuracy | tokens | " + " | ".join(tiers) + " |",
            "| --- | ---: | ---: |" + " ---: |" * len(tiers)]
    for name in summary["checkpoints"]:
        r = summary["results"][name]
        cells = [f"{100 * r['tiers'][t]['accuracy']['mean']:.0f}% / {r['tiers'][t]['mean_tokens']['mean']:.0f}"
                 if t in r["tiers"] else "" for t in tiers]
        rows.append(f"| {checkpoint_title(name)} | {format_mean_spread(r['accuracy'])} | "
                    f"{format_mean_spread(r['mean_tokens'], percent=False)} | " + " | ".join(cells) + " |")
    return "\n\n" + "\n".join(rows) + "\n\n"


def demo_per_seed(summary: dict | None = None) -> str:
    """One line: each compared checkpoint's accuracy (%) per seed, in the summary's seed order."""
    from siri.demo.arms import checkpoint_title

    summary = summary if summary is not None else _demo_file("summary.json")
    if summary is None:
        return _demo_missing("summary.json")
    seeds = summary["seeds"]
    parts = [f"{checkpoint_title(name)} " + " / ".join(f"{100 * v:.1f}" for v in summary["results"][name]["accuracy"]
                                                       ["values"]) for name in summary["checkpoints"]]
    return (f"\n\nPer seed (accuracy %, seed{'s' if len(seeds) > 1 else ''} {' / '.join(map(str, seeds))}): "
            + "; ".join(parts) + ".\n\n")


def demo_verdict(summary: dict | None = None) -> str:
    """The verdict's lines as ``siri demo`` prints them, one list item each."""
    return _summary_lines(summary, "verdict")


def _summary_lines(summary: dict | None, key: str) -> str:
    """``summary[key]["lines"]`` (``summary`` or the committed one) as a list, one item per line."""
    summary = summary if summary is not None else _demo_file("summary.json")
    if summary is None:
        return _demo_missing("summary.json")
    return "\n\n" + "\n".join(f"- {line}" for line in summary[key]["lines"]) + "\n\n"


def demo_trajectories(summary: dict | None = None) -> str:
    """Every arm after N steps, for each of SIRI's peaks and troughs: accuracy (± std over
    seeds when there are several) / tokens, mean over seeds; the same eval as the study table."""
    from siri.demo.arms import checkpoint_title
    from siri.demo.trajectory import mean_trajectories

    summary = summary if summary is not None else _demo_file("summary.json")
    if summary is None:
        return _demo_missing("summary.json")
    paths = {arm: points for arm, points in mean_trajectories(summary).items() if points}
    if not paths:
        return "\n\n*The summary has no trajectory.*\n\n"
    labels = [p["label"] for p in next(iter(paths.values()))]
    seeds = len(summary["seeds"])
    rows = [f"After N steps (checkpoint step_N) at each of SIRI's peaks and troughs: accuracy"
            f"{' ± std over ' + str(seeds) + ' seeds' if seeds > 1 else ''} / mean tokens"
            f"{', mean over seeds' if seeds > 1 else ''}.", "",
            "| arm | " + " | ".join(labels) + " |", "| --- |" + " ---: |" * len(labels)]
    for arm, points in paths.items():
        cells = {p["label"]: f"{100 * p['accuracy']:.0f}%"
                 + (f" ± {100 * p['accuracy_err']:.0f}" if p.get("accuracy_err") is not None else "")
                 + f" / {p['mean_tokens']:.0f}" for p in points}
        rows.append(f"| {checkpoint_title(arm)} | " + " | ".join(cells.get(label, "") for label in labels) + " |")
    return "\n\n" + "\n".join(rows) + "\n\n"


def demo_gates(summary: dict | None = None) -> str:
    """The caps and the base model's gates as the study measured them, one list item each."""
    from siri.demo.gates import Gate

    summary = summary if summary is not None else _demo_file("summary.json")
    if summary is None:
        return _demo_missing("summary.json")
    hard = summary["caps"]["base_lengths"]["hard"]["all"]
    concise = summary["caps"]["concise_tokens"]["hard"]
    lines = [f"- caps: L_max = {summary['l_max']} (the base's sampled hard-tier p99 is {hard['p99']} tokens), "
             f"L_min = {summary['l_min']} (the hard concise median is {concise['median']:g} tokens)"]
    lines += [f"- gate {Gate(**gate).line()}" for gate in (summary.get("gates") or {}).get("gates", [])]
    return "\n\n" + "\n".join(lines) + "\n\n"


def demo_mechanism(summary: dict | None = None) -> str:
    """Every arm at SIRI's peaks and troughs, mean over seeds: R, hard accuracy, hard C and the
    long hard lists' accuracy (%), and the base model's for reference."""
    from siri.demo.arms import checkpoint_title
    from siri.demo.trajectory import MECHANISM_COLUMNS, mean_trajectories

    summary = summary if summary is not None else _demo_file("summary.json")
    if summary is None:
        return _demo_missing("summary.json")
    paths = {arm: points for arm, points in mean_trajectories(summary).items() if points}
    if not paths:
        return "\n\n*The summary has no trajectory.*\n\n"
    columns = ("R", "hard accuracy", "hard slip rate", "hard C", "long hard accuracy")

    def cell(values: dict) -> str:
        return " / ".join("-" if values[c] is None else f"{100 * values[c]:.0f}" for c in columns)

    import statistics

    base_points = list(summary.get("base_points", {}).values())
    base = {c: statistics.fmean(v) if base_points and None not in (v := [MECHANISM_COLUMNS[c](p) for p in base_points])
            else None for c in columns}
    labels = [p["label"] for p in next(iter(paths.values()))]
    rows = [f"R (confirmation tokens / tokens) / hard accuracy / hard P(slip) / hard C = P(correction | slip) / "
            f"accuracy on the "
            f"hard lists longer than L_min, in %, "
            f"{'mean over ' + str(len(summary['seeds'])) + ' seeds' if len(summary['seeds']) > 1 else 'one seed'}; "
            f"the base model: "
            f"{cell(base)}.", "",
            "| arm | " + " | ".join(labels) + " |", "| --- |" + " ---: |" * len(labels)]
    for arm, points in paths.items():
        cells = {p["label"]: cell(p["mechanism"]) for p in points}
        rows.append(f"| {checkpoint_title(arm)} | " + " | ".join(cells.get(label, "") for label in labels) + " |")
    return "\n\n" + "\n".join(rows) + "\n\n"


def demo_frontier(summary: dict | None = None) -> str:
    """Each arm's frontier area per cycle (its trough and closing peak against (L_max, 0)), mean ±
    std over seeds."""
    import statistics

    from siri.demo.arms import checkpoint_title

    summary = summary if summary is not None else _demo_file("summary.json")
    if summary is None:
        return _demo_missing("summary.json")
    frontier = summary["frontier"]
    rows = ["| arm | " + " | ".join(f"cycle {c} (steps {a}, {b})" for c, (a, b) in
                                     zip(frontier["cycles"], frontier["steps"])) + " |",
            "| --- |" + " ---: |" * len(frontier["cycles"])]
    for arm, by_seed in frontier["arms"].items():
        cells = []
        for i in range(len(frontier["cycles"])):
            values = [areas[i] for areas in by_seed.values()]
            cells.append(f"{statistics.fmean(values):.3f}" + (f" ± {statistics.stdev(values):.3f}"
                                                               if len(values) > 1 else ""))
        rows.append(f"| {checkpoint_title(arm)} | " + " | ".join(cells) + " |")
    return "\n\n" + "\n".join(rows) + "\n\n"


def demo_predictions(summary: dict | None = None) -> str:
    """The pre-registered predictions and refutations as the study evaluated them."""
    return _summary_lines(summary, "predictions")


def demo_verify(verify: dict | None = None) -> str:
    """The committed ``docs/demo/verify.json`` (``scripts/verify_demo.py --all-seeds --json``): how
    many checkpoints plain HF ``generate`` agrees on, and the largest differences."""
    verify = verify if verify is not None else _demo_file("verify.json")
    if verify is None:
        return ("\n\n*The committed verify.json is missing: run `python scripts/verify_demo.py siri-study "
                "--all-seeds --json docs/demo/verify.json`.*\n\n")
    entries = [(seed, name, entry) for seed, checked in verify["seeds"].items()
               for name, entry in checked["checkpoints"].items()]
    agree = sum(entry["agrees"] for _, _, entry in entries)
    accuracy = max(entries, key=lambda e: abs(e[2]["hf"]["accuracy"] - e[2]["siri"]["accuracy"]))
    tokens = max(entries, key=lambda e: abs(e[2]["hf"]["mean_tokens"] / e[2]["siri"]["mean_tokens"] - 1))
    tolerance = verify["tolerance"]
    return (f"\n\nPlain Hugging Face `generate` (no siri code on the generation path, {verify['samples']} samples "
            f"per problem) agrees with siri's eval on **{agree} of {len(entries)}** checkpoints "
            f"({len(verify['seeds'])} seeds; agreement: accuracy within {tolerance['accuracy_points']} points and "
            f"mean tokens within {100 * tolerance['mean_tokens_fraction']:.0f}%). Largest differences: accuracy "
            f"{100 * (accuracy[2]['hf']['accuracy'] - accuracy[2]['siri']['accuracy']):+.1f} points ({accuracy[1]}, "
            f"seed {accuracy[0]}), mean tokens "
            f"{100 * (tokens[2]['hf']['mean_tokens'] / tokens[2]['siri']['mean_tokens'] - 1):+.1f}% ({tokens[1]}, "
            f"seed {tokens[0]}).\n\n")


def _duration(seconds: float) -> str:
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest} s" if minutes else f"{rest} s"


def demo_timing(timing: dict | None = None) -> str:
    """The study's wall times from its ``timing.json`` (``timing``, or ``docs/demo/timing.json``):
    the whole run, the range of the RL runs and of the evaluations, and the machine when recorded."""
    timing = timing if timing is not None else _demo_file("timing.json")
    if timing is None:
        return _demo_missing("timing.json")
    runs, evals = list(timing["run_seconds"].values()), list(timing["eval_seconds"].values())
    machine = timing.get("machine") or {}
    where = ", ".join(x for x in (f"{machine['cores']} cores" if machine.get("cores") else "", machine.get("cpu") or "",
                                  f"GPU {machine['gpu']}" if machine.get("gpu") else "") if x)
    jobs = timing.get("jobs") or {}
    side = (f", {jobs['run']} RL runs and {jobs['eval']} evaluations at a time" if jobs.get("run") and jobs.get("eval")
            else "")
    text = f"The run took **{_duration(timing['seconds'])}**" + (f" ({where})" if where else "")
    if runs:
        text += f": {len(runs)} RL runs of {min(runs):.0f}-{max(runs):.0f} s each"
    if evals:
        text += f", {len(evals)} evaluations of {min(evals):.0f}-{max(evals):.0f} s each"
    return "\n\n" + text + side + ".\n\n"


FIGURES: dict[str, Callable[[], str]] = {
    "vs-trl": vs_trl_table,
    "dry-run-1.5b-8gpu": lambda: dry_run_memory_plan(SIRI_1_5B, "--nproc", "8"),
    "memory-8x80": memory_table_8x80,
    "kv-pool-1.5b-kept": kept_kv_pool_1_5b,
    "cuda-graphs-1.5b": cuda_graphs_1_5b,
    "demo-study-table": demo_study_table,
    "demo-per-seed": demo_per_seed,
    "demo-verdict": demo_verdict,
    "demo-trajectories": demo_trajectories,
    "demo-timing": demo_timing,
    "demo-gates": demo_gates,
    "demo-mechanism": demo_mechanism,
    "demo-frontier": demo_frontier,
    "demo-predictions": demo_predictions,
    "demo-verify": demo_verify,
}


def figure_names(text: str, where: str = "text") -> list[str]:
    """The figure names ``text`` marks, in order; ValueError for an unclosed, unopened or
    nested marker (``where`` names the file in the message)."""
    names, open_name = [], None
    for match in OPENING.finditer(text):
        closing, name = match.group(1) == "/", match.group(2)
        if not closing and open_name is None:
            open_name = name
        elif closing and open_name == name:
            names.append(name)
            open_name = None
        else:
            raise ValueError(f"{where}: marker {match.group(0)} at offset {match.start()} does not pair with "
                             f"{'nothing' if open_name is None else f'the open figures:{open_name}'}")
    if open_name is not None:
        raise ValueError(f"{where}: <!-- figures:{open_name} --> is never closed")
    return names


def render(text: str, figures: dict[str, str]) -> str:
    """``text`` with every marked figure replaced by ``figures[name]``."""
    return MARKER.sub(lambda m: f"<!-- figures:{m.group(1)} -->{figures[m.group(1)]}<!-- /figures:{m.group(1)} -->",
                      text)


def current(text: str) -> dict[str, str]:
    """``{name: the text between its markers}`` as ``text`` has it now."""
    return {m.group(1): m.group(2) for m in MARKER.finditer(text)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--check", action="store_true", help="change nothing; exit 1 when a figure differs")
    p.add_argument("--list", action="store_true", help="print each figure's name and the files that hold it")
    p.add_argument("--only", action="append", metavar="NAME", help=f"only these figures: {', '.join(FIGURES)}")
    args = p.parse_args(argv)
    texts = {path: path.read_text() for path in FILES if path.exists()}
    where: dict[str, list[Path]] = {name: [] for name in FIGURES}
    for path, text in texts.items():
        for name in figure_names(text, str(path.relative_to(REPO))):
            if name not in FIGURES:
                p.error(f"{path.relative_to(REPO)} marks a figure named {name!r}; known: {', '.join(FIGURES)}")
            where[name].append(path)
    unused = [name for name, paths in where.items() if not paths]
    if unused:
        p.error(f"no file marks the figures {', '.join(unused)}")
    if args.list:
        for name, paths in where.items():
            print(f"{name}: {', '.join(str(path.relative_to(REPO)) for path in paths)}")
        return 0
    wanted = args.only or list(FIGURES)
    for name in wanted:
        if name not in FIGURES:
            p.error(f"--only {name}: no such figure; known: {', '.join(FIGURES)}")
    stale, made = 0, {}
    for path, text in texts.items():
        have = current(text)
        for name in have:
            if name in wanted and name not in made:
                made[name] = FIGURES[name]()
        figures = {name: made.get(name, have[name]) for name in have}
        new = render(text, figures)
        if new == text:
            continue
        changed = [name for name in have if figures[name] != have[name]]
        stale += len(changed)
        rel = str(path.relative_to(REPO))
        if args.check:
            sys.stdout.writelines(difflib.unified_diff(text.splitlines(True), new.splitlines(True), rel, rel + " (now)"))
            print(f"{rel}: figures that differ from what the code prints: {', '.join(changed)}")
        else:
            path.write_text(new)
            print(f"{rel}: rewrote {', '.join(changed)}")
    if args.check and stale:
        print("run `python scripts/readme_figures.py` to rewrite them", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
