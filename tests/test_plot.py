"""siri.plot on a synthetic run: a cosine cap for 40 steps and two eval reports."""
import json
import math

import pytest

from siri.algo.schedule import make_schedule
from siri.eval import EvalSettings, write_eval_report
from siri.train.metrics import read_run_metrics
from siri.plot import STEP_LABELS, plot_comparison, plot_pareto, plot_run, trajectory_place, trajectory_points

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def write_run(run_dir, kind="cosine", steps=40, extra=True):
    """metrics.jsonl of a fake run: lengths follow the cap, reward rises; some keys missing."""
    schedule = make_schedule(kind, l_max=64, l_min=32, period=20) if kind == "cosine" else \
        make_schedule("constant", l_max=64)
    run_dir.mkdir(parents=True)
    lines = []
    for t in range(steps):
        cap = schedule(t)
        record = {"step": t, "cap": cap, "phase": schedule.phase(t), "reward_mean": 0.2 + 0.5 * t / steps,
                  "response_len_mean": 0.8 * cap - 0.1 * t, "truncation_rate": 0.3 * math.exp(-t / 10),
                  "loss": 0.05 * math.sin(t)}
        if extra:
            record.update(entropy=1.0 - t / 100, grad_norm=0.5 + 0.01 * t, clip_frac_low=0.01,
                          clip_frac_high=0.02 + 0.001 * t, response_len_max=cap, is_eval_step=t % 10 == 0)
        if t == 7:
            del record["loss"], record["reward_mean"]  # a line missing keys
        lines.append(json.dumps(record))
    (run_dir / "metrics.jsonl").write_text("\n".join(lines) + "\n\n")
    return run_dir


def write_reports(run_dir):
    settings = EvalSettings(n=4, max_tokens=64)
    for step, label, acc, tokens in ((9, "trough 1", 0.30, 25.0), (19, "peak 1", 0.36, 44.0),
                                     (29, "trough 2", 0.40, 27.0)):
        results = {bench: {"accuracy": acc + d, "accuracy_std_over_samples": 0.01, "mean_tokens": tokens * (1 + d),
                           "truncation_rate": 0.1, "num_prompts": 8, "num_samples": 32, "per_prompt": [],
                           "seconds": 1.0}
                   for bench, d in (("aime-tiny", 0.0), ("math-tiny", 0.1))}
        write_eval_report(run_dir / "eval" / f"step_{step}.json", model="tiny", label=label, step=step,
                          settings=settings, results=results)


def assert_png(path, min_size=(200, 200)):
    from matplotlib.image import imread

    assert path.is_file() and path.stat().st_size > 1000
    assert path.read_bytes()[:8] == PNG_MAGIC
    height, width = imread(path).shape[:2]
    assert width >= min_size[0] and height >= min_size[1], (width, height)


def test_plot_run_writes_three_pngs(tmp_path):
    run = write_run(tmp_path / "run")
    write_reports(run)
    paths = plot_run(run)
    assert [p.name for p in paths] == ["schedule.png", "training.png", "pareto.png"]
    assert all(p.parent == run / "plots" for p in paths)
    for p in paths:
        assert_png(p)


def test_no_pareto_without_eval_reports(tmp_path):
    run = write_run(tmp_path / "run", extra=False)
    paths = plot_run(run)
    assert [p.name for p in paths] == ["schedule.png", "training.png"]
    assert not (run / "plots" / "pareto.png").exists()
    for p in paths:
        assert_png(p)


def test_read_metrics_tolerates_a_cut_last_line(tmp_path):
    run = write_run(tmp_path / "run", steps=5)
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"step": 5, "cap": 6')
    with pytest.warns(UserWarning, match="incomplete last line"):
        records = read_run_metrics(run)
    assert [r["step"] for r in records] == [0, 1, 2, 3, 4]


def test_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope"):
        plot_run(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="metrics.jsonl"):
        plot_run(tmp_path / "empty")
    (tmp_path / "empty" / "metrics.jsonl").write_text("\n")
    with pytest.raises(ValueError, match="no records"):
        plot_run(tmp_path / "empty")
    (tmp_path / "empty" / "metrics.jsonl").write_text('{"step": 0\n{"step": 1}\n')
    with pytest.raises(ValueError, match="metrics.jsonl:1 is not valid JSON"):
        plot_run(tmp_path / "empty")
    with pytest.raises(ValueError, match="at least one"):
        plot_pareto([], tmp_path / "p.png")
    with pytest.raises(ValueError, match="at least one"):
        plot_comparison({}, tmp_path / "c.png")


