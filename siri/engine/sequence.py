"""One completion being generated: its tokens, logprobs and KV pages."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Sequence:
    """A completion of prompt ``prompt_index``, sample ``sample_index``.

    ``pages`` holds the KV of the first ``num_cached`` tokens of ``prompt_ids + output_ids``.
    While running, the last output token is the next decode input (its KV is not cached yet).
    """

    prompt_index: int
    sample_index: int
    prompt_ids: list[int]
    max_tokens: int
    seed: int
    output_ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    pages: list[int] = field(default_factory=list)
    num_cached: int = 0
    finish_reason: str | None = None
    row: int = -1  # its row in the decode batch state while decoding
    priority: int | None = None  # scheduler's: lower runs longer; set at first admission

    @property
    def num_tokens(self) -> int:
        return len(self.prompt_ids) + len(self.output_ids)

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None

    def tokens_to_recompute(self) -> list[int]:
        """After preemption: every token whose KV must be rebuilt (all but the next input)."""
        return (self.prompt_ids + self.output_ids)[:-1]
