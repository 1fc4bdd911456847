"""The demo's summary (``summary.json``), its console report and its plots.

``summary.json`` is a pure function of the seed, the settings and the machine's arithmetic:
no wall times (those go to ``timing.json``), so the same seed on the same machine writes the
same file. Its keys: ``seeds``, ``arms``, ``checkpoints`` (the compared ones, in table order),
``l_max`` / ``l_min``, ``tiers``, ``caps`` (the concise traces' and the base's sampled lengths),
``gates`` (``siri.demo.gates.gate_report``), ``results`` (``siri.demo.verdict.aggregate``: mean
and spread over seeds per checkpoint and tier), ``verdict`` (``siri.demo.verdict.verdict``, its
``lines`` as printed), ``variation`` (lines: what the number of seeds supports), ``trajectory``
(``{"steps": [N, ...], "peaks": [N, ...], "troughs": [N, ...], "arms": {arm: {seed: [point,
...]}}}``: every arm after N steps for each of SIRI's peaks and troughs, evaluated like the
compared checkpoints; a point is ``{"step", "label", "series", "accuracy", "mean_tokens",
"truncation_rate", "R", "C", "U", "slip_rate", "confirmations", "tiers": {tier: {"accuracy",
"mean_tokens", "R", "C", "U", "slip_rate", "confirmations"}}, "long_hard": {"accuracy",
"mean_tokens", "num_prompts"}}`` with the label and cycle of that step in SIRI's schedule and
the mechanism's rates of ``siri.demo.mechanism``), ``base_points`` (the base's point per seed),
``frontier`` (``frontier_summary``), ``predictions``
(``siri.demo.predictions.evaluate_predictions``), ``per_seed`` (each seed's numbers and
checkpoint paths), ``eval_file``, ``eval_settings``, ``runs``.
"""
from __future__ import annotations

import statistics
from dataclasses import asdict
from pathlib import Path

from siri.demo.arms import STUDY_SEEDS, checkpoints_of
from siri.demo.trajectory import frontier_summary, mean_trajectories, point_of
from siri.demo.verdict import aggregate, spread, verdict

_RESULT_KEYS = ("accuracy", "mean_tokens", "truncation_rate", "num_prompts", "num_samples")


def checkpoint_names(arms) -> list[str]:
    """The base, then each arm's checkpoints in arm order."""
    return ["base", *[name for arm in arms for name in checkpoints_of(arm)]]


def variation_note(seeds: int) -> list[str]:
    """What ``seeds`` seeds support, for the console and ``summary["variation"]``."""
    elsewhere = ("The same seed gives different numbers on another processor (BLAS kernels differ by CPU, and a few "
                 "flipped samples compound over the RL steps); on the same machine and build it gives the same "
                 "summary.")
    if seeds == 1:
        return ["One seed illustrates the pipeline; it supports no claim about the methods. Claims come from "
                f"`siri demo --study`: every arm over {STUDY_SEEDS} seeds, compared by paired statistics over the "
                "seeds.",
                elsewhere]
    return [f"{seeds} seeds, paired by seed (seed i of one arm with seed i of another): a difference counts when "
            f"it is beyond the seed spread.",
            elsewhere + " A rerun elsewhere should reproduce the verdict's conclusions, not its digits."]


