"""Progress of training loops: a rich bar on a terminal (step, cap, phase, reward, mean length,
truncation rate, or any status text), one plain log line per step elsewhere (a log file, a
pipe, a batch job's output)."""
from __future__ import annotations

import logging
import sys
from typing import Any

#: Width of rich output that goes to a log file or a pipe (rich's default there is 80, which
#: cuts progress lines mid-number and wraps tables).
LOG_WIDTH = 200


def make_console(**kwargs):
    """A ``rich.console.Console``; when the output is not a terminal it is ``LOG_WIDTH``
    columns wide (a ``COLUMNS`` environment variable still wins)."""
    import os

    from rich.console import Console

    console = Console(**kwargs)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console = Console(width=LOG_WIDTH, **kwargs)
    return console


#: The logger of the per-step lines (:func:`step_logger`).
STEP_LOGGER = "siri"


def is_interactive() -> bool:
    """Whether stdout can show a live bar: a terminal (rich's test, so ``FORCE_COLOR`` or
    ``TTY_COMPATIBLE=1`` count as one) or a Jupyter notebook."""
    console = make_console()
    return console.is_terminal or console.is_jupyter


class _StdoutHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stdout`` is when a record arrives (pytest, notebooks and
    ``contextlib.redirect_stdout`` replace it), flushing each line."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stdout
        super().emit(record)


def step_logger() -> logging.Logger:
    """The :data:`STEP_LOGGER` logger. When logging is not configured (neither it nor the root
    logger has a handler) it gets a handler to stdout that prefixes the time, and level INFO;
    a configuration of the user's (``logging.basicConfig``, a handler on ``"siri"``) is left
    as it is and decides where the lines go."""
    logger = logging.getLogger(STEP_LOGGER)
    if not logger.hasHandlers():
        handler = _StdoutHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%Y-%m-%d %H:%M:%S"))
        logger.addHandler(handler)
        if logger.level == logging.NOTSET:
            logger.setLevel(logging.INFO)
    return logger


def step_line(m: dict[str, Any], total: int) -> str:
    """One training step's metrics as a line of text, e.g. ``step 3 (4/6) cap 16 compress
    reward 0.500 acc 0.250 len 12.3 trunc 0.12 time 1.42s``, plus ``| eval acc .. len ..
    trunc ..`` on a step that evaluated. ``m``: the step's metrics
    (``siri.train.metrics.STEP_METRICS`` keys, ``EVAL_METRICS`` ones when present); ``total``:
    the run's steps."""
    line = (f"step {m['step']} ({m['step'] + 1}/{total}) cap {m['cap']} {m['phase']} "
            f"reward {m['reward_mean']:.3f} acc {m['accuracy']:.3f} len {m['response_len_mean']:.1f} "
            f"trunc {m['truncation_rate']:.2f} time {m['time_step_s']:.2f}s")
    if "eval_accuracy" in m:
        line += (f" | eval acc {m['eval_accuracy']:.3f} len {m['eval_response_len_mean']:.1f} "
                 f"trunc {m['eval_truncation_rate']:.2f} time {m['eval_seconds']:.2f}s")
    return line


class TrainProgress:
    """A rich progress bar over training steps (a no-op when ``enabled`` is False), and with
    ``lines`` one :func:`step_line` per :meth:`step_done` to :func:`step_logger` at INFO.

    ``stage(name)`` shows what the current step is doing (rollout, reward, update, save).
    """

    def __init__(self, enabled: bool, total: int, start: int = 0, description: str = "train", *,
                 lines: bool = False):
        self.enabled = enabled
        self.lines = lines
        self._total = total
        self._logger = step_logger() if lines else None
        if enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, \
                TimeRemainingColumn

            self._bar = Progress(TextColumn(f"[bold]{description}"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.description}"),
                                 console=make_console())
            self._bar.start()
            self._task = self._bar.add_task("", total=total, completed=start)
            self._last = ""

    @classmethod
    def for_training(cls, progress: bool, total: int, start: int = 0) -> TrainProgress:
        """The trainer's report of its steps. Where stdout can show a bar
        (:func:`is_interactive`), the bar when ``progress`` (``trainer.progress``) and nothing
        otherwise; elsewhere (a log file, a pipe, SLURM or nohup output) no bar but one plain
        line per step, whatever ``progress`` says."""
        interactive = is_interactive()
        return cls(progress and interactive, total, start, lines=not interactive)

    def stage(self, name: str, step: int, cap: int, phase: str) -> None:
        if self.enabled:
            self._bar.update(self._task, description=f"step {step} cap {cap} {phase} [{name}] {self._last}")

    def step_done(self, m: dict[str, Any]) -> None:
        if self._logger is not None:
            self._logger.info(step_line(m, self._total))
        if self.enabled:
            self._last = (f"reward {m['reward_mean']:.3f} len {m['response_len_mean']:.0f} "
                          f"trunc {m['truncation_rate']:.2f}")
            self._bar.update(self._task, advance=1,
                             description=f"step {m['step']} cap {m['cap']} {m['phase']} {self._last}")

    def advance(self, text: str = "") -> None:
        """One step done, with a free-form status text."""
        if self.enabled:
            self._bar.update(self._task, advance=1, description=text)

    def close(self) -> None:
        if self.enabled:
            self._bar.stop()


def quiet_transformers() -> None:
    """No transformers progress bars ("Loading weights", "Writing model shards"): siri shows
    its own progress, and transformers' per-file load/save bars would interleave with it (the
    demo loads and saves many tiny checkpoints, several processes at once). ``siri train``,
    ``siri eval`` and ``siri demo`` call it before loading a model."""
    from transformers.utils import logging

    logging.disable_progress_bar()
