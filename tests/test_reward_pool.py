"""Reward scoring (siri.rewards.scoring, siri.rewards.pool): the serial path, the process
pool's results (same as serial, in order), and its handling of rewards that raise, hang
(interruptibly or not) or kill their process; keyword rewards and several terms in one pool;
bad specs and arguments; shutdown."""
import gc
import multiprocessing
import os
import signal
import time
import warnings

import pytest

import pool_reward_fns
from siri.rewards.capped import capped_reward
from siri.rewards.pool import RewardPool, default_reward_workers
from siri.rewards.reward_input import RewardInput
from siri.rewards.reward_scorer import RewardScorer, make_scorer
from siri.rewards.scoring import call_with_timeout, score_serially

SCRIPTED = "pool_reward_fns:scripted"
TIMEOUT_S, GRACE_S = 0.5, 0.5


def items_of(texts, reference="ref", finish_reason="stop"):
    return [(t, reference, finish_reason) for t in texts]


def ok(text: str) -> float:
    """What ``scripted`` gives a well-behaved item made by ``items_of(text)``."""
    return pool_reward_fns.length_code(text, "ref", "stop")


def child_pids() -> set[int]:
    return {c.pid for c in multiprocessing.active_children()}


def alive(pid: int) -> bool:
    """Whether a process with this id exists (a zombie counts: it was not reaped)."""
    return os.path.exists(f"/proc/{pid}")


@pytest.fixture(scope="module")
def pool():
    """Two workers running ``scripted``, shared by the tests that leave it healthy."""
    with RewardPool(SCRIPTED, 2, TIMEOUT_S, grace_s=GRACE_S) as p:
        yield p


# ---- the serial path ------------------------------------------------------------------------

def test_call_with_timeout():
    assert call_with_timeout(divmod, (7, 2), 1.0) == (3, 1)
    assert call_with_timeout(divmod, (7, 2), None) == (3, 1)
    handler = signal.getsignal(signal.SIGALRM)
    start = time.monotonic()
    with pytest.raises(TimeoutError, match="longer than 0.2 s"):
        call_with_timeout(time.sleep, (5,), 0.2)
    assert time.monotonic() - start < 2
    assert signal.getsignal(signal.SIGALRM) is handler
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)


def test_serial_errors_score_zero_counted_and_first_three_warned():
    texts = ["a", "raise", "bb", "nan", "text", "raise", "sleep", "ccc"]
    with pytest.warns(UserWarning) as record:
        result = score_serially(pool_reward_fns.scripted, items_of(texts), 0.3)
    expected = [ok(t) for t in texts]
    failed = {1, 3, 4, 5, 6}
    assert result.rewards == [0.0 if i in failed else e for i, e in enumerate(expected)]
    assert (result.errors, result.timeouts, result.crashes, result.replaced_workers) == (5, 1, 0, 0)
    assert [str(w.message) for w in record] == [
        "reward function failed (RuntimeError: broken reward); the response scores 0",
        "reward function failed (ValueError: reward function returned nan); the response scores 0",
        "reward function failed (TypeError: reward function returned str '0.5', not a number); "
        "the response scores 0"]
    assert len(result.error_samples) == 3


# ---- the pool: results ----------------------------------------------------------------------

def test_pool_preserves_order_and_matches_serial(pool):
    texts = ["pid"] * 4 + [f"response {i} " * (i % 7) for i in range(400)]
    items = [(t, f"ref{i % 3}", "stop" if i % 2 else "length") for i, t in enumerate(texts)]
    result = pool.score(items)
    serial = score_serially(pool_reward_fns.scripted, items[4:], None)
    assert result.rewards[4:] == serial.rewards
    assert (result.errors, result.timeouts, result.crashes, result.replaced_workers) == (0, 0, 0, 0)
    assert set(result.rewards[:4]) == set(map(float, pool.pids)), "both workers take items"


def test_pool_counts_errors_like_serial(pool):
    items = items_of(["a", "raise", "bb", "nan", "text", "raise", "ccc"])
    with pytest.warns(UserWarning) as record:
        result = pool.score(items)
    with pytest.warns(UserWarning):
        serial = score_serially(pool_reward_fns.scripted, items, TIMEOUT_S)
    assert result.rewards == serial.rewards
    assert result.error_samples == serial.error_samples
    assert (result.errors, result.timeouts, result.crashes, result.replaced_workers) == (4, 0, 0, 0)
    assert len(record) == 3


def test_pool_gives_capped_reward_the_same_values_as_serial():
    items = [(r"so the answer is \boxed{42}", "42", "stop"),
             (r"\boxed{\frac{1}{2}}", "0.5", "stop"),
             (r"\boxed{\frac{1}{3}}", "0.5", "stop"),
             (r"\boxed{x^2+2x+1}", "(x+1)^2", "stop"),
             (r"\boxed{42}", "42", "length"),
             ("no box at all", "7", "stop"),
             (r"\boxed{\begin{pmatrix}1&2\\3&4\end{pmatrix}}", r"\begin{pmatrix}1&2\\3&4\end{pmatrix}", "stop")]
    with RewardPool("siri.rewards.capped:capped_reward", 2, 20.0) as p:
        result = p.score(items)
    assert result.rewards == score_serially(capped_reward, items, 20.0).rewards
    assert result.rewards[:3] == [1.0, 1.0, 0.0] and result.errors == 0