def test_plot_comparison_and_pareto(tmp_path):
    runs = {"SIRI": write_run(tmp_path / "siri"), "fixed cap": write_run(tmp_path / "fixed", kind="constant")}
    out = plot_comparison(runs, tmp_path / "out" / "comparison.png")
    assert out == tmp_path / "out" / "comparison.png"
    assert_png(out)
    points = [{"label": "base", "accuracy": 0.3, "mean_tokens": 50.0}, {"label": "siri", "accuracy": 0.4,
                                                                         "mean_tokens": 30.0}]
    assert_png(plot_pareto(points, tmp_path / "pareto.png"))


@pytest.fixture
def figures(monkeypatch):
    """The matplotlib Figures siri.plot saves, in order (their PNGs are still written)."""
    import siri.plot

    saved, real_save = [], siri.plot._save

    def capture(fig, path):
        saved.append(fig)
        return real_save(fig, path)

    monkeypatch.setattr(siri.plot, "_save", capture)
    return saved


def legends_over_axes(fig):
    """Legends whose drawn box overlaps the data area of an axes (after the figure was saved)."""
    legends = list(fig.legends) + [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None]
    renderer = fig._get_renderer()
    return [(legend, ax) for legend in legends for ax in fig.axes if ax.get_visible()
            and legend.get_window_extent(renderer).overlaps(ax.get_window_extent(renderer))]


def test_no_legend_or_arrow_inside_the_axes(tmp_path, figures):
    """Legends sit outside the data area (a legend inside a panel covered SIRI's rising cap) and
    the Pareto plot's 'better' note is its title, not an arrow among the points."""
    runs = {name: write_run(tmp_path / name, kind=kind) for name, kind in (("siri", "cosine"), ("baseline", "constant"))}
    plot_comparison(runs, tmp_path / "cmp.png")
    plot_pareto([{"label": "a", "series": "x", "accuracy": 0.5, "mean_tokens": 10.0},
                 {"label": "b", "series": "y", "accuracy": 0.6, "mean_tokens": 12.0}], tmp_path / "p.png")
    plot_run(runs["siri"])
    for fig in figures:
        assert not legends_over_axes(fig), "a legend over an axes can cover data"
        for ax in fig.axes:
            assert not [t for t in ax.texts if getattr(t, "arrow_patch", None) is not None]
    comparison, pareto = figures[0], figures[1]
    assert [t.get_text() for t in comparison.legends[0].get_texts()] == ["siri", "baseline"]
    assert "better" in pareto.axes[0].get_title(loc="left")
    assert "training rollout" in comparison.axes[2].get_ylabel()


def test_training_plot_draws_reward_and_accuracy_once_when_they_coincide(tmp_path, figures):
    run = write_run(tmp_path / "run", steps=6)
    lines = (run / "metrics.jsonl").read_text().split("\n")
    records = [json.loads(line) for line in lines if line]
    for r in records:  # 0/1 rewards: accuracy is the reward
        if "reward_mean" in r:
            r["accuracy"] = r["reward_mean"]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    plot_run(run)
    reward_panel = next(ax for ax in figures[1].axes if ax.get_title() == "training rollout reward")
    assert [line.get_label() for line in reward_panel.get_lines()] == ["reward_mean"]
    figures.clear()
    for r in records:  # shaped rewards: two different series, both drawn
        if "reward_mean" in r:
            r["accuracy"] = r["reward_mean"] / 2
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    plot_run(run)
    reward_panel = next(ax for ax in figures[1].axes if ax.get_title() == "training rollout reward")
    assert [line.get_label() for line in reward_panel.get_lines()] == ["reward_mean", "accuracy"]


