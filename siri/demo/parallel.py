"""Independent demo jobs (training runs, evaluations) in parallel processes.

The demo's model is tiny: one training run keeps about one core busy, so on a small machine
several runs side by side, one thread each, finish sooner than the same runs one after the
other with every thread. Each job runs in a fresh ``spawn`` process (no state inherited from
the parent, as with fork and torch threads) with ``torch.set_num_threads(1)``, so its numbers
do not depend on how many jobs run at once.
"""
from __future__ import annotations

import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any, Callable

from siri.progress import quiet_transformers


def default_jobs(num_tasks: int) -> int:
    """One job per available core, at most one per task."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(cores, num_tasks))


def _worker_init() -> None:
    import torch

    torch.set_num_threads(1)
    quiet_transformers()


def _timed(fn: Callable[..., Any], args: tuple) -> tuple[Any, float]:
    start = time.perf_counter()
    return fn(*args), time.perf_counter() - start


def run_jobs(fn: Callable[..., Any], tasks: dict[str, tuple], jobs: int,
             on_done: Callable[[str, float], None] | None = None) -> dict[str, Any]:
    """``{name: fn(*args)}`` for ``tasks = {name: args}``: in this process, one after the other,
    when ``jobs == 1`` (progress bars stay visible); otherwise in ``jobs`` spawned
    single-threaded processes. ``fn`` must be a module-level function (it is pickled).
    ``on_done(name, seconds)`` is called as each task finishes. An exception in a task is
    raised here, after the running tasks are cancelled."""
    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}")
    results: dict[str, Any] = {}
    if jobs == 1:
        for name, args in tasks.items():
            results[name], seconds = _timed(fn, args)
            if on_done:
                on_done(name, seconds)
        return results
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=jobs, mp_context=context, initializer=_worker_init) as pool:
        futures = {pool.submit(_timed, fn, args): name for name, args in tasks.items()}
        try:
            for future in as_completed(futures):
                results[futures[future]], seconds = future.result()
                if on_done:
                    on_done(futures[future], seconds)
        except BaseException:
            for future in futures:
                future.cancel()
            raise
    return {name: results[name] for name in tasks}
