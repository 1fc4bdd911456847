"""What a reward function is told about one response: :class:`RewardInput`.

Every scoring path (training, evaluation during training, ``siri eval``; in this process or in
the reward worker processes) hands a reward function the fields of one ``RewardInput``, by the
names the function declares (``siri.rewards.binding``). It holds plain data only, so it pickles
to the worker processes.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Collection, Sequence

__all__ = ["RewardInput", "as_reward_input"]


@dataclass(frozen=True)
class RewardInput:
    """One response to score, and what it answers.

    Attributes:
        response (str): the decoded response, as cut at the cap (special tokens skipped).
        reference (str): the dataset's reference answer.
        finish_reason (str): the engine's ``"stop"`` (ended by a stop token) or ``"length"``
            (cut at the cap).
        prompt (str | list[dict] | None): the row's prompt as given in the dataset (a string,
            or a chat message list), not the templated model input; None where unknown.
        row (dict): the whole dataset row (every field, ``prompt`` and ``answer`` included);
            empty where unknown.
        step (int | None): the training step that sampled the response; None in evaluation.
    """

    response: str
    reference: str
    finish_reason: str
    prompt: Any = None
    row: dict[str, Any] = field(default_factory=dict)
    step: int | None = None

    @classmethod
    def for_example(cls, response: str, example: Any, finish_reason: str, *, step: int | None = None) -> RewardInput:
        """The input for ``response`` to ``example``: anything with ``answer`` and, optionally,
        ``prompt`` and ``row`` (``siri.data.PromptExample``, ``siri.eval.EvalExample``)."""
        return cls(response, example.answer, finish_reason, prompt=getattr(example, "prompt", None),
                   row=dict(getattr(example, "row", None) or {}), step=step)


    def keeping(self, fields: Collection[str]) -> RewardInput:
        """This input with ``prompt`` and ``row`` emptied unless ``fields`` names them: what is
        sent to a worker process whose reward reads only ``fields``."""
        if ("prompt" in fields or self.prompt is None) and ("row" in fields or not self.row):
            return self
        return replace(self, prompt=self.prompt if "prompt" in fields else None,
                       row=self.row if "row" in fields else {})


def as_reward_input(item: RewardInput | Sequence[str]) -> RewardInput:
    """``item`` itself, or a ``(response, reference, finish_reason)`` tuple as a RewardInput
    (the form scorers took before prompts and rows were passed along)."""
    if isinstance(item, RewardInput):
        return item
    if isinstance(item, (tuple, list)) and len(item) == 3:
        return RewardInput(*item)
    raise TypeError(f"a reward item must be a RewardInput or a (response, reference, finish_reason) tuple, "
                    f"got {type(item).__name__}")
