"""Plots of a training run: the length schedule against what the model does, the training
curves, and the accuracy/length Pareto plot of evaluated checkpoints (the paper's Figure 1).

    plot_run("runs/demo")   # -> runs/demo/plots/: schedule.png, training.png, [trajectory.png], [pareto.png]
    plot_comparison({"SIRI": Path("runs/siri"), "fixed cap": Path("runs/fixed")}, "cmp.png")

Inputs: ``run_dir/metrics.jsonl`` (one JSON object per step: ``step`` plus any of ``cap``,
``phase``, ``reward_mean``, ``response_len_mean``, ``truncation_rate``, ``loss``, ...) and
the eval reports ``run_dir/eval/*.json`` of ``siri.eval.write_eval_report``; the
``eval_*`` columns that evaluation during training adds to metrics.jsonl give the
accuracy-vs-tokens trajectory.

Figures are built with ``matplotlib.figure.Figure`` and saved through the Agg canvas; pyplot
is never imported, so plotting leaves the caller's matplotlib backend and figures alone.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

from siri.eval import load_eval_reports
from siri.train.metrics import read_run_metrics

__all__ = ["STEP_LABELS", "plot_comparison", "plot_pareto", "plot_run", "run_schedule", "trajectory_place",
           "trajectory_points"]

# training.png panels: title -> metric keys drawn on it (absent keys are skipped)
_PANELS = {
    "training rollout reward": ["reward_mean", "accuracy"],
    "response length (tokens)": ["response_len_mean", "response_len_p50", "response_len_max"],
    "truncation rate": ["truncation_rate"],
    "loss": ["loss"],
    "entropy": ["entropy"],
    "grad norm": ["grad_norm"],
}


def plot_run(run_dir: str | os.PathLike) -> list[Path]:
    """Write ``schedule.png``, ``training.png``, (when the run evaluated during training)
    ``trajectory.png`` and (when there are eval reports) ``pareto.png`` into
    ``run_dir/plots/``; returns their paths in that order."""
    run_dir = Path(run_dir)
    records = read_run_metrics(run_dir)
    reports = load_eval_reports(run_dir)
    out = run_dir / "plots"
    out.mkdir(exist_ok=True)
    paths = [_plot_schedule(records, [r["step"] for r in reports if r.get("step") is not None],
                            out / "schedule.png"),
             _plot_training(records, out / "training.png")]
    trajectory = trajectory_points(records, run_schedule(run_dir))
    if trajectory:
        paths.append(plot_pareto(trajectory, out / "trajectory.png", point_labels=STEP_LABELS))
    points = _pareto_points(reports)
    if points:
        paths.append(plot_pareto(points, out / "pareto.png"))
    return paths


def plot_comparison(runs: dict[str, str | os.PathLike], out_path: str | os.PathLike) -> Path:
    """Overlay cap, mean response length and mean reward vs step of several runs
    (``{name: run_dir}``), one colour per run, in three stacked panels; returns ``out_path``."""
    if not runs:
        raise ValueError("plot_comparison needs at least one run")
    data = {name: read_run_metrics(d) for name, d in runs.items()}
    fig = _figure(figsize=(8, 8))
    axes = fig.subplots(3, 1, sharex=True)
    for (name, records), color in zip(data.items(), _colors(len(data))):
        axes[0].step(*_series(records, "cap"), where="post", color=color, label=name)
        axes[1].plot(*_series(records, "response_len_mean"), color=color, label=name)
        axes[2].plot(*_series(records, "reward_mean"), color=color, label=name)
    for ax, title in zip(axes, ("cap (tokens)", "mean response length\n(tokens)", "training rollout\nreward (mean)")):
        ax.set_ylabel(title)
        ax.grid(alpha=0.3)
    axes[-1].set_xlabel("step")
    # one legend above the panels: inside one it would cover a curve (SIRI's rising cap)
    fig.legend(*axes[0].get_legend_handles_labels(), loc="outside upper center", ncols=min(len(data), 5),
               fontsize=8, frameon=False)
    return _save(fig, out_path)


def plot_pareto(points: list[dict], out_path: str | os.PathLike, *, point_labels: str | None = None) -> Path:
    """Accuracy (y) against mean response tokens (x); upper-left is better.

    Args:
        points: dicts with ``label`` (str, written next to the marker), ``accuracy`` (a
            fraction in [0, 1]), ``mean_tokens`` (float) and optionally ``series`` (str):
            points of one series share a colour and marker and are joined in list order
            (e.g. one benchmark across checkpoints); a legend names the series (when there
            are several) and a point's label is written beside it unless it is empty or the
            legend already says it (a one-point series named like its point). Optional
            ``accuracy_err`` (a fraction, like ``accuracy``) and ``tokens_err`` (tokens):
            non-negative half-widths drawn as error bars in the series colour (e.g. the
            spread over seeds, ``siri.demo.verdict.spread``); a point without them (or with
            None) has none.
        out_path: the PNG to write (parent directories created).
        point_labels: what the labels beside the points mean (e.g. :data:`STEP_LABELS`),
            written under the x axis's label.

    Returns ``out_path`` as a Path. Raises ValueError when ``points`` is empty or an error
    is negative.
    """
    if not points:
        raise ValueError("plot_pareto needs at least one point")
    negative = [p["label"] for p in points if any((p.get(k) or 0.0) < 0 for k in ("accuracy_err", "tokens_err"))]
    if negative:
        raise ValueError(f"plot_pareto: accuracy_err / tokens_err must be >= 0, not at {negative}")
    from matplotlib.ticker import PercentFormatter

    series: dict[str, list[dict]] = {}
    for p in points:
        series.setdefault(p.get("series", ""), []).append(p)
    fig = _figure(figsize=(7, 5))
    ax = fig.subplots()
    for (name, pts), color, marker in zip(series.items(), _colors(len(series)), _markers()):
        x, y = [p["mean_tokens"] for p in pts], [p["accuracy"] for p in pts]
        ax.plot(x, y, color=color, alpha=0.4, lw=1)
        ax.scatter(x, y, color=color, marker=marker, s=50, zorder=3, label=name or None)
        yerr, xerr = ([p.get(k) or 0.0 for p in pts] if any(p.get(k) is not None for p in pts) else None
                      for k in ("accuracy_err", "tokens_err"))
        if yerr is not None or xerr is not None:
            ax.errorbar(x, y, yerr=yerr, xerr=xerr, fmt="none", ecolor=color, elinewidth=1, capsize=3,
                        alpha=0.8, zorder=2, label="_nolegend_")
        for p in pts:
            if not p["label"] or (len(series) > 1 and len(pts) == 1 and p["label"] == name):
                continue  # none, or the legend names it: a label beside it would only crowd nearby points
            ax.annotate(p["label"], (p["mean_tokens"], p["accuracy"]), xytext=(4, 4),
                        textcoords="offset points", fontsize=8, color=color)
    # above the axes, where no point can be
    ax.set_title("upper left is better: more accurate, fewer tokens", fontsize=9, color="0.4", loc="left")
    ax.set_xlabel("mean response length (tokens)" + (f"\n{point_labels}" if point_labels else ""))
    ax.set_ylabel("accuracy (pass@1)")
    ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    ax.margins(0.15)
    # accuracy lies in [0, 1]; an error bar (a std) may reach past it, the axis need not
    bottom, top = ax.get_ylim()
    pad = 0.05 * (min(top, 1.0) - max(bottom, 0.0))
    ax.set_ylim(max(bottom, -pad), min(top, 1.0 + pad))
    ax.grid(alpha=0.3)
    if len(series) > 1:  # outside the axes, right: inside, "best" still covered points or labels
        fig.legend(loc="outside right center", fontsize=8, frameon=False)
    return _save(fig, out_path)


# ---- the figures of plot_run -----------------------------------------------------------

def _plot_schedule(records: list[dict], eval_steps: list[int], path: Path) -> Path:
    """Cap (step line) and mean response length on a token axis, reward on a second axis,
    compress phases shaded, eval checkpoints as dotted lines."""
    fig = _figure(figsize=(9, 4.5))
    ax = fig.subplots()
    _shade_compress(ax, records, label="compress phase")
    ax.step(*_series(records, "cap"), where="post", color="C0", label="cap")
    ax.plot(*_series(records, "response_len_mean"), color="C1", label="mean response length")
    for i, step in enumerate(eval_steps):
        ax.axvline(step, color="0.5", ls=":", lw=1, label="eval" if i == 0 else None)
    ax.set_xlabel("step")
    ax.set_ylabel("tokens")
    ax.set_ylim(bottom=0)
    reward = ax.twinx()
    reward.plot(*_series(records, "reward_mean"), color="C2", label="training rollout reward (mean)")
    reward.set_ylabel("training rollout reward (mean)")
    handles, labels = ax.get_legend_handles_labels()
    more_handles, more_labels = reward.get_legend_handles_labels()
    fig.legend(handles + more_handles, labels + more_labels, fontsize=8, loc="outside lower center",
               ncols=len(labels) + len(more_labels), frameon=False)
    ax.grid(alpha=0.3)
    ax.set_title("length schedule")
    return _save(fig, path)


def _plot_training(records: list[dict], path: Path) -> Path:
    """One panel per metric group of ``_PANELS`` present in the records, plus the clip
    fractions (every numeric key containing "clip"); compress phases shaded."""
    present = {k for r in records for k, v in r.items() if _is_number(v)}
    panels = {title: [k for k in keys if k in present] for title, keys in _PANELS.items()}
    if "accuracy" in panels["training rollout reward"] and _same_series(records, "reward_mean", "accuracy"):
        panels["training rollout reward"].remove("accuracy")  # 0/1 rewards: one line, not two on top
    panels["clip fractions"] = sorted(k for k in present if "clip" in k)
    panels = {title: keys for title, keys in panels.items() if keys}
    if not panels:
        raise ValueError(f"no training metrics to plot (numeric keys: {sorted(present)})")
    cols = 2 if len(panels) <= 4 else 3
    rows = math.ceil(len(panels) / cols)
    fig = _figure(figsize=(4.5 * cols, 3 * rows))
    axes = fig.subplots(rows, cols, sharex=True, squeeze=False).ravel()
    for ax, (title, keys) in zip(axes, panels.items()):
        _shade_compress(ax, records)
        for key in keys:
            ax.plot(*_series(records, key), label=key, lw=1.2)
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
        if len(keys) > 1:  # right of the panel, off the curves
            ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    for ax in axes[max(0, len(panels) - cols):len(panels)]:  # the lowest visible panel of each column
        ax.xaxis.set_tick_params(labelbottom=True)
        ax.set_xlabel("step")
    return _save(fig, path)


def trajectory_points(records: list[dict], schedule=None) -> list[dict]:
    """The accuracy-vs-tokens points of evaluation during training, in step order: one per
    record with ``eval_accuracy``, placed by :func:`trajectory_place` (labelled by the
    checkpoint it matches, ``step_N`` = after N steps, and "peak" / "trough" where the schedule
    has one; with a periodic ``schedule`` each cycle is its own series: SIRI's claim is that
    every cycle moves the path to the upper left)."""
    evaluated = [r for r in records if _is_number(r.get("eval_accuracy")) and _is_number(r.get("eval_response_len_mean"))]
    if not evaluated:
        return []
    num_steps = max(r["step"] for r in records) + 1
    points = []
    for r in evaluated:
        label, series = trajectory_place(r["step"], schedule, num_steps)
        points.append({"label": label, "series": series, "accuracy": r["eval_accuracy"],
                       "mean_tokens": r["eval_response_len_mean"]})
    return points


#: What a trajectory point's label counts, said under the x axis of a trajectory plot.
STEP_LABELS = "point labels: N = after N training steps (checkpoint step_N)"


def trajectory_place(step: int, schedule, num_steps: int) -> tuple[str, str]:
    """``(label, series)`` of the weights after ``step`` (0-based, as in metrics.jsonl) of a
    run of ``num_steps`` steps.

    The label counts steps as checkpoints do: ``"N"`` with N = step + 1 (``step_N`` holds these
    weights), plus " peak" / " trough" where the schedule has one at ``step``. The series is
    "cycle k" for a periodic ``schedule`` (one with a ``period``): a cycle runs from a peak
    down through a trough and up to the next peak, and the peak that closes cycle k (step
    k x period) belongs to it; so a run that ends on a peak ends its last cycle, rather than
    opening a one-point cycle after it. Without a period (or a schedule) the series is
    "during training"."""
    schedule_steps = max(num_steps, step + 1)
    peaks = set(schedule.peaks(schedule_steps)) if schedule is not None else set()
    troughs = set(schedule.troughs(schedule_steps)) if schedule is not None else set()
    tag = " peak" if step in peaks else " trough" if step in troughs else ""
    period = getattr(schedule, "period", None) if schedule is not None else None
    series = f"cycle {max(1, math.ceil(step / period))}" if period else "during training"
    return f"{step + 1}{tag}", series


def run_schedule(run_dir: Path):
    """The length schedule of the run's ``config.yaml``, or None when there is none usable."""
    from siri.config import ConfigError, load_config

    try:
        return load_config(run_dir / "config.yaml", validate=False).length_schedule()
    except (OSError, ConfigError, ValueError):
        return None


