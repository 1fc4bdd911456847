"""Progress bars for training loops: step, cap, phase, reward, mean length, truncation rate
(or any status text)."""
from __future__ import annotations

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


class TrainProgress:
    """A rich progress bar over training steps (a no-op when ``enabled`` is False).

    ``stage(name)`` shows what the current step is doing (rollout, reward, update, save).
    """

    def __init__(self, enabled: bool, total: int, start: int = 0, description: str = "train"):
        self.enabled = enabled
        if enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, \
                TimeRemainingColumn

            self._bar = Progress(TextColumn(f"[bold]{description}"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.description}"),
                                 console=make_console())
            self._bar.start()
            self._task = self._bar.add_task("", total=total, completed=start)
            self._last = ""

    def stage(self, name: str, step: int, cap: int, phase: str) -> None:
        if self.enabled:
            self._bar.update(self._task, description=f"step {step} cap {cap} {phase} [{name}] {self._last}")

    def step_done(self, m: dict[str, Any]) -> None:
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
