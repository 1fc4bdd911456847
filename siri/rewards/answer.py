"""Final-answer extraction from a model response: the content of the last ``\\boxed{...}``."""
from __future__ import annotations

import re

__all__ = ["extract_final_answer"]

_THINK_END = "</think>"
_BOXED = re.compile(r"\\boxed(?![A-Za-z])")
# ``\boxed 42``: the unbraced form takes one whitespace-free token (stopping at ``$``).
_UNBRACED = re.compile(r"\s+([^\s${}]+)")


def extract_final_answer(text: str) -> str | None:
    """Return the content of the last complete ``\\boxed{...}`` in ``text``, or None.

    - Braces are matched with nesting (``\\boxed{\\frac{1}{2}}`` gives ``\\frac{1}{2}``).
    - The unbraced form ``\\boxed 42`` gives ``42``.
    - When the text contains ``</think>``, only the part after the last ``</think>`` is
      searched, so answers boxed while thinking do not count.
    - A ``\\boxed{`` whose braces never close (a response cut mid-answer) is skipped; the
      last complete one before it is returned instead.
    - The content is stripped of surrounding whitespace; an empty box gives ``""``.
    """
    if not isinstance(text, str):
        return None
    cut = text.rfind(_THINK_END)
    if cut >= 0:
        text = text[cut + len(_THINK_END):]
    for m in reversed(list(_BOXED.finditer(text))):
        content = _box_content(text, m.end())
        if content is not None:
            return content.strip()
    return None


def _box_content(text: str, pos: int) -> str | None:
    """The argument of a ``\\boxed`` command whose name ends just before ``pos``."""
    rest = text[pos:]
    stripped = rest.lstrip()
    if stripped.startswith("{"):
        start = pos + (len(rest) - len(stripped)) + 1
        depth = 1
        for i in range(start, len(text)):
            c = text[i]
            if c == "{":
                depth += 1
            elif c == "}":
                depth -= 1
                if depth == 0:
                    return text[start:i]
        return None  # unbalanced: the response ended inside the box
    m = _UNBRACED.match(rest)
    return m.group(1) if m else None
