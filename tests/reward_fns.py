"""Reward functions that tests name in configs (``reward.fn: reward_fns:<name>``)."""


def even_length(response_text: str, reference: str, finish_reason: str) -> float:
    """1 for a response with an even number of characters. It ignores ``finish_reason`` on
    purpose: the trainer itself must give truncated responses ``reward.truncated_reward``."""
    return float(len(response_text) % 2 == 0)


def flaky(response_text: str, reference: str, finish_reason: str) -> float:
    """Raises for every other response length, to test that reward errors score 0."""
    if len(response_text) % 2:
        raise RuntimeError("flaky reward")
    return 1.0


def misbehaving(response_text: str, reference: str, finish_reason: str) -> float:
    """Raises, hangs or returns NaN, by response length: every failure mode at once."""
    kind = len(response_text) % 3
    if kind == 0:
        raise RuntimeError("broken reward")
    if kind == 1:
        import time

        time.sleep(30)
    return float("nan")


def dies_or_hangs(response_text: str, reference: str, finish_reason: str) -> float:
    """Kills its process, hangs where SIGALRM cannot reach it, or scores 1, by response
    length: the failures only the reward pool's parent can handle."""
    import os
    import signal
    import time

    kind = len(response_text) % 3
    if kind == 0:
        os._exit(1)
    if kind == 1:
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
        time.sleep(30)
    return 1.0


CALLS: list[tuple] = []
"""What the recording rewards below were called with, in this process (``reward.workers: 0``)."""


def knows_its_row(completion, prompt, row, step, reference):
    """A keyword reward: 1 when the prompt and reference it is given are those of its dataset
    row, else 0; records ``("row", step)``."""
    CALLS.append(("row", step))
    return float(row.get("prompt") == prompt and row.get("answer") == reference and isinstance(completion, str))


def batched_length(responses, finish_reason):
    """A batched reward: ``len(response) / 100`` for each response; records ``("batch", n)``."""
    CALLS.append(("batch", len(responses)))
    assert len(finish_reason) == len(responses)
    return [len(r) / 100 for r in responses]
