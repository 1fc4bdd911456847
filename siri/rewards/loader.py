"""User-pluggable rewards: the ``RewardFunction`` protocol and ``load_reward_fn``."""
from __future__ import annotations

import importlib
from typing import Protocol, runtime_checkable

__all__ = ["DEFAULT_REWARD", "RewardFunction", "load_reward_fn"]

DEFAULT_REWARD = "siri.rewards.capped:capped_reward"


@runtime_checkable
class RewardFunction(Protocol):
    """The classic reward form: ``(response_text, reference, finish_reason) -> float``.

    ``response_text`` is the decoded response as cut at the step's cap, ``reference`` the
    dataset's answer field, and ``finish_reason`` the engine's "stop" or "length". It is
    called once per response. A reward may instead name the inputs it wants (``prompt``,
    ``row``, ``step``...; see ``siri.rewards.binding``) or take lists (``reward.batched``).
    Rewards run in worker processes or in the training process (``siri.rewards.reward_scorer``).
    ``capped_reward`` is the default implementation.
    """

    def __call__(self, response_text: str, reference: str, finish_reason: str) -> float: ...


def load_reward_fn(spec: str) -> RewardFunction:
    """Resolve ``"package.module:function"`` (the attribute may be dotted, ``mod:Cls.fn``)
    to a callable. Raises ValueError naming what is missing: a bad spec, a module that
    cannot be imported, an attribute that does not exist or is not callable."""
    if not isinstance(spec, str) or spec.count(":") != 1:
        raise ValueError(f"reward function must be named 'package.module:function', got {spec!r}")
    module_name, attr_path = spec.split(":")
    if not module_name or not attr_path:
        raise ValueError(f"reward function must be named 'package.module:function', got {spec!r}")
    try:
        obj = importlib.import_module(module_name)
    except ImportError as e:
        raise ValueError(f"reward function {spec!r}: cannot import module {module_name!r}: {e}") from e
    for part in attr_path.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"reward function {spec!r}: {module_name!r} has no attribute {attr_path!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ValueError(f"reward function {spec!r} is not callable (got {type(obj).__name__})")
    return obj
