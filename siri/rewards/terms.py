"""A run's reward as a weighted sum of terms: :class:`RewardTerm` and :class:`RewardTerms`.

``reward.fn`` is the one-term shorthand; ``reward.fns`` lists several terms::

    reward:
      fns:
        - {fn: "my_rewards:correct", weight: 1.0, correctness: true}
        - {fn: "my_rewards:format_ok", weight: 0.2, name: format}
        - {fn: "my_rewards:judge", weight: 0.5, batched: true}

The reward of a response is ``sum(weight_k * score_k)``; each term's mean score is logged as
``reward_term/<name>``. Exactly one term decides correctness (``correctness: true``; by
default the first): its own score, unweighted, is what ``siri.rewards.is_correct`` reads for
``accuracy``, the dynamic-sampling filter, Kimi's length reward and evaluation.

A term names its function ``"module:function"`` (run in the reward worker processes when
``reward.workers >= 1``) or, from Python, is the callable itself (run in the training
process). A batched term (``batched: true``) is called once per scoring call with lists and
always runs in the training process (``siri.rewards.reward_scorer``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, Callable

from siri.rewards.binding import BoundReward, bind_reward
from siri.rewards.loader import DEFAULT_REWARD, load_reward_fn

__all__ = ["RewardTerm", "RewardTerms", "TERM_KEYS"]

TERM_KEYS = ("fn", "weight", "batched", "correctness", "name")
"""The keys of one entry of ``reward.fns``."""


@dataclass(frozen=True)
class RewardTerm:
    """One term of the reward.

    Attributes:
        fn: ``"package.module:function"``, or the callable itself (any form
            ``siri.rewards.binding`` accepts).
        weight: multiplies the term's score in the sum (finite).
        batched: the function takes lists and returns one score per response.
        correctness: this term's score decides whether a response is correct.
        name: the term's name in the metrics (``reward_term/<name>``); None: the function's.
    """

    fn: str | Callable[..., Any]
    weight: float = 1.0
    batched: bool = False
    correctness: bool = False
    name: str | None = None

    @property
    def importable(self) -> bool:
        """Named by ``"module:function"``, so worker processes can load it."""
        return isinstance(self.fn, str)

    def bound(self) -> BoundReward:
        """The function, loaded and bound (ValueError: it cannot be; the message names it)."""
        if isinstance(self.fn, str):
            return bind_reward(load_reward_fn(self.fn), self.fn)
        return bind_reward(self.fn, self.name)


@dataclass(frozen=True)
class RewardTerms:
    """A run's reward terms, each named, with the one that decides correctness.

    Attributes:
        terms: the terms in order, ``name`` filled in and unique.
        correctness_index: the index of the term that decides correctness.
        report_terms: log each term's mean (``reward_term/<name>``): true for a list of terms
            (``reward.fns``, or a list handed over from Python), false for the shorthand.
    """

    terms: tuple[RewardTerm, ...]
    correctness_index: int = 0
    report_terms: bool = False

    @property
    def names(self) -> list[str]:
        return [str(t.name) for t in self.terms]

    @property
    def correctness_term(self) -> RewardTerm:
        return self.terms[self.correctness_index]

    @classmethod
    def from_config(cls, reward_config: Any, override: Any = None) -> RewardTerms:
        """The terms ``reward.fn`` / ``reward.batched`` or ``reward.fns`` describe, or ``override``.

        Args:
            reward_config: a :class:`siri.config.RewardConfig`.
            override: instead of the config's functions (``Trainer(config, reward_fn=...)``):
                a callable, a ``"module:function"`` string, a :class:`RewardTerm`, a
                ``RewardTerms``, or a list whose entries are any of those or
                ``(callable, weight)`` pairs.

        Every function is loaded and its signature checked here, so a bad term fails before
        any model is loaded.

        Raises:
            ValueError: naming the key (``'reward.fns[1].weight'``...) and what was expected.
        """
        if override is not None:
            return cls.of(override)
        fns = reward_config.fns
        if not fns:
            return cls._checked([RewardTerm(reward_config.fn, batched=reward_config.batched)], "reward.fn", False)
        if not isinstance(fns, (list, tuple)):
            raise ValueError(f"'reward.fns' must be a list of terms ({{fn: module:function, weight: ...}}), "
                             f"got {fns!r:.80}")
        if reward_config.fn != DEFAULT_REWARD or reward_config.batched:
            raise ValueError(f"set either 'reward.fn' (one term) or 'reward.fns' (a list of terms), not both: put "
                             f"{reward_config.fn!r} in the list and leave 'reward.fn' at its default "
                             f"({DEFAULT_REWARD}){' and reward.batched false' if reward_config.batched else ''}")
        return cls._checked([_term_of_entry(entry, f"reward.fns[{k}]") for k, entry in enumerate(fns)],
                            "reward.fns", True)

    @classmethod
    def of(cls, reward: Any) -> RewardTerms:
        """Terms from Python: ``reward`` as in :meth:`from_config`'s ``override``."""
        if isinstance(reward, RewardTerms):
            return reward
        if isinstance(reward, (list, tuple)) and not _is_pair(reward):
            if not reward:
                raise ValueError("reward_fn: an empty list of reward functions")
            return cls._checked([_term_of_object(r, f"reward_fn[{k}]") for k, r in enumerate(reward)],
                                "reward_fn", True)
        return cls._checked([_term_of_object(reward, "reward_fn")], "reward_fn", False)

    @classmethod
    def _checked(cls, terms: list[RewardTerm], key: str, report_terms: bool) -> RewardTerms:
        """Name the terms, pick the correctness term and bind every function (so a bad one
        fails now); errors name ``key``."""
        deciding = [k for k, t in enumerate(terms) if t.correctness]
        if len(deciding) > 1:
            raise ValueError(f"'{key}': only one term may set correctness: true, got terms {deciding}")
        named: list[RewardTerm] = []
        for k, term in enumerate(terms):
            where = f"{key}[{k}]" if report_terms else key
            try:
                term.bound()
            except ValueError as e:
                raise ValueError(f"'{where}': {e}") from e
            name = term.name or _default_name(term.fn, k)
            if name in {t.name for t in named}:
                raise ValueError(f"'{key}': two terms are named {name!r}; give them distinct names (name: ...)")
            named.append(replace(term, name=name))
        return cls(tuple(named), deciding[0] if deciding else 0, report_terms)


