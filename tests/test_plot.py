"""siri.plot on a synthetic run: a cosine cap for 40 steps and two eval reports."""
import json
import math

import pytest

from siri.algo.schedule import make_schedule
from siri.eval import EvalSettings, write_eval_report
from siri.metrics import read_run_metrics
from siri.plot import plot_comparison, plot_pareto, plot_run

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
