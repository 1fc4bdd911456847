"""Calling a reward function with the inputs it asks for, by name.

A reward function declares what it wants to see in its signature:

- the response: its first positional parameter (any name), or a parameter named
  ``response``, ``completion`` or ``response_text``;
- any of ``prompt``, ``reference``, ``finish_reason``, ``row`` and ``step``
  (:class:`siri.rewards.reward_input.RewardInput`'s fields), by those names;
- ``**kwargs`` receives every one of those it did not name.

The older form ``fn(text, reference, finish_reason)``, three positional parameters whose
second and third names are free, keeps its meaning: they get the reference and the finish
reason in that order. A parameter with a default that is none of the names above keeps its
default. Any other parameter is an error when the function is bound (at config validation,
before any model is loaded), naming it and the allowed names.

:func:`bind_reward` inspects the signature once; the :class:`BoundReward` it returns calls the
function with one :class:`RewardInput` (``reward(item)``) or, for a batched reward, with one
list per declared name (``reward.call_batch(items)``).
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from siri.rewards.reward_input import RewardInput

__all__ = ["INPUT_NAMES", "RESPONSE_NAMES", "BoundReward", "bind_reward"]

INPUT_NAMES = ("prompt", "reference", "finish_reason", "row", "step")
"""The inputs a reward function may ask for by name, besides the response."""

RESPONSE_NAMES = ("response", "completion", "response_text")
"""Names that mark a parameter as the response wherever it stands."""

_POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
_LEGACY = ("response", "reference", "finish_reason")


@dataclass(frozen=True)
class BoundReward:
    """A reward function and how to call it.

    Attributes:
        fn: the function.
        name: how errors name it (its ``"module:function"`` spec, or its ``__name__``).
        args: the RewardInput fields passed positionally, in order (``"response"`` for the
            response).
        kwargs: ``(parameter name, RewardInput field)`` pairs passed by keyword.
    """

    fn: Callable[..., Any]
    name: str
    args: tuple[str, ...]
    kwargs: tuple[tuple[str, str], ...]

    def __call__(self, item: RewardInput) -> Any:
        """``fn`` on one response; returns what ``fn`` returns (a float, unchecked)."""
        return self.fn(*(getattr(item, f) for f in self.args), **{p: getattr(item, f) for p, f in self.kwargs})

    def call_batch(self, items: Sequence[RewardInput]) -> Any:
        """``fn`` once on all of ``items``: each declared input is a list with one entry per
        item, in order. Returns what ``fn`` returns (a list of floats, unchecked)."""
        def column(f: str) -> list[Any]:
            return [getattr(item, f) for item in items]
        return self.fn(*(column(f) for f in self.args), **{p: column(f) for p, f in self.kwargs})

    @property
    def inputs(self) -> tuple[str, ...]:
        """The RewardInput fields the function receives."""
        return self.args + tuple(f for _, f in self.kwargs)


def bind_reward(fn: Callable[..., Any], name: str | None = None) -> BoundReward:
    """How to call ``fn`` (see the module docstring), from its signature.

    Args:
        fn: a reward function (a function, a bound method, an object with ``__call__``, a
            ``functools.partial``...). A callable whose signature cannot be inspected (some
            builtins) is called in the older form ``fn(response, reference, finish_reason)``.
        name: how error messages name it (default: its ``__name__``).

    Returns:
        A :class:`BoundReward`.

    Raises:
        ValueError: ``fn`` is not callable, takes no response parameter, or has a parameter
            without a default that is none of the names it can be given (named in the message).
    """
    name = name or getattr(fn, "__name__", None) or type(fn).__name__
    if not callable(fn):
        raise ValueError(f"reward function {name!r} is not callable (got {type(fn).__name__})")
    if isinstance(fn, BoundReward):
        return fn
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return BoundReward(fn, name, _LEGACY, ())
    var_keyword = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params)
    params = [p for p in params if p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)]
    sources = _legacy_sources(params) or _named_sources(params, name)
    args: list[str] = []
    kwargs: list[tuple[str, str]] = []
    positional_open = True     # positional-only parameters can be given only up to the first skipped one
    for p in params:
        source = sources.get(p.name)
        if source is None:
            if p.default is inspect.Parameter.empty:
                raise ValueError(_unknown_parameter(name, p.name))
            positional_open = positional_open and p.kind is not inspect.Parameter.POSITIONAL_ONLY
        elif p.kind is inspect.Parameter.POSITIONAL_ONLY:
            if not positional_open:
                raise ValueError(f"reward function {name!r}: its positional-only parameter {p.name!r} follows one "
                                 f"siri leaves at its default, so it cannot be given")
            args.append(source)
        else:
            kwargs.append((p.name, source))
    if var_keyword:
        given = set(args) | {f for _, f in kwargs}
        kwargs += [(f, f) for f in INPUT_NAMES if f not in given and f not in {p.name for p in params}]
    return BoundReward(fn, name, tuple(args), tuple(kwargs))


def _legacy_sources(params: list[inspect.Parameter]) -> dict[str, str] | None:
    """The older form's parameter -> input map, when ``params`` are in that form: at least three
    positional parameters, the first not named like another input, the second and third free
    names (or exactly ``reference`` / ``finish_reason``), at least one of them free."""
    positional = [p for p in params if p.kind in _POSITIONAL][:3]
    if len(positional) < 3 or positional[0].name in INPUT_NAMES:
        return None
    known = set(INPUT_NAMES) | set(RESPONSE_NAMES)
    second, third = positional[1].name, positional[2].name
    if second in known - {"reference"} or third in known - {"finish_reason"}:
        return None
    if second == "reference" and third == "finish_reason":
        return None   # the names say it; bound by name, with any further named inputs
    sources = dict(zip((p.name for p in positional), _LEGACY))
    sources.update({p.name: p.name for p in params[3:] if p.name in INPUT_NAMES})
    return sources


def _named_sources(params: list[inspect.Parameter], name: str) -> dict[str, str]:
    """Parameter -> input by name; the response is the parameter named like one, else the first
    positional parameter not named like another input."""
    response = next((p for p in params if p.name in RESPONSE_NAMES), None)
    if response is None:
        response = next((p for p in params if p.kind in _POSITIONAL and p.name not in INPUT_NAMES), None)
    if response is None:
        raise ValueError(f"reward function {name!r} takes no response: give it a first positional parameter "
                         f"(any name) or one named {' / '.join(RESPONSE_NAMES)}")
    sources = {p.name: p.name for p in params if p.name in INPUT_NAMES}
    sources[response.name] = "response"
    return sources


def _unknown_parameter(name: str, parameter: str) -> str:
    return (f"reward function {name!r} has a parameter {parameter!r} that siri cannot fill: name it one of "
            f"{', '.join(INPUT_NAMES)} (the response is the first positional parameter, or one named "
            f"{' / '.join(RESPONSE_NAMES)}), or give it a default; the older form takes exactly "
            f"(response, reference, finish_reason) positionally")
