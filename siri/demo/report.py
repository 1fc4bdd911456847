"""The demo's summary (``summary.json``), its console report and its plots.

``summary.json`` is a pure function of the seed, the settings and the machine's arithmetic:
no wall times (those go to ``timing.json``), so the same seed on the same machine writes the
same file.
"""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from siri.demo.arms import checkpoints_of
from siri.demo.verdict import aggregate, spread, verdict

_RESULT_KEYS = ("accuracy", "mean_tokens", "truncation_rate", "num_prompts", "num_samples")


def checkpoint_names(arms) -> list[str]:
    """The base, then each arm's checkpoints in arm order."""
    return ["base", *[name for arm in arms for name in checkpoints_of(arm)]]


def summarize(results: dict[str, dict], checkpoints: dict[int, dict[str, str]], seeds: list[int], *, runs, settings,
              eval_file, eval_settings, prompt_tiers: dict[int, str], l_max: int, l_min: int, concise: dict,
              base_lengths: dict) -> dict:
    """The summary dict (see the module docstring): a pure function of the results.

    Args:
        results: ``"{checkpoint}/seed{s}"`` -> the checkpoint's eval result (with ``tiers``).
        checkpoints: seed -> checkpoint name -> path.
        runs: ``"{arm}/seed{s}"`` -> run directory.
        prompt_tiers: eval problem index -> its tier (one seed's per-tier spread comes from its prompts).
    """
    from siri.train.metrics import read_run_metrics
    from siri.plot import run_schedule, trajectory_points

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
    trajectory = {}
    for s in seeds:
        run_dir = Path(runs[f"siri/seed{s}"])
        trajectory[str(s)] = trajectory_points(read_run_metrics(run_dir), run_schedule(run_dir))
    summary = {
        "seeds": seeds, "arms": list(settings.arms), "checkpoints": names,
        "l_max": l_max, "l_min": l_min, "tiers": {t: list(r) for t, r in settings.tiers.items()},
        "caps": {"concise_tokens": {t: {"min": min(v), "max": max(v)} for t, v in concise.items()},
                 "base_lengths": base_lengths},
        "results": aggregated,
        "verdict": verdict(aggregated, siri=("siri_low", "siri_high"), reference=references,
                           tiers=tuple(settings.tiers)),
        "trajectory": trajectory,
        "per_seed": per_seed,
        "eval_file": str(eval_file), "eval_settings": asdict(eval_settings),
        "runs": dict(runs),
    }
    return summary


def mean_trajectory(trajectories: dict[str, list[dict]]) -> list[dict]:
    """SIRI's trajectory averaged over seeds: one point per evaluation (label) that every seed
    with a trajectory made, in the first such seed's order, with the mean accuracy and tokens
    and, over several seeds, their standard deviations as ``accuracy_err`` / ``tokens_err``.
    Seeds without evaluations are left out."""
    import statistics

    runs = [points for points in trajectories.values() if points]
    if not runs:
        return []
    by_label = [{p["label"]: p for p in points} for points in runs]
    averaged = []
    for point in runs[0]:
        same = [labels[point["label"]] for labels in by_label if point["label"] in labels]
        if len(same) < len(runs):
            continue
        accuracy, tokens = [p["accuracy"] for p in same], [p["mean_tokens"] for p in same]
        several = len(same) > 1
        averaged.append({"label": point["label"], "series": point["series"],
                         "accuracy": statistics.fmean(accuracy), "mean_tokens": statistics.fmean(tokens),
                         "accuracy_err": statistics.stdev(accuracy) if several else None,
                         "tokens_err": statistics.stdev(tokens) if several else None})
    return averaged


def plot_demo(out: Path, summary: dict) -> list[Path]:
    """``plots/training_comparison.png`` (the first seed's runs), ``plots/pareto.png`` (every
    checkpoint, mean with error bars) and ``plots/siri_trajectory.png`` (SIRI's peaks and
    troughs cycle by cycle, mean over seeds with std error bars, beside the other
    checkpoints' means); per-run plots in each run."""
    from siri.plot import plot_comparison, plot_pareto, plot_run

    first = summary["seeds"][0]
    results = summary["results"]
    finals = [{"label": name, "series": name, "accuracy": results[name]["accuracy"]["mean"],
               "mean_tokens": results[name]["mean_tokens"]["mean"],
               "accuracy_err": spread(results[name]["accuracy"]), "tokens_err": spread(results[name]["mean_tokens"])}
              for name in summary["checkpoints"]]
    first_runs = {arm: summary["runs"][f"{arm}/seed{first}"] for arm in summary["arms"]}
    plots = [plot_comparison(first_runs, out / "plots" / "training_comparison.png"),
             plot_pareto(finals, out / "plots" / "pareto.png")]
    path = mean_trajectory(summary["trajectory"])
    if path:
        others = [p for p in finals if p["label"] not in ("siri_low", "siri_high")]
        plots.append(plot_pareto([*path, *others], out / "plots" / "siri_trajectory.png"))
    for run_dir in summary["runs"].values():
        plot_run(run_dir)
    return plots


def print_report(console, summary: dict) -> None:
    """The results table (mean and spread per checkpoint, per tier), the base model's lengths
    on the hard tier, and the verdict."""
    from rich.table import Table

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
    hard = summary["caps"]["base_lengths"].get("hard", {}).get("correct", {})
    if hard.get("count"):
        console.print(f"base model, hard tier: correct answers have {hard['min']}-{hard['max']} tokens "
                      f"(median {hard['median']:.0f}); {100 * hard['fraction_above']:.0f}% need more than "
                      f"L_min = {summary['l_min']}")
    else:
        console.print("base model, hard tier: no correct answer in the length probe")
    console.print("[bold]verdict[/bold]")
    for line in summary["verdict"]["lines"]:
        console.print(f"  {line}")
