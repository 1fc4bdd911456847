"""Formatted, tokenized prompts (``PromptDataset``) and the order the trainer visits them in
(``PromptSampler``)."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from siri.data.formatting import PromptFormatter

__all__ = ["PromptExample", "PromptDataset", "PromptSampler"]

_PROGRESS_MIN_ROWS = 2000
_MASK64 = (1 << 64) - 1


@dataclass
class PromptExample:
    """One prompt, ready for the engine.

    Attributes:
        index (int): the row's position in ``LoadedRows.rows``; a stable id that keys the
            prompt's sampling seeds.
        prompt (str | list[dict]): the problem as loaded: its text, or its chat messages
            (``[{"role": str, "content": str}, ...]``) before any instruction is added.
        answer (str): the reference answer.
        text (str): the formatted model input.
        input_ids (list[int]): the token ids of ``text``.
        row (dict): the whole dataset record (every column; JSON-like values), for rewards
            that read more than the answer; empty for rows given without one.
    """

    index: int
    prompt: str | list[dict]
    answer: str
    text: str
    input_ids: list[int]
    row: dict = field(default_factory=dict)


class PromptDataset:
    """Every row formatted and tokenized once, keeping those that fit the prompt budget.

    Args:
        rows (list[dict]): ``{"prompt": str | list[dict], "answer": str, "row": dict, ...}`` per
            row (``LoadedRows.rows``; "row" is optional).
        formatter (PromptFormatter): makes each row's text and ids.
        max_prompt_tokens (int | None): rows with more prompt tokens are dropped and
            counted in ``num_too_long``; None keeps all.
        progress (bool | None): show a progress bar; default only above 2000 rows.

    Raises:
        ValueError: max_prompt_tokens < 1, or no row is left.
    """

    def __init__(self, rows: list[dict], formatter: PromptFormatter, *, max_prompt_tokens: int | None = None,
                 progress: bool | None = None):
        if max_prompt_tokens is not None and max_prompt_tokens < 1:
            raise ValueError(f"max_prompt_tokens must be >= 1 or None, got {max_prompt_tokens}")
        self.max_prompt_tokens = max_prompt_tokens
        self.num_too_long = 0
        self.examples: list[PromptExample] = []
        if progress is None:
            progress = len(rows) > _PROGRESS_MIN_ROWS
        with _Progress(progress, len(rows)) as bar:
            for index, row in enumerate(rows):
                input_ids = formatter.ids(row["prompt"])
                if max_prompt_tokens is not None and len(input_ids) > max_prompt_tokens:
                    self.num_too_long += 1
                else:
                    self.examples.append(PromptExample(index, row["prompt"], row["answer"],
                                                       formatter.text(row["prompt"]), input_ids,
                                                       row.get("row") or {}))
                bar.advance()
        if not self.examples:
            raise ValueError(f"no usable prompts: {len(rows)} rows, {self.num_too_long} too long for "
                             f"max_prompt_tokens={max_prompt_tokens}")

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, position: int) -> PromptExample:
        return self.examples[position]


class PromptSampler:
    """Epoch-wise shuffled batches of dataset positions, reproducible and resumable.

    Epoch ``e`` visits the positions in the order of a permutation drawn from a
    ``torch.Generator`` seeded with a mix of ``(seed, e)``, so any epoch's order can be
    rebuilt from the cursor alone. A batch never spans two epochs.

    Args:
        num_examples (int): the dataset's length (>= 1).
        batch_size (int): positions per batch (>= 1; at most num_examples with drop_last).
        seed (int): the shuffling seed.
        shuffle (bool): False visits positions in order every epoch.
        drop_last (bool): skip an epoch's tail shorter than batch_size; otherwise it is
            returned as a smaller last batch.

    Attributes:
        epoch (int), position (int): the cursor: the next batch starts at ``position`` in
            epoch ``epoch``'s order.
    """

    def __init__(self, num_examples: int, batch_size: int, *, seed: int = 0, shuffle: bool = True,
                 drop_last: bool = True):
        if num_examples < 1 or batch_size < 1:
            raise ValueError(f"num_examples and batch_size must be >= 1, got {num_examples} and {batch_size}")
        if drop_last and batch_size > num_examples:
            raise ValueError(f"batch_size={batch_size} > num_examples={num_examples} with drop_last: "
                             "no batch could ever be drawn")
        self.num_examples, self.batch_size = num_examples, batch_size
        self.seed, self.shuffle, self.drop_last = seed, shuffle, drop_last
        self.epoch, self.position = 0, 0
        self._order: tuple[int, list[int]] | None = None  # (epoch, permutation) cache

    def next_batch(self) -> list[int]:
        """The next batch of positions (list[int]), starting a new epoch when this one is spent."""
        remaining = self.num_examples - self.position
        if remaining <= 0 or (self.drop_last and remaining < self.batch_size):
            self.epoch, self.position = self.epoch + 1, 0
        batch = self._permutation()[self.position:self.position + self.batch_size]
        self.position += len(batch)
        return batch

    def _permutation(self) -> list[int]:
        if self._order is None or self._order[0] != self.epoch:
            if self.shuffle:
                g = torch.Generator().manual_seed(_mix(self.seed, self.epoch))
                order = torch.randperm(self.num_examples, generator=g).tolist()
            else:
                order = list(range(self.num_examples))
            self._order = (self.epoch, order)
        return self._order[1]

    def state_dict(self) -> dict:
        """The cursor and the settings it is only meaningful with (a dict of ints/bools)."""
        return {"num_examples": self.num_examples, "batch_size": self.batch_size, "seed": self.seed,
                "shuffle": self.shuffle, "drop_last": self.drop_last, "epoch": self.epoch,
                "position": self.position}

    def load_state_dict(self, d: dict) -> None:
        """Restore the cursor from ``state_dict()``. Raises ValueError when the saved
        settings differ from this sampler's (a resumed run must see the same order)."""
        mine = self.state_dict()
        changed = [k for k in ("num_examples", "batch_size", "seed", "shuffle", "drop_last") if d.get(k) != mine[k]]
        if changed:
            raise ValueError("sampler state was saved with different settings: " +
                             ", ".join(f"{k}={d.get(k)!r} (now {mine[k]!r})" for k in changed))
        epoch, position = int(d["epoch"]), int(d["position"])
        if epoch < 0 or not 0 <= position <= self.num_examples:
            raise ValueError(f"bad sampler cursor: epoch={epoch}, position={position}")
        self.epoch, self.position = epoch, position


