"""Deterministic fault injection for the crash-safety tests.

``SIRI_FAULT=<point>:<n>`` makes the process kill itself with SIGKILL (no cleanup, no
flush, like a power cut or the OOM killer) the n-th time it reaches ``<point>``;
``<point>:<n>@<rank>`` does so only in that torchrun rank (``RANK``). Unset (the
default) it does nothing. Points: ``rollout`` (after generation, before rewards),
``update`` (gradients computed, optimizer not stepped), ``checkpoint_write`` (model files
written, marker not yet), ``checkpoint_renamed`` (checkpoint in place, old ones not yet
pruned), ``metrics_write`` (half of a metrics line written).
"""
from __future__ import annotations

import os
import signal
from typing import Callable

_reached: dict[str, int] = {}


def fault_point(name: str, before_kill: Callable[[], None] | None = None) -> None:
    """Count a visit to ``name``; SIGKILL this process if ``SIRI_FAULT`` asks for this visit."""
    spec = os.environ.get("SIRI_FAULT")
    if not spec:
        return
    spec, _, rank = spec.partition("@")
    point, _, count = spec.partition(":")
    if point != name or (rank and rank != os.environ.get("RANK", "0")):
        return
    _reached[name] = _reached.get(name, 0) + 1
    if _reached[name] == int(count or 1):
        if before_kill is not None:
            before_kill()
        os.kill(os.getpid(), signal.SIGKILL)
