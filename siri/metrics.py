"""Per-step training metrics: ``RUN_DIR/metrics.jsonl`` plus optional TensorBoard / W&B sinks.

One JSON object per line per step. Always present: ``step, cap, phase, reward_mean,
accuracy, response_len_mean, response_len_p50, response_len_max, truncation_rate, loss``;
see :meth:`siri.trainer.Trainer.train_step` for the rest.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

REQUIRED_FIELDS = ("step", "cap", "phase", "reward_mean", "accuracy", "response_len_mean",
                   "response_len_p50", "response_len_max", "truncation_rate", "loss")


def read_metrics(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The complete lines of a metrics.jsonl (a torn last line from a crash is ignored)."""
    rows = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                rows.append(json.loads(line))
            except ValueError:
                break
    return rows


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
        tmp = self.path.with_suffix(".jsonl.tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            f.writelines(json.dumps(row) + "\n" for row in kept)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        self._file = open(self.path, "a", encoding="utf-8")
        self._sinks = []
        if tensorboard:
            self._sinks.append(_TensorBoardSink(Path(run_dir) / "tensorboard"))
        if wandb:
            self._sinks.append(_WandbSink(wandb_project, Path(run_dir), config or {}))

    def log(self, metrics: dict[str, Any]) -> None:
        self._file.write(json.dumps(_finite_or_none(metrics)) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())
        for sink in self._sinks:
            sink.log(metrics)

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