def _mix(seed: int, epoch: int) -> int:
    """A well-mixed 64-bit generator seed per (seed, epoch) (splitmix64 finaliser)."""
    x = (seed * 0x9E3779B97F4A7C15 + (epoch + 1) * 0xBF58476D1CE4E5B9) & _MASK64
    for shift, mult in ((30, 0xBF58476D1CE4E5B9), (27, 0x94D049BB133111EB)):
        x = ((x ^ (x >> shift)) * mult) & _MASK64
    return x ^ (x >> 31)


class _Progress:
    """A rich progress bar over rows being tokenized (or nothing when disabled)."""

    def __init__(self, enabled: bool, total: int):
        self.enabled, self.total = enabled, total

    def __enter__(self):
        if self.enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            from siri.progress import make_console

            self._progress = Progress(TextColumn("tokenizing prompts"), BarColumn(), MofNCompleteColumn(),
                                      TimeElapsedColumn(), transient=True, console=make_console())
            self._progress.__enter__()
            self._task = self._progress.add_task("", total=self.total)
        return self

    def advance(self) -> None:
        if self.enabled:
            self._progress.advance(self._task)

    def __exit__(self, *exc):
        if self.enabled:
            self._progress.__exit__(*exc)
        return False


def load_prompt_dataset(data, tokenizer, records=None) -> tuple[PromptDataset, dict]:
    """The training prompts a ``DataConfig`` describes, tokenized with ``tokenizer``, and a
    report of what was read: ``source``, ``prompt_key`` and ``answer_key`` (the fields read),
    ``rows``, ``skipped_bad_rows`` (by reason), ``skipped_too_long`` (over
    ``max_prompt_tokens``) and ``usable_prompts``. ``records`` (a list of dicts or a
    ``datasets.Dataset``) replaces ``data.train``; they are read with the same keys."""
    from siri.data.formatting import PromptFormat, PromptFormatter
    from siri.data.sources import load_rows, rows_from_records

    if records is not None:
        loaded = rows_from_records(records, prompt_key=data.prompt_key, answer_key=data.answer_key,
                                   on_error=data.on_error, source="train_dataset")
    else:
        loaded = load_rows(data.train, path=data.path, split=data.split, subset=data.subset,
                           prompt_key=data.prompt_key, answer_key=data.answer_key, on_error=data.on_error)
    formatter = PromptFormatter(tokenizer, PromptFormat.from_data_config(data, source="training config"))
    dataset = PromptDataset(loaded.rows, formatter, max_prompt_tokens=data.max_prompt_tokens)
    report = {"source": loaded.source, "prompt_key": loaded.prompt_key, "answer_key": loaded.answer_key,
              "rows": len(loaded.rows), "skipped_bad_rows": dict(loaded.skipped),
              "skipped_too_long": dataset.num_too_long, "usable_prompts": len(dataset)}
    return dataset, report
