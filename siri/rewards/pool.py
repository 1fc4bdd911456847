"""Reward scoring in worker processes: ``RewardPool``, with ``default_reward_workers``, the
pool's size when the config leaves it open. One pool serves every importable, per-response
reward term of a run: each worker loads them all (``RewardPool(specs, ...)``) and each
``score(items, term=k)`` call runs term ``k`` (``siri.rewards.reward_scorer`` decides which
terms run here).

Why processes: rewards such as math-verify are pure Python (SymPy), so threads would share
one GIL and score no faster than the trainer's loop; and the per-response timeouts, ours
(``call_with_timeout``) and math-verify's own, are SIGALRM-based, which works only in a
process's main thread. Each worker runs rewards in its own main thread, so both work there.

Timeouts are enforced in two layers:

1. In the worker, each call runs under ``call_with_timeout(fn, item, timeout_s)``: a reward
   that overruns raises ``TimeoutError`` there, scores 0, and the worker carries on.
2. In the parent, each task has a hard deadline of ``timeout_s + grace_s`` from the moment
   it was sent. Layer 1 cannot stop a reward stuck in C code (a signal handler only runs
   between bytecodes), one that blocks or ignores SIGALRM, or one whose own ``signal.alarm``
   replaced or cancelled the worker's timer (math-verify does this on every parse). A worker
   past the deadline is killed (SIGKILL), its item scores 0 and is counted as a timeout, and
   a fresh worker replaces it. A worker that dies on its own is handled the same way (counted
   as a crash). The parent never blocks without a timeout: it waits on the workers' pipes and
   process sentinels with ``multiprocessing.connection.wait`` until the nearest deadline.

Workers are started by the "forkserver" method (plain fork is unsafe in a parent that runs
torch, OpenMP and gloo threads; "spawn" would import torch again for every worker). The fork
server is told to preload this module and math-verify, so ``siri`` (and torch, which its
``__init__`` imports) is imported once, in the server, and every worker, including a
replacement, is a quick fork of it. Workers receive the parent's ``sys.path`` and working
directory at their start (multiprocessing's preparation data), so a reward module found
through a path the parent added is found there too; unlike multiprocessing's default, they
do not re-run the parent's main script. Workers ignore SIGINT (the parent owns shutdown)
and, on Linux, are killed when the fork server exits, which it does when the parent dies,
so a killed trainer leaves no worker behind.

A pool is used from one thread at a time; that may be any thread (the parent needs no
signals). Under torchrun each rank has its own pool (and fork server).
"""
from __future__ import annotations

import atexit
import multiprocessing
import multiprocessing.connection
import multiprocessing.util  # noqa: F401 - imported before our atexit hook, so ours runs first
from multiprocessing import popen_forkserver, spawn
from multiprocessing.context import ForkServerProcess
import os
import signal
import time
import weakref
from collections import deque
from typing import Sequence

from siri.rewards.binding import bind_reward
from siri.rewards.loader import load_reward_fn
from siri.rewards.reward_input import as_reward_input
from siri.rewards.scoring import DEFAULT_GRACE_S, ClosingContext, ScoreItem, ScoreResult, check_timeout, score_one

__all__ = ["RewardPool", "check_workers", "default_reward_workers"]

_PRELOAD = ["siri.rewards.pool", "math_verify"]
_STARTING, _IDLE, _BUSY = "starting", "idle", "busy"


class _Worker:
    """One worker process, the parent's end of its pipe, and what it is doing."""

    __slots__ = ("process", "conn", "state", "task", "deadline")

    def __init__(self, process, conn, deadline: float):
        self.process = process
        self.conn = conn
        self.state = _STARTING
        self.task: int | None = None      # index of the item it is scoring
        self.deadline: float | None = deadline  # time.monotonic() by which it must answer


class _Call:
    """What one ``score`` call has gathered so far."""

    def __init__(self, n: int):
        self.rewards = [0.0] * n
        self.failures: list[tuple[int, str, bool, bool]] = []  # (index, description, timeout, crash)
        self.replaced_workers = 0

    def fail(self, index: int, description: str, *, timeout: bool = False, crash: bool = False) -> None:
        self.failures.append((index, description, timeout, crash))

    def result(self, seconds: float) -> ScoreResult:
        """The ``ScoreResult``, errors counted (and the first three warned) in input order,
        as the serial path does, whatever order the workers finished in."""
        result = ScoreResult(self.rewards, replaced_workers=self.replaced_workers, seconds=seconds)
        for _, description, timeout, crash in sorted(self.failures):
            result.add_error(description, timeout=timeout, crash=crash)
        return result


