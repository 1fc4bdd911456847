"""What a caller asks of the engine (SamplingParams) and what it gets back (CompletionOutput)."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class SamplingParams:
    """How to sample the completions of each prompt.

    Attributes:
        n: completions per prompt (GRPO's group size G). They share the prompt's KV pages.
        temperature: softmax temperature; 0 means greedy.
        top_p: nucleus mass in (0, 1]; 1 is off. top_k: 0 is off.
        max_tokens: the cap on generated tokens (SIRI's phase cap), an int for every prompt or a
            list with one cap per prompt.
        stop_token_ids: any of these ends a completion with finish_reason "stop".
        seed: the base of the counter-based sampler. Draws are keyed by (seed, prompt key,
            sample index, position), so they do not depend on batching, preemption or rank.
    """

    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    max_tokens: int | list[int] = 256
    stop_token_ids: list[int] = field(default_factory=list)
    seed: int = 0

    def validate(self, num_prompts: int, vocab_size: int) -> None:
        if self.n < 1:
            raise ValueError(f"SamplingParams.n must be >= 1, got {self.n}")
        if not (self.temperature >= 0 and self.temperature < float("inf")):
            raise ValueError(f"SamplingParams.temperature must be finite and >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"SamplingParams.top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise ValueError(f"SamplingParams.top_k must be >= 0, got {self.top_k}")
        caps = self.caps(num_prompts)
        if any(c < 1 for c in caps):
            raise ValueError(f"SamplingParams.max_tokens must be >= 1, got {min(caps)}")
        bad = [t for t in self.stop_token_ids if not 0 <= t < vocab_size]
        if bad:
            raise ValueError(f"SamplingParams.stop_token_ids {bad} are outside the vocabulary [0, {vocab_size})")

    def caps(self, num_prompts: int) -> list[int]:
        """The max_tokens of each prompt."""
        if isinstance(self.max_tokens, int):
            return [self.max_tokens] * num_prompts
        caps = list(self.max_tokens)
        if len(caps) != num_prompts:
            raise ValueError(f"SamplingParams.max_tokens has {len(caps)} caps for {num_prompts} prompts")
        return caps


@dataclass
class CompletionOutput:
    """One sampled completion.

    Attributes:
        token_ids: the generated tokens, the stop token included when it stopped on one.
        logprobs: each token's log-probability under softmax(logits / temperature), the
            unfiltered policy (what the trainer recomputes), float.
        finish_reason: "stop" (a stop token) or "length" (reached max_tokens without one).
    """

    token_ids: list[int]
    logprobs: list[float]
    finish_reason: str
