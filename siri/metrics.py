"""Per-step training metrics: ``RUN_DIR/metrics.jsonl`` plus optional TensorBoard / W&B sinks.

One JSON object per line per step. Always present: ``step, cap, phase, reward_mean,
accuracy, response_len_mean, response_len_p50, response_len_max, truncation_rate, loss``;
see :meth:`siri.trainer.Trainer.train_step` for the rest.
"""
from __future__ import annotations

import json
import math
import os
import warnings
from pathlib import Path
from typing import Any

from siri.atomic_io import write_text_atomic
from siri.faults import fault_point

REQUIRED_FIELDS = ("step", "cap", "phase", "reward_mean", "accuracy", "response_len_mean",
                   "response_len_p50", "response_len_max", "truncation_rate", "loss")


def read_metrics(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The records of a metrics.jsonl, in file order. Blank lines are skipped, and so is an
    unparsable last line (a run killed mid-write), with a warning; an unparsable line
    elsewhere is a ValueError naming ``file:line``."""
    lines = [(i, line) for i, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1)
             if line.strip()]
    records = []
    for k, (i, line) in enumerate(lines):
        try:
            records.append(json.loads(line))
        except ValueError as e:
            if k < len(lines) - 1:
                raise ValueError(f"{path}:{i} is not valid JSON: {e}") from e
            warnings.warn(f"{path}:{i}: skipping an incomplete last line", stacklevel=2)
    return records


def read_run_metrics(run_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """The records of ``run_dir/metrics.jsonl`` that have a numeric ``step``, sorted by step.
    Raises FileNotFoundError naming the missing run dir or file, ValueError when there are
    no step records."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run directory {run_dir} does not exist")
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist (no training metrics in this run directory)")
    records = [r for r in read_metrics(path) if isinstance(r, dict) and isinstance(r.get("step"), (int, float))
               and not isinstance(r.get("step"), bool)]
    if not records:
        raise ValueError(f"{path} has no records with a 'step'")
    return sorted(records, key=lambda r: r["step"])


class MetricsLog:
    """Appends step metrics to ``metrics.jsonl`` (flushed and fsynced per line).

    Opening with ``resume_step=N`` keeps only the lines of steps ``< N`` and drops the rest
    (steps a killed run logged after its last checkpoint are redone), so the log of a resumed
    run equals that of an uninterrupted one.
    """

    def __init__(self, run_dir: str | os.PathLike, *, resume_step: int = 0, tensorboard: bool = False,
                 wandb: bool = False, wandb_project: str = "siri", config: dict | None = None):
        self.path = Path(run_dir) / "metrics.jsonl"
        kept = []
        if self.path.exists():
            kept = [row for row in read_metrics(self.path) if row.get("step", math.inf) < resume_step]
        write_text_atomic(self.path, "".join(json.dumps(row) + "\n" for row in kept))
        self._file = open(self.path, "a", encoding="utf-8")
        self._sinks = []
        if tensorboard:
            self._sinks.append(_TensorBoardSink(Path(run_dir) / "tensorboard"))
        if wandb:
            self._sinks.append(_WandbSink(wandb_project, Path(run_dir), config or {}))

    def log(self, metrics: dict[str, Any]) -> None:
        line = json.dumps(_finite_or_none(metrics)) + "\n"
        fault_point("metrics_write", lambda: self._write_raw(line[:len(line) // 2]))
        self._file.write(line)
        self._file.flush()
        os.fsync(self._file.fileno())
        for sink in self._sinks:
            sink.log(metrics)

    def _write_raw(self, text: str) -> None:
        self._file.write(text)
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()
        for sink in self._sinks:
            sink.close()


def _finite_or_none(metrics: dict[str, Any]) -> dict[str, Any]:
    """JSON has no NaN/inf: write them as null."""
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in metrics.items()}


class _TensorBoardSink:
    def __init__(self, log_dir: Path):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as e:
            raise ImportError("trainer.tensorboard needs the tensorboard package: pip install 'siri[tensorboard]'") from e
        self._writer = SummaryWriter(str(log_dir))

    def log(self, metrics: dict[str, Any]) -> None:
        for key, value in metrics.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and key != "step":
                self._writer.add_scalar(key, value, metrics["step"])

    def close(self) -> None:
        self._writer.close()


class _WandbSink:
    def __init__(self, project: str, run_dir: Path, config: dict):
        try:
            import wandb
        except ImportError as e:
            raise ImportError("trainer.wandb needs the wandb package: pip install 'siri[wandb]'") from e
        self._run = wandb.init(project=project, dir=str(run_dir), config=config, resume="allow")

    def log(self, metrics: dict[str, Any]) -> None:
        self._run.log({k: v for k, v in metrics.items() if k != "step"}, step=metrics["step"])

    def close(self) -> None:
        self._run.finish()