class RewardPool(ClosingContext):
    """Score RewardInputs (or ``(response_text, reference, finish_reason)`` items) in
    ``workers`` processes.

    Workers are started eagerly, in the constructor, which waits until every worker has
    loaded the reward, so a reward that cannot be loaded fails here, before any rollout.
    After ``close()`` a later ``score`` starts a fresh set of workers.

    Args:
        spec: the reward, ``"package.module:function"``, or a list of them (the terms
            ``score(items, term=k)`` chooses from); each worker resolves them with
            ``load_reward_fn`` and ``bind_reward`` (the spec strings are sent, not pickled
            functions).
        workers: number of worker processes, >= 1.
        timeout_s: per-item limit in seconds (> 0) enforced in the worker (SIGALRM), or None
            for no limit at all (then the parent has no deadline either).
        grace_s: extra seconds (>= 0) after ``timeout_s`` before the parent kills a worker
            that has not answered.
        start_timeout_s: seconds (> 0) a worker may take to start and load the reward.

    Raises:
        ValueError: a bad argument; or the reward cannot be loaded in a worker (the worker's
            error, or the exit code of a worker that died while loading it), in one line
            naming the spec.
    """

    def __init__(self, spec: str | Sequence[str], workers: int, timeout_s: float | None, *,
                 grace_s: float = DEFAULT_GRACE_S, start_timeout_s: float = 120.0):
        specs = [spec] if isinstance(spec, str) else list(spec) if isinstance(spec, (list, tuple)) else [spec]
        if not specs or not all(isinstance(s, str) for s in specs):
            raise ValueError(f"spec must be a 'package.module:function' string or a non-empty list of them, "
                             f"got {spec!r:.80}")
        if check_workers(workers) < 1:
            raise ValueError(f"workers must be >= 1 for a RewardPool (0 scores serially), got {workers}")
        if isinstance(grace_s, bool) or not isinstance(grace_s, (int, float)) or not 0 <= grace_s < float("inf"):
            raise ValueError(f"grace_s must be a finite number of seconds >= 0, got {grace_s!r}")
        if check_timeout(start_timeout_s, "start_timeout_s") is None:
            raise ValueError("start_timeout_s must be > 0 seconds, got None")
        self.specs, self.num_workers = specs, workers
        self.spec = specs[0] if len(specs) == 1 else ", ".join(map(str, specs))   # how errors name them
        self.timeout_s = check_timeout(timeout_s)
        self.grace_s, self.start_timeout_s = float(grace_s), float(start_timeout_s)
        self._ctx = multiprocessing.get_context("forkserver")
        self._ctx.set_forkserver_preload(_PRELOAD)
        self._workers: list[_Worker] = []
        # GC of an unclosed pool, and interpreter exit, stop the workers. The atexit hook
        # runs before multiprocessing's own, which would otherwise join them forever.
        finalizer = weakref.finalize(self, _shutdown, self._workers)
        finalizer.atexit = False
        atexit.register(finalizer)
        self._start()

    def score(self, items: Sequence[ScoreItem], term: int = 0) -> ScoreResult:
        """Score ``items`` (RewardInputs or ``(response_text, reference, finish_reason)``
        tuples) with the reward ``specs[term]``.

        One item is outstanding per worker at a time, so an item that hangs holds up only its
        own worker, until its deadline. Items are never retried.

        Returns:
            A ``ScoreResult`` with the rewards in input order. An item that raised, returned
            a non-finite or non-numeric value, or timed out in the worker scores 0 and counts
            as an error (and a timeout); one whose worker missed the deadline ``timeout_s +
            grace_s`` scores 0 and counts as a timeout, one whose worker died as a crash; both
            workers are replaced (``replaced_workers``). Errors are counted, and the first
            three warned, in input order, as on the serial path.

        Raises:
            ValueError: a replacement worker could not load the reward.
        """
        start = time.perf_counter()
        if not 0 <= term < len(self.specs):
            raise ValueError(f"term must be in [0, {len(self.specs)}), got {term}")
        tasks = [(term, as_reward_input(item)) for item in items]
        if not self._workers:
            self._start()
        call = _Call(len(tasks))
        todo = deque(range(len(tasks)))
        try:
            while todo or any(w.state == _BUSY for w in self._workers):
                for w in self._workers:
                    if w.state == _IDLE and todo:
                        self._send(w, todo, tasks, call)
                self._wait(call)
        except BaseException:
            self.close()  # answers still in flight must not reach a later call
            raise
        return call.result(time.perf_counter() - start)

    def close(self) -> None:
        """Stop every worker (SIGKILL: they hold no state) and reap them. Idempotent; also
        run when the pool is garbage-collected and at interpreter exit."""
        _shutdown(self._workers)

    @property
    def pids(self) -> list[int]:
        """Process ids of the current workers."""
        return [w.process.pid for w in self._workers]

    # ---- internals --------------------------------------------------------------------------

    def _start(self) -> None:
        """Start ``num_workers`` workers and wait until each has loaded the reward."""
        try:
            self._workers.extend(self._spawn() for _ in range(self.num_workers))
            while any(w.state == _STARTING for w in self._workers):
                self._wait(None)
        except BaseException:
            self.close()
            raise

    def _spawn(self) -> _Worker:
        parent_conn, child_conn = self._ctx.Pipe(duplex=True)
        process = _WorkerProcess(target=_worker_main, args=(self.specs, self.timeout_s, child_conn),
                                 name="siri-reward-worker")
        process.start()
        child_conn.close()  # the worker's end lives in the worker only: its death gives EOF
        return _Worker(process, parent_conn, time.monotonic() + self.start_timeout_s)

    def _send(self, w: _Worker, todo: deque, tasks: Sequence[tuple], call: _Call) -> None:
        """Send the next ``(term, RewardInput)`` task of ``todo`` to the idle worker ``w``."""
        index = todo.popleft()
        try:
            w.conn.send(tasks[index])
        except (BrokenPipeError, ConnectionResetError, EOFError):  # died while idle: not the item's fault
            todo.appendleft(index)
            self._replace(w, call)
            return
        w.state, w.task = _BUSY, index
        w.deadline = None if self.timeout_s is None else time.monotonic() + self.timeout_s + self.grace_s

    def _wait(self, call: _Call | None) -> None:
        """Wait for the next message, death or deadline among the workers, and handle it.
        ``call`` is None while starting up (no item is outstanding then)."""
        deadlines = [w.deadline for w in self._workers if w.deadline is not None]
        timeout = max(0.0, min(deadlines) - time.monotonic()) if deadlines else None
        watched = [obj for w in self._workers for obj in (w.conn, w.process.sentinel)]
        ready = set(multiprocessing.connection.wait(watched, timeout))
        now = time.monotonic()
        for w in list(self._workers):
            if w.conn in ready or w.process.sentinel in ready:
                self._receive(w, call)
            elif w.deadline is not None and now >= w.deadline:
                self._expire(w, call)

    def _receive(self, w: _Worker, call: _Call | None) -> None:
        try:
            message = w.conn.recv() if w.conn.poll() else None
        except (EOFError, OSError):
            message = None
        if message is None:
            self._died(w, call)
        elif w.state == _STARTING:
            kind, detail = message
            if kind == "load_error":
                raise ValueError(detail)
            w.state, w.deadline = _IDLE, None
        else:
            assert call is not None and w.task is not None, "a busy worker answers a task of the current call"
            reward, error, timed_out = message
            call.rewards[w.task] = reward
            if error is not None:
                call.fail(w.task, error, timeout=timed_out)
            w.state, w.task, w.deadline = _IDLE, None, None

    def _died(self, w: _Worker, call: _Call | None) -> None:
        w.process.join(1.0)
        code = w.process.exitcode
        if w.state == _STARTING:
            raise ValueError(f"reward function {self.spec!r}: the worker process exited with code {code} "
                             f"while loading it")
        if w.state == _BUSY:
            assert call is not None and w.task is not None, "a busy worker scores a task of the current call"
            call.fail(w.task, f"WorkerDied: the reward worker process exited with code {code}", crash=True)
        self._replace(w, call)

    def _expire(self, w: _Worker, call: _Call | None) -> None:
        if w.state == _STARTING:
            raise ValueError(f"reward function {self.spec!r}: a worker process did not load it within "
                             f"{self.start_timeout_s} s")
        assert call is not None and w.task is not None and self.timeout_s is not None, "only a busy worker expires"
        call.fail(w.task, f"TimeoutError: no result within timeout_s + grace_s = {self.timeout_s + self.grace_s} s; "
                  f"the worker process was killed", timeout=True)
        self._replace(w, call)

    def _replace(self, w: _Worker, call: _Call | None) -> None:
        """Kill ``w`` (if still alive), reap it, and put a new worker in its place."""
        _stop(w)
        self._workers[self._workers.index(w)] = self._spawn()
        if call is not None:
            call.replaced_workers += 1


