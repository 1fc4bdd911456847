"""The demo's synthetic reasoning task: counting a list, with verbose traces.

A problem is "Count the letters: q f k a m." (distinct letters) and the answer is how many
there are. A trace walks the list and numbers each item (" q1 f2 k3 a4 m5"); the last number
is the answer. A skipped or doubled item makes the answer wrong, so the walk has to be right
at every step.

The tiny base model does not learn to copy the letters (its walks' letters match the
prompt's at about the chance level), but it learns to number the walk and stop at the list's
length: the walk is its counter. Whether RL finds a shorter way to count is part of what the
demo measures; the base's correct answers per tier and their lengths are in its summary.

Difficulty comes in tiers of list length (``TIERS``): the shortest correct trace grows by
2-3 tokens per item, so a hard problem's *necessary* reasoning is long. The demo puts
L_min between the medium tier's longest concise trace and the hard tier's shortest one: a
short cap alone cannot be met on hard problems without cutting needed steps, which is the
situation SIRI's expansion phases are meant for.

The *verbose* traces the base model is fine-tuned on add what R1-distilled models do:
"wait, let me re-check." loops that redo the whole count, and self-corrections (a skipped
or doubled item in the first pass, followed by a re-check that fixes it). The answer is
written as ``\\boxed{n}`` so the real reward path (answer extraction + math-verify) scores it.

Everything is a pure function of a ``random.Random``, so a seed fixes the data.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

RECHECK = " wait, let me re-check."
LETTERS = "abcdefghijklmnopqrstuvwxyz"
INSTRUCTION = "Put the answer in \\boxed{}."


#: The demo's difficulty tiers: name -> (fewest, most) list items.
TIERS: dict[str, tuple[int, int]] = {"easy": (3, 6), "medium": (7, 11), "hard": (16, 22)}


@dataclass(frozen=True)
class Problem:
    items: tuple[str, ...]
    tier: str = ""
    """The difficulty tier the problem was drawn in (a key of the tiers it was made with)."""

    @property
    def prompt(self) -> str:
        return "Count the letters: " + " ".join(self.items) + "."

    @property
    def answer(self) -> str:
        return str(len(self.items))


def make_problems(count: int, rng: random.Random, exclude: set[str] = frozenset(),
                  tiers: dict[str, tuple[int, int]] = TIERS) -> list[Problem]:
    """``count`` distinct random problems whose prompts are not in ``exclude``, the tiers in
    turn (easy, medium, hard, easy, ...), so every prefix of the list is balanced across
    tiers; the length is uniform within the tier."""
    names = list(tiers)
    problems, seen = [], set(exclude)
    while len(problems) < count:
        tier = names[len(problems) % len(names)]
        low, high = tiers[tier]
        problem = Problem(tuple(rng.sample(LETTERS, rng.randint(low, high))), tier)
        if problem.prompt not in seen:
            seen.add(problem.prompt)
            problems.append(problem)
    return problems


def _pass(problem: Problem, rng: random.Random, error_rate: float) -> tuple[str, bool]:
    """One numbered walk (" q1 f2 k3"); with probability ``error_rate`` per item the item
    is skipped or counted twice. Returns the text and whether the count came out right."""
    parts, n = [], 0
    for item in problem.items:
        repeats = 1
        if rng.random() < error_rate:
            repeats = rng.choice([0, 2])
        for _ in range(repeats):
            n += 1
            parts.append(f" {item}{n}")
    return "".join(parts), n == len(problem.items)


def verbose_trace(problem: Problem, rng: random.Random, *, max_rechecks: int = 3, error_rate: float = 0.05) -> str:
    """A response in the style of an over-thinking reasoning model.

    The first pass may skip or double an item (``error_rate`` per item); then 0 to
    ``max_rechecks`` re-check passes follow (uniformly many), each correct, and at least one
    when the first pass was wrong (the self-correction). Ends with ``\\boxed{answer}``.
    """
    text, right = _pass(problem, rng, error_rate)
    pieces = [text]
    for _ in range(rng.randint(0 if right else 1, max_rechecks)):
        pieces.append(RECHECK + _pass(problem, rng, 0.0)[0])
    return "".join(pieces) + f" \\boxed{{{problem.answer}}}"


def concise_trace(problem: Problem) -> str:
    """The shortest correct response: one walk and the answer."""
    return f"{_pass(problem, random.Random(0), 0.0)[0]} \\boxed{{{problem.answer}}}"