def test_pareto_labels_only_what_the_legend_does_not_name(tmp_path, figures):
    """A trajectory's points carry their step beside them; a checkpoint that is its own series
    is named by the legend, so no text beside it crowds the points near it."""
    path = [{"label": f"{s} peak", "series": "cycle 1", "accuracy": a, "mean_tokens": t}
            for s, a, t in ((1, 0.5, 40.0), (16, 0.6, 30.0))]
    finals = [{"label": name, "series": name, "accuracy": a, "mean_tokens": t}
              for name, a, t in (("base", 0.4, 50.0), ("baseline", 0.7, 20.0))]
    plot_pareto(path + finals, tmp_path / "p.png")
    ax = figures[0].axes[0]
    assert sorted(t.get_text() for t in ax.texts) == ["1 peak", "16 peak"]
    assert [t.get_text() for t in figures[0].legends[0].get_texts()] == ["cycle 1", "base", "baseline"]
    plot_pareto(finals[:1], tmp_path / "one.png")   # no legend: the label stays
    assert [t.get_text() for t in figures[1].axes[0].texts] == ["base"]


def test_pareto_axis_stays_near_the_accuracy_range(tmp_path, figures):
    """A std over seeds can reach past 100% (or below 0%); the axis stops just beyond the range
    accuracy can take, so the plot never shows an impossible 105%."""
    plot_pareto([{"label": "a", "accuracy": 0.99, "mean_tokens": 30.0, "accuracy_err": 0.3},
                 {"label": "b", "accuracy": 0.02, "mean_tokens": 40.0, "accuracy_err": 0.3}], tmp_path / "p.png")
    bottom, top = figures[0].axes[0].get_ylim()
    assert top <= 1.0 + 0.05 * 1.1 and bottom >= -0.05 * 1.1
    assert top > 0.99 and bottom < 0.02


def test_trajectory_points_count_steps_as_checkpoints_and_close_the_last_cycle(tmp_path, figures):
    """A point after 0-based step t is labelled t + 1, as its checkpoint step_{t+1}; a peak closes
    its cycle, so a run that ends on a peak (41 steps of period 20) ends cycle 2 instead of
    opening a one-point cycle 3; the plot's x label says what the labels count."""
    schedule = make_schedule("cosine", l_max=64, l_min=32, period=20)
    run = write_run(tmp_path / "run", steps=41)
    records = read_run_metrics(run)
    for r in records:
        if r["step"] in (0, 10, 20, 30, 40):
            r.update(eval_accuracy=0.5 + r["step"] / 100, eval_response_len_mean=60.0 - r["step"])
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (run / "config.yaml").write_text("schedule: {kind: cosine, l_max: 64, l_min: 32, period: 20}\n")
    points = trajectory_points(records, schedule)
    assert [(p["label"], p["series"]) for p in points] == [
        ("1 peak", "cycle 1"), ("11 trough", "cycle 1"), ("21 peak", "cycle 1"), ("31 trough", "cycle 2"),
        ("41 peak", "cycle 2")]
    assert trajectory_place(40, schedule, 41) == ("41 peak", "cycle 2")
    assert trajectory_place(45, schedule, 50) == ("46", "cycle 3")          # a partial cycle is still one
    assert trajectory_place(3, make_schedule("constant", l_max=64), 10) == ("4", "during training")
    assert trajectory_place(3, None, 10) == ("4", "during training")
    plot_run(run)
    trajectory = next(fig for fig in figures if any(t.get_text() == "41 peak" for t in fig.axes[0].texts))
    assert trajectory.axes[0].get_xlabel().endswith(STEP_LABELS) and "step_N" in STEP_LABELS


def test_pareto_writes_no_empty_label_and_notes_what_labels_mean(tmp_path, figures):
    points = [{"label": "1", "series": "a", "accuracy": 0.5, "mean_tokens": 40.0},
              {"label": "", "series": "a", "accuracy": 0.6, "mean_tokens": 30.0},
              {"label": "91", "series": "a", "accuracy": 0.7, "mean_tokens": 20.0}]
    plot_pareto(points, tmp_path / "p.png", point_labels="labels: steps")
    ax = figures[0].axes[0]
    assert [t.get_text() for t in ax.texts] == ["1", "91"]
    assert ax.get_xlabel() == "mean response length (tokens)\nlabels: steps"
    plot_pareto(points, tmp_path / "q.png")
    assert figures[1].axes[0].get_xlabel() == "mean response length (tokens)"