def test_pool_is_reusable_across_calls(pool):
    for n in (1, 50, 7):
        items = items_of([str(i) * (i % 5) for i in range(n)], reference=str(n))
        assert pool.score(items).rewards == score_serially(pool_reward_fns.length_code, items, None).rewards
    assert pool.score([]).rewards == []


# ---- the pool: hangs and crashes ------------------------------------------------------------

def test_reward_past_its_timeout_scores_zero_and_the_worker_carries_on():
    with RewardPool(SCRIPTED, 1, TIMEOUT_S, grace_s=2.0) as p:
        pid = p.pids[0]
        start = time.monotonic()
        with pytest.warns(UserWarning, match="TimeoutError"):
            result = p.score(items_of(["a", "sleep", "bb"]))
        elapsed = time.monotonic() - start
        assert result.rewards == [ok("a"), 0.0, ok("bb")]
        assert (result.errors, result.timeouts, result.crashes, result.replaced_workers) == (1, 1, 0, 0)
        assert TIMEOUT_S <= elapsed < TIMEOUT_S + 2.0, "the worker's SIGALRM stopped the 30 s sleep"
        assert p.pids == [pid]


@pytest.mark.parametrize("kind", ["masked", "ignored"])
def test_reward_that_sigalrm_cannot_stop_is_killed_at_the_deadline(kind):
    with RewardPool(SCRIPTED, 1, TIMEOUT_S, grace_s=GRACE_S) as p:
        pid = p.pids[0]
        start = time.monotonic()
        with pytest.warns(UserWarning, match="worker process was killed"):
            result = p.score(items_of(["a", kind, "bb", "pid"]))
        elapsed = time.monotonic() - start
        assert result.rewards[:3] == [ok("a"), 0.0, ok("bb")]
        assert (result.errors, result.timeouts, result.crashes, result.replaced_workers) == (1, 1, 0, 1)
        assert TIMEOUT_S + GRACE_S <= elapsed < TIMEOUT_S + GRACE_S + 3.0
        assert result.rewards[3] == p.pids[0] != pid
        assert not alive(pid)


@pytest.mark.parametrize("kind, code", [("exit", 1), ("segfault", -signal.SIGSEGV)])
def test_worker_that_dies_is_counted_as_a_crash_and_replaced(kind, code):
    texts = [f"r{i}" for i in range(20)]
    texts[7] = kind
    with RewardPool(SCRIPTED, 2, TIMEOUT_S, grace_s=GRACE_S) as p:
        with pytest.warns(UserWarning, match=f"exited with code {code}"):
            result = p.score(items_of(texts))
        assert (result.errors, result.timeouts, result.crashes, result.replaced_workers) == (1, 0, 1, 1)
        expected = [0.0 if t == kind else ok(t) for t in texts]
        assert result.rewards == expected
        again = p.score(items_of(["xyz"] * 5))
        assert again.rewards == [ok("xyz")] * 5 and again.replaced_workers == 0


# ---- bad specs and arguments ----------------------------------------------------------------

@pytest.mark.parametrize("spec, needle", [
    ("pool_reward_fns:missing", "has no attribute 'missing'"),
    ("pool_reward_fns:NOT_CALLABLE", "is not callable"),
    ("no_such_module_zz:fn", "cannot import module 'no_such_module_zz'"),
    ("no colon", "must be named 'package.module:function'"),
])
def test_unloadable_spec_is_a_one_line_value_error(spec, needle):
    before = child_pids()
    with pytest.raises(ValueError) as info:
        RewardPool(spec, 2, TIMEOUT_S)
    assert needle in str(info.value) and "\n" not in str(info.value)
    assert repr(spec) in str(info.value)
    assert child_pids() <= before


@pytest.mark.parametrize("body, needle", [
    ("import os\nos._exit(3)\n", "exited with code 3 while loading it"),
    ("raise RuntimeError('no GPU here\\nat all')\n", "RuntimeError: no GPU here at all"),
])
def test_reward_module_that_fails_at_import(tmp_path, monkeypatch, body, needle):
    """Also checks that workers see a sys.path entry added after the fork server started."""
    (tmp_path / "fails_at_import.py").write_text(body)
    monkeypatch.syspath_prepend(str(tmp_path))
    before = child_pids()
    with pytest.raises(ValueError) as info:
        RewardPool("fails_at_import:fn", 1, TIMEOUT_S)
    assert needle in str(info.value) and "'fails_at_import:fn'" in str(info.value)
    assert "\n" not in str(info.value)
    assert child_pids() <= before