def summarize(results: dict[str, dict], checkpoints: dict[int, dict[str, str]], seeds: list[int], *, runs, settings,
              eval_file, eval_settings, prompt_tiers: dict[int, str], l_max: int, l_min: int, concise: dict,
              base_lengths: dict, trajectory: dict, gates: dict | None = None) -> dict:
    """The summary dict (see the module docstring): a pure function of the results.

    Args:
        results: ``"{checkpoint}/seed{s}"`` -> the checkpoint's eval result (with ``tiers``).
        checkpoints: seed -> checkpoint name -> path.
        runs: ``"{arm}/seed{s}"`` -> run directory.
        prompt_tiers: eval problem index -> its tier (one seed's per-tier spread comes from its prompts).
        trajectory: ``{"steps", "peaks", "troughs", "arms"}`` (the module docstring), kept as it is.
        gates: ``siri.demo.gates.gate_report`` of the base model's gates.
    """
    from siri.demo.predictions import evaluate_predictions

    names = checkpoint_names(settings.arms)
    by_checkpoint = {name: [results[f"{name}/seed{s}"] for s in seeds] for name in names}
    aggregated = aggregate(by_checkpoint, prompt_tiers=prompt_tiers)
    references = tuple(n for n in names if n not in ("base", "siri_low", "siri_high"))
    per_seed = {
        str(s): {name: {**{k: results[f"{name}/seed{s}"][k] for k in _RESULT_KEYS},
                        "tiers": {t: {k: v for k, v in tier.items() if k != "per_prompt"}
                                  for t, tier in results[f"{name}/seed{s}"]["tiers"].items()},
                        "checkpoint": checkpoints[s][name]}
                 for name in names}
        for s in seeds}
    summary = {
        "seeds": seeds, "arms": list(settings.arms), "checkpoints": names,
        "l_max": l_max, "l_min": l_min, "tiers": {t: list(r) for t, r in settings.tiers.items()},
        "caps": {"concise_tokens": {t: {"min": min(v), "median": statistics.median(v), "max": max(v)}
                                    for t, v in concise.items()},
                 "base_lengths": base_lengths},
        "results": aggregated,
        "verdict": verdict(aggregated, siri=("siri_low", "siri_high"), reference=references,
                           tiers=tuple(settings.tiers)),
        "variation": variation_note(len(seeds)),
        "gates": gates,
        "trajectory": trajectory,
        "base_points": {str(s): point_of(results[f"base/seed{s}"]) for s in seeds},
        "frontier": frontier_summary(trajectory, l_max),
        "per_seed": per_seed,
        "eval_file": str(eval_file), "eval_settings": asdict(eval_settings),
        "runs": dict(runs),
    }
    summary["predictions"] = evaluate_predictions(summary)
    return summary


def plot_demo(out: Path, summary: dict) -> list[Path]:
    """``plots/training_comparison.png`` (the first seed's runs), ``plots/pareto.png`` (every
    checkpoint, mean with error bars), ``plots/siri_trajectory.png`` (SIRI's peaks and
    troughs cycle by cycle, mean over seeds with std error bars, beside the other
    checkpoints' means), ``plots/trajectories.png`` (every arm at SIRI's peak and trough
    steps, mean over seeds, each path labelled at its ends) and ``plots/mechanism.png``
    (``siri.demo.mechanism_plot``); per-run plots in each run. The
    trajectory plots label points by steps done (``step_N``)."""
    from siri.plot import STEP_LABELS, plot_comparison, plot_pareto, plot_run

    first = summary["seeds"][0]
    results = summary["results"]
    finals = [{"label": name, "series": name, "accuracy": results[name]["accuracy"]["mean"],
               "mean_tokens": results[name]["mean_tokens"]["mean"],
               "accuracy_err": spread(results[name]["accuracy"]), "tokens_err": spread(results[name]["mean_tokens"])}
              for name in summary["checkpoints"]]
    first_runs = {arm: summary["runs"][f"{arm}/seed{first}"] for arm in summary["arms"]}
    plots = [plot_comparison(first_runs, out / "plots" / "training_comparison.png"),
             plot_pareto(finals, out / "plots" / "pareto.png")]
    paths = mean_trajectories(summary)
    if paths.get("siri"):
        others = [p for p in finals if p["label"] not in ("siri_low", "siri_high")]
        plots.append(plot_pareto([*paths["siri"], *others], out / "plots" / "siri_trajectory.png",
                                 point_labels=STEP_LABELS))
    arms = [{**p, "series": arm, "label": p["label"].split()[0] if i in (0, len(points) - 1) else ""}
            for arm, points in paths.items() for i, p in enumerate(points)]
    if arms:
        base = [p for p in finals if p["label"] == "base"]
        plots.append(plot_pareto([*base, *arms], out / "plots" / "trajectories.png", point_labels=STEP_LABELS))
    if paths:
        from siri.demo.mechanism_plot import plot_mechanism

        plots.append(plot_mechanism(summary, out / "plots" / "mechanism.png"))
    for run_dir in summary["runs"].values():
        plot_run(run_dir)
    return plots