def default_reward_workers(local_world_size: int = 1) -> int:
    """Worker processes per rank when ``reward.workers`` is null: the CPUs this process may
    run on (``os.sched_getaffinity``, else ``os.cpu_count()``) shared among the node's
    ``local_world_size`` ranks, at least 1 and at most 8."""
    if isinstance(local_world_size, bool) or not isinstance(local_world_size, int) or local_world_size < 1:
        raise ValueError(f"local_world_size must be an integer >= 1, got {local_world_size!r}")
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    return min(8, max(1, cpus // local_world_size))


def check_workers(workers: int) -> int:
    """``workers`` if it is an integer >= 0, else a one-line ValueError."""
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
        raise ValueError(f"workers must be an integer >= 0, got {workers!r}")
    return workers


class _Popen(popen_forkserver.Popen):
    """Forkserver start without re-running the parent's main module in the worker.

    multiprocessing normally re-imports the parent's ``__main__`` script (as ``__mp_main__``)
    in every child: slow for each replacement, and a script without an ``if __name__ ==
    "__main__"`` guard would start the trainer again in there. Workers need nothing from it
    (the reward is named by its spec), so the main-module entries are dropped from the data
    the child prepares itself with."""

    def _launch(self, process_obj):
        get_preparation_data = spawn.get_preparation_data

        def without_main(name):
            data = get_preparation_data(name)
            data.pop("init_main_from_path", None)
            data.pop("init_main_from_name", None)
            return data

        spawn.get_preparation_data = without_main
        try:
            super()._launch(process_obj)
        finally:
            spawn.get_preparation_data = get_preparation_data


class _WorkerProcess(ForkServerProcess):
    _Popen = staticmethod(_Popen)


def _stop(w: _Worker) -> None:
    w.conn.close()
    if w.process.exitcode is None:
        w.process.kill()
    w.process.join()
    w.process.close()


def _shutdown(workers: list[_Worker]) -> None:
    """Stop and reap ``workers`` and empty the list (shared with the pool's finalizer)."""
    while workers:
        _stop(workers.pop())


def _worker_main(specs: list[str], timeout_s: float | None, conn) -> None:
    """A worker: load the rewards, report ``("ready", pid)`` or ``("load_error", message)``,
    then answer each ``(term, item)`` received with ``score_one(fns[term], item, timeout_s)``
    until the pipe closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)    # Ctrl-C: the parent owns shutdown
    signal.signal(signal.SIGALRM, signal.SIG_IGN)   # a stray late alarm must not kill the worker
    _die_with_parent()
    try:
        fns = []
        for spec in specs:
            try:
                fns.append(bind_reward(load_reward_fn(spec), spec))
            except Exception as e:  # noqa: BLE001 - reported to the parent, which raises it
                text = str(e) if isinstance(e, ValueError) else f"reward function {spec!r}: {type(e).__name__}: {e}"
                conn.send(("load_error", " ".join(text.split())))
                return
        conn.send(("ready", os.getpid()))
        while True:
            term, item = conn.recv()
            conn.send(score_one(fns[term], item, timeout_s))  # score_one catches the reward's errors
    except (EOFError, OSError):  # the parent closed the pipe or is gone
        return


def _die_with_parent() -> None:
    """Linux: SIGKILL this worker when its parent (the fork server, which exits with the
    trainer) dies, so a worker hung in a reward does not outlive a killed trainer."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