@pytest.mark.parametrize("make, needle", [
    (lambda: make_scorer(SCRIPTED, -1, 1.0), "workers must be an integer >= 0, got -1"),
    (lambda: make_scorer(SCRIPTED, 1.5, 1.0), "workers must be an integer >= 0, got 1.5"),
    (lambda: make_scorer(SCRIPTED, 0, 0), "timeout_s must be > 0 seconds or None"),
    (lambda: make_scorer(SCRIPTED, 2, -1.0), "timeout_s must be > 0 seconds or None"),
    (lambda: make_scorer(SCRIPTED, 2, float("nan")), "timeout_s must be > 0 seconds or None"),
    (lambda: make_scorer(SCRIPTED, 2, 1.0, grace_s=-1), "grace_s must be a finite number of seconds >= 0"),
    (lambda: RewardPool(SCRIPTED, 0, 1.0), "workers must be >= 1 for a RewardPool"),
    (lambda: RewardPool(SCRIPTED, 1, 1.0, start_timeout_s=0), "start_timeout_s must be > 0 seconds"),
    (lambda: default_reward_workers(0), "local_world_size must be an integer >= 1, got 0"),
])
def test_bad_arguments(make, needle):
    with pytest.raises(ValueError, match=needle):
        make()


def test_default_reward_workers(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(64)))
    assert [default_reward_workers(n) for n in (1, 8, 16, 100)] == [8, 8, 4, 1]
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2})
    assert default_reward_workers() == 3


def test_make_scorer_serial_and_pool_agree():
    items = items_of(["a", "raise", "bbb"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with make_scorer(SCRIPTED, 0, TIMEOUT_S) as serial, make_scorer(SCRIPTED, 2, TIMEOUT_S) as pooled:
            assert isinstance(serial, RewardScorer) and isinstance(pooled, RewardScorer)
            assert (serial.placements, serial.pool, pooled.placements) == (["in-process"], None, ["pool"])
            a, b = serial.score(items), pooled.score(items)
            assert (a.rewards, a.errors, a.error_samples) == (b.rewards, b.errors, b.error_samples)
            assert a.rewards == [ok("a"), 0.0, ok("bbb")]
            pids = pooled.pool.pids
    assert not any(map(alive, pids))


# ---- keyword rewards and several terms in the pool -----------------------------------------

def keyword_items():
    return [RewardInput(f"r{'x' * i}", str(i), "stop" if i % 2 else "length", prompt=f"p{i}" * (i + 1),
                        row={"level": i, "extra": [i]}, step=3) for i in range(6)]


def test_a_keyword_reward_gets_prompt_row_and_step_in_the_workers():
    items = keyword_items()
    expected = [pool_reward_fns.sees_everything(x.response, x.prompt, x.row, x.step) for x in items]
    with RewardPool("pool_reward_fns:sees_everything", 2, TIMEOUT_S) as p:
        result = p.score(items)
    assert result.rewards == expected and result.errors == 0
    assert len(set(expected)) == len(expected), "the inputs must tell the items apart"


def test_one_pool_serves_several_terms():
    items = keyword_items()
    with RewardPool(["pool_reward_fns:sees_everything", SCRIPTED], 2, TIMEOUT_S) as p:
        first, second = p.score(items, term=0), p.score(items, term=1)
        pids = p.pids
        with pytest.raises(ValueError, match=r"term must be in \[0, 2\), got 2"):
            p.score(items, term=2)
    assert first.rewards == [pool_reward_fns.sees_everything(x.response, x.prompt, x.row, x.step) for x in items]
    assert second.rewards == [pool_reward_fns.length_code(x.response, x.reference, x.finish_reason) for x in items]
    assert len(pids) == 2


def test_a_reward_with_an_unknown_parameter_fails_to_load_in_the_workers_and_here():
    for make in (lambda: RewardPool("pool_reward_fns:wants_answer", 1, TIMEOUT_S),
                 lambda: make_scorer("pool_reward_fns:wants_answer", 1, TIMEOUT_S)):
        before = child_pids()
        with pytest.raises(ValueError, match="has a parameter 'answer' that siri cannot fill: name it one of prompt, "
                                             "reference, finish_reason, row, step") as info:
            make()
        assert "'pool_reward_fns:wants_answer'" in str(info.value) and "\n" not in str(info.value)
        assert child_pids() <= before


# ---- shutdown -------------------------------------------------------------------------------

def test_close_leaves_no_child_process_and_a_later_score_restarts():
    p = RewardPool(SCRIPTED, 2, TIMEOUT_S)
    pids = p.pids
    assert len(pids) == 2 and all(map(alive, pids)) and set(pids) <= child_pids()
    p.close()
    p.close()
    assert not any(map(alive, pids)) and child_pids().isdisjoint(pids)
    assert p.score(items_of(["ab"])).rewards == [ok("ab")]
    new = p.pids
    assert set(new).isdisjoint(pids)
    p.close()
    assert not any(map(alive, new)) and child_pids().isdisjoint(new)


def test_garbage_collected_pool_stops_its_workers():
    p = RewardPool(SCRIPTED, 1, TIMEOUT_S)
    pids = p.pids
    del p
    gc.collect()
    assert not any(map(alive, pids)) and child_pids().isdisjoint(pids)