def print_report(console, summary: dict) -> None:
    """The results table (mean and spread per checkpoint, per tier), the base model's lengths
    on the hard tier, and the verdict."""
    from rich.table import Table

    from siri.demo.gates import Gate
    from siri.demo.verdict import format_mean_spread

    s, seeds = summary["eval_settings"], len(summary["seeds"])
    spread_note = f"± std over {seeds} seeds" if seeds > 1 else "± s.e. over prompts (1 seed)"
    table = Table(title=f"siri demo: held-out eval, pass@1 over {s['n']} samples at T={s['temperature']}, "
                        f"max {s['max_tokens']} tokens (L_max {summary['l_max']}, L_min {summary['l_min']}); {spread_note}")
    table.add_column("checkpoint", no_wrap=True)
    for column in ("accuracy", "tokens", *[f"{t} acc / tok" for t in summary["tiers"]]):
        table.add_column(column, justify="right", no_wrap=True)
    for name in summary["checkpoints"]:
        r = summary["results"][name]
        tiers = [f"{100 * r['tiers'][t]['accuracy']['mean']:.0f}% / {r['tiers'][t]['mean_tokens']['mean']:.0f}"
                 for t in summary["tiers"] if t in r["tiers"]]
        table.add_row(name, format_mean_spread(r["accuracy"]), format_mean_spread(r["mean_tokens"], percent=False),
                      *tiers)
    console.print(table)
    print_trajectories(console, summary)
    hard = summary["caps"]["base_lengths"].get("hard", {}).get("correct", {})
    if hard.get("count"):
        console.print(f"base model, hard tier: correct answers have {hard['min']}-{hard['max']} tokens "
                      f"(median {hard['median']:.0f}); {100 * hard['fraction_above']:.0f}% need more than "
                      f"L_min = {summary['l_min']}")
    else:
        console.print("base model, hard tier: no correct answer in the length probe")
    if summary.get("gates"):
        console.print("[bold]base model gates[/bold] (checked before any RL)")
        for gate in summary["gates"]["gates"]:
            console.print(f"  {Gate(**gate).line()}", markup=False)
    if summary.get("predictions"):
        console.print("[bold]pre-registered predictions[/bold] (siri/demo/predictions.py)")
        for line in summary["predictions"]["lines"]:
            console.print(f"  {line}", markup=False)
    console.print("[bold]verdict[/bold]")
    for line in summary["verdict"]["lines"]:
        console.print(f"  {line}")
    console.print("[bold yellow]what this supports[/bold yellow]")
    for line in summary["variation"]:
        console.print(f"  {line}", markup=False)


def print_trajectories(console, summary: dict) -> None:
    """Every arm's accuracy / tokens after N steps, for each of SIRI's peaks and troughs (mean
    over seeds)."""
    from rich.table import Table

    paths = mean_trajectories(summary)
    if not any(paths.values()):
        return
    seeds = len(summary["seeds"])
    table = Table(title="every arm at SIRI's peaks and troughs, after N steps: accuracy / tokens"
                        + (f" (mean over {seeds} seeds)" if seeds > 1 else "") + ", the same eval as above")
    table.add_column("arm", no_wrap=True)
    labels = [p["label"] for p in next(points for points in paths.values() if points)]
    for label in labels:
        table.add_column(label, justify="right", no_wrap=True)
    for arm, points in paths.items():
        cells = {p["label"]: f"{100 * p['accuracy']:.0f}% / {p['mean_tokens']:.0f}" for p in points}
        table.add_row(arm, *[cells.get(label, "") for label in labels])
    console.print(table)
    table = Table(title="the mechanism at the same points: R (confirmation tokens / tokens) | hard: accuracy, "
                        "P(slip), C = P(correction | slip) | accuracy on the hard lists longer than L_min")
    table.add_column("arm", no_wrap=True)
    for label in labels:
        table.add_column(label, justify="right", no_wrap=True)
    for arm, points in paths.items():
        cells = {p["label"]: " ".join(_percent(p["mechanism"][name]) for name in
                                      ("R", "hard accuracy", "hard slip rate", "hard C", "long hard accuracy"))
                 for p in points}
        table.add_row(arm, *[cells.get(label, "") for label in labels])
    console.print(table)


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.0f}"
