"""Reward functions for tests/test_reward_pool.py, named by spec (``pool_reward_fns:<name>``)
so that the pool's worker processes can load them: each worker must find this module
through the ``sys.path`` it got from the test process."""
import math
import os
import signal
import time


def length_code(response_text: str, reference: str, finish_reason: str) -> float:
    """A deterministic reward that differs between items: it depends on all three fields."""
    return len(response_text) + 0.25 * len(reference) + 0.5 * (finish_reason == "stop")


def scripted(response_text: str, reference: str, finish_reason: str) -> float:
    """Misbehaves as ``response_text`` says; otherwise ``length_code``.

    - ``"raise"``: raises RuntimeError
    - ``"nan"``: returns NaN; ``"text"``: returns a string
    - ``"sleep"``: sleeps 30 s (SIGALRM interrupts it)
    - ``"masked"``: blocks SIGALRM, then sleeps 30 s (only the parent's deadline stops it)
    - ``"ignored"``: ignores SIGALRM and spins for 30 s (likewise)
    - ``"exit"``: ``os._exit(1)``; ``"segfault"``: kills itself with SIGSEGV
    - ``"pid"``: returns this process's id
    """
    if response_text == "raise":
        raise RuntimeError("broken reward")
    if response_text == "nan":
        return math.nan
    if response_text == "text":
        return "0.5"
    if response_text == "sleep":
        time.sleep(30)
    elif response_text == "masked":
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
        time.sleep(30)
    elif response_text == "ignored":
        signal.signal(signal.SIGALRM, signal.SIG_IGN)
        end = time.monotonic() + 30
        while time.monotonic() < end:
            pass
    elif response_text == "exit":
        os._exit(1)
    elif response_text == "segfault":
        os.kill(os.getpid(), signal.SIGSEGV)
    elif response_text == "pid":
        return float(os.getpid())
    return length_code(response_text, reference, finish_reason)


NOT_CALLABLE = 3


def sees_everything(completion, prompt, row, step, finish_reason="unused"):
    """A keyword reward: every input it names shows in its value (``finish_reason`` is given
    too, since it is named, and ignored)."""
    return len(completion) + 10 * len(prompt) + 1000 * row["level"] + 100000 * step


def wants_answer(response, answer):
    """A reward asking for an input siri does not have (``answer``): an error at load time."""
    return 0.0
