"""Answer verification with math-verify (LaTeX/expression parsing to SymPy, then comparison).

math-verify enforces its timeouts with ``signal.alarm``, which only works in the main
thread; elsewhere it raises ``ValueError``. ``math_equal`` therefore passes
``parsing_timeout=None, timeout_seconds=None`` when it runs outside the main thread, and
then **no timeout applies**: a caller that verifies in worker threads must bound the time
itself (e.g. run rewards in a process pool with a deadline).
"""
from __future__ import annotations

import logging
import math
import threading


__all__ = ["math_equal"]

logger = logging.getLogger(__name__)


def math_equal(answer: str | None, reference: str, timeout_s: float = 5.0) -> bool:
    """Whether ``answer`` is mathematically equal to ``reference``; never raises.

    Args:
        answer: an extracted final answer (e.g. from ``extract_final_answer``), LaTeX or a
            plain expression without ``$`` or ``\\boxed``; None gives False.
        reference: the ground truth in the same form. A reference that is itself a
            ``\\boxed{...}`` or ``$...$`` string also works.
        timeout_s: limit in seconds for parsing each side and for the comparison, rounded
            up to whole seconds (``signal.alarm``); applies in the main thread only (see the
            module docstring).

    Both sides are wrapped as ``\\boxed{...}`` and parsed the same way with math-verify's
    ``parse``, then compared with ``verify(gold=reference, target=answer)``. Anything that
    goes wrong (unparsable text, a timeout, a SymPy error) gives False.
    """
    if answer is None or reference is None:
        return False
    if threading.current_thread() is threading.main_thread():
        seconds = max(1, math.ceil(timeout_s))
    else:
        seconds = None
    from math_verify import verify  # imported on first use: it pulls in SymPy (slow)

    try:
        gold = _parse(str(reference), seconds)
        pred = _parse(str(answer), seconds)
        if not gold or not pred:
            return False
        return bool(verify(gold, pred, timeout_seconds=seconds))
    except BaseException as e:  # math-verify's TimeoutException derives from BaseException
        if isinstance(e, (KeyboardInterrupt, SystemExit)):
            raise
        logger.debug("math_equal failed on %r vs %r", answer, reference, exc_info=True)
        return False


def _parse(expr: str, seconds: int | None) -> list:
    """Parse one answer as math-verify expects a final answer: inside ``\\boxed{}``."""
    from math_verify import parse

    text = expr.strip()
    if "\\boxed" not in text and not text.startswith("$"):
        text = f"\\boxed{{{text}}}"
    return parse(text, parsing_timeout=seconds)
