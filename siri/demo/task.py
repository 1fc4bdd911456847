"""The demo's synthetic reasoning task: counting a list, with traces whose extra reasoning is
either necessary or harmless.

A problem is "Count the letters: q f k a m." (distinct letters) and the answer is how many
there are. A trace walks the list and numbers each item (" q1 f2 k3 a4 m5"); the last number
is the count. Difficulty comes in tiers of list length (``TIERS``), so a hard problem's walk
is long.

The traces the base model is fine-tuned on (``verbose_trace``) hold two kinds of extra
reasoning, the two SIRI's claim is about:

- **Necessary: a correction.** Items 1 to ``SLIP_FREE_ITEMS`` never slip; each later item is
  skipped or counted twice with probability ``SLIP_RATE``, so only the hard tier's lists slip.
  A walk that slipped ends on a number that is not the list's length, and is followed by
  ``CORRECTION`` and a clean walk: without it the answer would be wrong.
- **Harmless: confirmations.** Then K ~ U{0..``MAX_CONFIRMATIONS``} copies of a short
  confirmation (``confirmation(n)``: " let me double-check. yes, n."), drawn independently of
  the tier, the slip and the answer: a fixed cost that never changes the answer.

The answer is written as ``\\boxed{n}`` so the real reward path (answer extraction +
math-verify) scores it. ``siri.demo.mechanism`` reads these parts back out of a response.
Everything is a pure function of a ``random.Random``, so a seed fixes the data.
"""
from __future__ import annotations

import random
from collections.abc import Set as AbstractSet
from dataclasses import dataclass

LETTERS = "abcdefghijklmnopqrstuvwxyz"
INSTRUCTION = "Put the answer in \\boxed{}."
CORRECTION = " wait, I miscounted. again:"
CONFIRMATION_HEAD = " let me double-check. yes,"
#: Items 1..SLIP_FREE_ITEMS of a walk never slip; each later one slips with SLIP_RATE.
SLIP_FREE_ITEMS = 12
SLIP_RATE = 0.08
MAX_CONFIRMATIONS = 3

#: The demo's difficulty tiers: name -> (fewest, most) list items.
TIERS: dict[str, tuple[int, int]] = {"easy": (3, 6), "medium": (7, 11), "hard": (16, 22)}


def confirmation(count: int | str) -> str:
    """One harmless confirmation of the count: ``" let me double-check. yes, 7."``."""
    return f"{CONFIRMATION_HEAD} {count}."


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


def make_problems(count: int, rng: random.Random, exclude: AbstractSet[str] = frozenset(),
                  tiers: dict[str, tuple[int, int]] = TIERS) -> list[Problem]:
    """``count`` distinct random problems whose prompts are not in ``exclude``, the tiers in
    turn (easy, medium, hard, easy, ...), so every prefix of the list is balanced across
    tiers; the length is uniform within the tier."""
    names = list(tiers)
    problems: list[Problem] = []
    seen = set(exclude)
    while len(problems) < count:
        tier = names[len(problems) % len(names)]
        low, high = tiers[tier]
        problem = Problem(tuple(rng.sample(LETTERS, rng.randint(low, high))), tier)
        if problem.prompt not in seen:
            seen.add(problem.prompt)
            problems.append(problem)
    return problems


def walk(problem: Problem, rng: random.Random | None = None, *, slip_rate: float = SLIP_RATE,
         slip_free: int = SLIP_FREE_ITEMS) -> tuple[str, int]:
    """One numbered walk (" q1 f2 k3"); each item after the first ``slip_free`` is skipped or
    counted twice with probability ``slip_rate`` (``rng`` None: a clean walk). Returns the text
    and the count it ends on (the list's length when it did not slip)."""
    parts, n = [], 0
    for position, item in enumerate(problem.items, start=1):
        repeats = 1
        if rng is not None and position > slip_free and rng.random() < slip_rate:
            repeats = rng.choice([0, 2])
        for _ in range(repeats):
            n += 1
            parts.append(f" {item}{n}")
    return "".join(parts), n


def slipped_walk(problem: Problem, rng: random.Random) -> str:
    """A first walk that certainly slipped (one item after the slip-free ones skipped or doubled):
    the prefix the base-model gates force. Needs a list longer than ``SLIP_FREE_ITEMS``."""
    if len(problem.items) <= SLIP_FREE_ITEMS:
        raise ValueError(f"a walk of {len(problem.items)} items cannot slip (items 1-{SLIP_FREE_ITEMS} never do)")
    at = rng.randint(SLIP_FREE_ITEMS + 1, len(problem.items))
    parts, n = [], 0
    for position, item in enumerate(problem.items, start=1):
        for _ in range(rng.choice([0, 2]) if position == at else 1):
            n += 1
            parts.append(f" {item}{n}")
    return "".join(parts)


def verbose_trace(problem: Problem, rng: random.Random, *, slip_rate: float = SLIP_RATE,
                  max_confirmations: int = MAX_CONFIRMATIONS) -> str:
    """A response in the style of an over-thinking reasoning model: a walk that may slip; after
    a slip ``CORRECTION`` and a clean walk; K ~ U{0..max_confirmations} confirmations of the
    count (drawn independently of everything else); ``\\boxed{answer}``."""
    text, count = walk(problem, rng, slip_rate=slip_rate)
    pieces = [text]
    if count != len(problem.items):
        pieces.append(CORRECTION + walk(problem)[0])
    confirmations = rng.randint(0, max_confirmations)
    pieces += [confirmation(problem.answer)] * confirmations
    return "".join(pieces) + f" \\boxed{{{problem.answer}}}"


def concise_trace(problem: Problem) -> str:
    """The shortest correct response: one clean walk and the answer."""
    return f"{walk(problem)[0]} \\boxed{{{problem.answer}}}"
