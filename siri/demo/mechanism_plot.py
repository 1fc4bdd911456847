"""``plots/mechanism.png``: what each arm's reasoning looks like at SIRI's peaks and troughs, drawn
from ``summary.json`` alone (mean over seeds): R, hard accuracy next to the long hard lists'
accuracy, and C = P(correction | slip) next to P(slip) on hard lists; the base model's values as
dotted lines."""
from __future__ import annotations

from pathlib import Path

from siri.demo.trajectory import MECHANISM_COLUMNS, mean_trajectories
from siri.plot import _colors, _figure, _save

PANELS = (("R", "R: confirmation tokens / tokens"),
          ("hard accuracy", "hard accuracy (solid), hard lists longer than L_min (dashed)"),
          ("hard C", "hard C = P(correction | slip) (solid), P(slip) (dashed)"))


def plot_mechanism(summary: dict, out_path: str | Path) -> Path:
    """Three panels over the steps of SIRI's peaks and troughs, one line per arm."""
    import statistics

    from matplotlib.ticker import PercentFormatter

    paths = {arm: points for arm, points in mean_trajectories(summary).items() if points}
    base_points = list(summary.get("base_points", {}).values())
    fig = _figure((15, 4.2))
    colors = dict(zip(paths, _colors(len(paths))))
    troughs = set(summary["trajectory"].get("troughs", []))
    for i, (key, title) in enumerate(PANELS):
        ax = fig.add_subplot(1, len(PANELS), i + 1)
        for arm, points in paths.items():
            steps = [int(p["label"].split()[0]) for p in points]
            ax.plot(steps, [p["mechanism"][key] for p in points], marker="o", color=colors[arm], label=arm)
            dashed = {"hard accuracy": "long hard accuracy", "hard C": "hard slip rate"}.get(key)
            if dashed:
                ax.plot(steps, [p["mechanism"][dashed] for p in points], linestyle="--", color=colors[arm])
        values = [MECHANISM_COLUMNS[key](p) for p in base_points]
        if values and None not in values:
            ax.axhline(statistics.fmean(values), color="grey", linestyle=":", label="base")
        for step in troughs:
            ax.axvline(step, color="0.85", zorder=0)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("steps done (grey: SIRI's troughs)")
        ax.yaxis.set_major_formatter(PercentFormatter(1.0))
        if i == 0:
            ax.legend(fontsize=8)
    return _save(fig, out_path)
