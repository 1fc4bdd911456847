"""Counting the torch ops a decode step dispatches: the engine's host cost in a number that
does not depend on the machine (each op is a dispatch, an allocation and, on CUDA, a kernel
launch; a 16K-step rollout pays them 16K times)."""
from __future__ import annotations

from typing import Callable

import torch

DECODE_STEP = "siri.decode_step"


def top_level_ops(fn: Callable[[], object], annotation: str) -> float:
    """Torch ops dispatched directly inside each ``record_function(annotation)`` range while
    ``fn`` runs (ops nested in other ops are not counted), averaged over the ranges."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        fn()
    events = prof.events()
    ranges = sum(1 for e in events if e.name == annotation)
    ops = sum(1 for e in events if e.cpu_parent is not None and e.cpu_parent.name == annotation)
    return ops / max(ranges, 1)


def annotate_decode_steps(engine) -> None:
    """Marks each of ``engine``'s decode steps (forward, sampling and bookkeeping) as a
    ``DECODE_STEP`` profiler range."""
    decode = engine._decode

    def annotated(*args, **kwargs):
        with torch.profiler.record_function(DECODE_STEP):
            return decode(*args, **kwargs)

    engine._decode = annotated


def ops_per_decode_step(engine, prompts: list[list[int]], params) -> float:
    """Top-level torch ops per decode step of ``engine.generate(prompts, params)`` (run once
    untimed first, so one-time work is not counted)."""
    if not getattr(engine, "_decode_annotated", False):
        annotate_decode_steps(engine)
        engine._decode_annotated = True
    engine.generate(prompts, params)
    return top_level_ops(lambda: engine.generate(prompts, params), DECODE_STEP)