def _pareto_points(reports: list[dict]) -> list[dict]:
    """One point per report per benchmark (series = benchmark) plus the unweighted mean over
    the report's benchmarks (series "mean over benchmarks")."""
    points = []
    for report in reports:
        benchmarks = report.get("benchmarks") or {}
        label = str(report.get("label") or report.get("step"))
        for name, r in benchmarks.items():
            points.append({"label": label, "series": name, "accuracy": r["accuracy"], "mean_tokens": r["mean_tokens"]})
        if len(benchmarks) > 1:
            points.append({"label": label, "series": "mean over benchmarks",
                           "accuracy": sum(r["accuracy"] for r in benchmarks.values()) / len(benchmarks),
                           "mean_tokens": sum(r["mean_tokens"] for r in benchmarks.values()) / len(benchmarks)})
    return points


# ---- helpers ---------------------------------------------------------------------------

def _same_series(records: list[dict], a: str, b: str) -> bool:
    """Whether metrics ``a`` and ``b`` have the same value (to 1e-9) at every step."""
    return all(math.isclose(r[a], r[b], abs_tol=1e-9) for r in records if _is_number(r.get(a)) and _is_number(r.get(b)))


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _series(records: list[dict], key: str) -> tuple[list, list]:
    """(steps, values) of the records where ``key`` is a number."""
    pts = [(r["step"], r[key]) for r in records if _is_number(r.get(key))]
    return [s for s, _ in pts], [v for _, v in pts]


def _shade_compress(ax, records: list[dict], label: str | None = None) -> None:
    """Shade each run of consecutive "compress" records, from its first step to the step of
    the next record with another phase (or the last step); records without a phase are
    passed over."""
    start = None
    for r in records:
        phase = r.get("phase")
        if phase == "compress" and start is None:
            start = r["step"]
        elif phase is not None and phase != "compress" and start is not None:
            ax.axvspan(start, r["step"], color="0.85", alpha=0.6, lw=0, label=label)
            start, label = None, None
    if start is not None:
        ax.axvspan(start, records[-1]["step"], color="0.85", alpha=0.6, lw=0, label=label)


def _figure(figsize: tuple[float, float]):
    from matplotlib.figure import Figure

    return Figure(figsize=figsize, layout="constrained")


def _colors(n: int) -> list[str]:
    return [f"C{i % 10}" for i in range(n)]


def _markers():
    while True:
        yield from "osD^vP*X"


def _save(fig, path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path
