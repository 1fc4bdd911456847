"""A step's responses as rows of text: written to ``RUN_DIR/rollouts/step_<t>.jsonl``
(``trainer.save_rollouts``) and shown as the W&B ``samples`` table every
``trainer.log_samples_every`` steps (``trainer.log_samples_prompts`` whole prompt groups).

A row is one response: ``step``, ``round`` (the sampling round), ``prompt_index`` (the
dataset row), ``sample`` (its place in the group, 0..G-1), ``prompt`` (the problem as loaded,
as text: :func:`prompt_text`), ``answer``, ``response`` (the decoded text), ``num_tokens``,
``finish_reason``, ``correctness``, ``reward`` and ``advantage``.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

from siri.algo.rollout_batch import Rollout
from siri.atomic_io import write_text_atomic


def prompt_text(prompt: str | Sequence[dict]) -> str:
    """A prompt as loaded, as text: a string as it is; chat messages one ``role: content``
    line each."""
    if isinstance(prompt, str):
        return prompt
    return "\n".join(f"{m.get('role', '')}: {m.get('content', '')}" for m in prompt)


def rollout_rows(step: int, sampling_round: int, examples: Sequence[Any], rollouts: Sequence[Rollout],
                 group_size: int) -> list[dict[str, Any]]:
    """One row per rollout. ``examples``: the round's prompts (``siri.data.PromptExample``:
    ``index``, ``prompt``, ``answer``); ``rollouts``: their responses, group-major
    (``group_size`` consecutive per example), scored."""
    return [{"step": step, "round": sampling_round, "prompt_index": examples[i // group_size].index,
             "sample": i % group_size, "prompt": prompt_text(examples[i // group_size].prompt),
             "answer": examples[i // group_size].answer, "response": r.text, "num_tokens": len(r.response_ids),
             "finish_reason": r.finish_reason, "correctness": r.correctness, "reward": r.reward,
             "advantage": r.advantage} for i, r in enumerate(rollouts)]


def first_groups(rows: Sequence[dict[str, Any]], prompts: int) -> list[dict[str, Any]]:
    """The rows of the first ``prompts`` prompt groups (in row order; a group is one
    ``(round, prompt_index)``), each group whole."""
    keep: set[tuple[int, int]] = set()
    out = []
    for row in rows:
        key = (row["round"], row["prompt_index"])
        if key not in keep and len(keep) < prompts:
            keep.add(key)
        if key in keep:
            out.append(row)
    return out


class RolloutSamples:
    """Collects a step's rollout rows when something needs them: the rollouts file
    (``save``) or, on steps ``t`` with ``(t + 1) % table_every == 0``, the samples table.

    Per step: :meth:`start`, :meth:`add` for each sampling round, :meth:`finish`; then
    ``table`` holds the rows to show for that step (empty when none are due).

    Args:
        run_dir: the run directory; the file goes to ``run_dir/rollouts/step_<t>.jsonl``.
        group_size: responses per prompt (``rollout.group_size``).
        save: write every step's rows (``trainer.save_rollouts``).
        table_every: steps between tables (``trainer.log_samples_every``; 0: no table).
        table_prompts: prompt groups per table (``trainer.log_samples_prompts``).
    """

    def __init__(self, run_dir: str | Path, *, group_size: int, save: bool, table_every: int, table_prompts: int):
        self.run_dir = Path(run_dir)
        self.group_size, self.save = group_size, save
        self.table_every, self.table_prompts = table_every, table_prompts
        self.table: list[dict[str, Any]] = []
        self._rows: list[dict[str, Any]] = []
        self._step = 0

    @classmethod
    def from_config(cls, config: Any, *, table: bool) -> RolloutSamples:
        """From a :class:`siri.config.Config`; ``table``: whether the samples table is shown at
        all (W&B on, and this is the rank that logs)."""
        t = config.trainer
        return cls(t.run_dir, group_size=config.rollout.group_size, save=t.save_rollouts,
                   table_every=t.log_samples_every if table else 0, table_prompts=t.log_samples_prompts)

    def table_due(self, step: int) -> bool:
        return bool(self.table_every) and (step + 1) % self.table_every == 0

    def start(self, step: int) -> None:
        self._step, self._rows, self.table = step, [], []

    def add(self, sampling_round: int, examples: Sequence[Any], rollouts: Sequence[Rollout]) -> None:
        if self.save or self.table_due(self._step):
            self._rows += rollout_rows(self._step, sampling_round, examples, rollouts, self.group_size)

    def finish(self) -> None:
        if self.save:
            directory = self.run_dir / "rollouts"
            directory.mkdir(parents=True, exist_ok=True)
            write_text_atomic(directory / f"step_{self._step}.jsonl",
                              "".join(json.dumps(row) + "\n" for row in self._rows))
        if self.table_due(self._step):
            self.table = first_groups(self._rows, self.table_prompts)
        self._rows = []