def _term_of_entry(entry: Any, key: str) -> RewardTerm:
    """One ``reward.fns`` entry (a mapping with :data:`TERM_KEYS`, or a bare spec string)."""
    if isinstance(entry, str):
        entry = {"fn": entry}
    if not isinstance(entry, dict):
        raise ValueError(f"'{key}' must be a mapping with keys {list(TERM_KEYS)}, got {entry!r:.80}")
    unknown = [k for k in entry if k not in TERM_KEYS]
    if unknown:
        raise ValueError(f"'{key}': unknown key {unknown[0]!r}; expected some of {list(TERM_KEYS)}")
    if not isinstance(entry.get("fn"), str):
        raise ValueError(f"'{key}.fn' must be a 'package.module:function' string, got {entry.get('fn')!r}")
    for flag in ("batched", "correctness"):
        if not isinstance(entry.get(flag, False), bool):
            raise ValueError(f"'{key}.{flag}' must be true or false, got {entry[flag]!r}")
    name = entry.get("name")
    if name is not None and (not isinstance(name, str) or not name.strip()):
        raise ValueError(f"'{key}.name' must be a non-empty string or null, got {name!r}")
    return RewardTerm(entry["fn"], _weight(entry.get("weight", 1.0), f"{key}.weight"),
                      entry.get("batched", False), entry.get("correctness", False), name)


def _term_of_object(reward: Any, key: str) -> RewardTerm:
    """A term from a Python object: a RewardTerm, a spec, a callable, or ``(callable, weight)``."""
    if isinstance(reward, RewardTerm):
        return replace(reward, weight=_weight(reward.weight, f"{key}.weight"))
    if _is_pair(reward):
        fn, weight = reward
        return RewardTerm(fn, _weight(weight, f"{key} weight"))
    if isinstance(reward, str) or callable(reward):
        return RewardTerm(reward)
    raise ValueError(f"'{key}' must be a callable, a 'module:function' string, a RewardTerm or a (callable, weight) "
                     f"pair, got {type(reward).__name__}")


def _is_pair(value: Any) -> bool:
    return (isinstance(value, tuple) and len(value) == 2 and (callable(value[0]) or isinstance(value[0], str))
            and isinstance(value[1], (int, float)) and not isinstance(value[1], bool))


def _weight(value: Any, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"'{key}' must be a finite number, got {value!r}")
    return float(value)


def _default_name(fn: str | Callable[..., Any], index: int) -> str:
    """The function's own name (``"mod:Cls.score"`` gives ``score``); ``term<index>`` for a
    lambda or a nameless callable."""
    if isinstance(fn, str):
        return fn.rsplit(":", 1)[-1].rsplit(".", 1)[-1]
    name = getattr(fn, "__name__", None) or ""
    return name if name.isidentifier() else f"term{index}"

