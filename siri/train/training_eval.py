"""Evaluation during training: the policy on held-out prompts, with the rollout engine, every
``trainer.eval_every`` steps and at each peak and trough of the length schedule.

SIRI's claim is a path on the accuracy-vs-tokens plane, cycle by cycle; evaluating while
training puts that path into ``metrics.jsonl`` (the step's line gains ``eval_accuracy``,
``eval_response_len_mean``, ``eval_truncation_rate``, ``eval_num_samples``,
``eval_seconds``) and ``siri plot RUN_DIR`` draws it (``plots/trajectory.png``).

Draws are keyed by (trainer seed, problem index, sample), so the numbers do not depend on the
number of ranks: with torchrun each rank evaluates every world_size-th problem and the
per-problem results are gathered.
"""
from __future__ import annotations

import time
from typing import Any

from siri.config import Config
from siri.data import PromptFormat
from siri.eval import EvalSettings, evaluate_examples, load_eval_examples
from siri.rewards.reward_scorer import CorrectnessJudge, RewardScorer

__all__ = ["TrainingEvaluator", "wrong_when_truncated"]


def wrong_when_truncated(reward: Any) -> CorrectnessJudge:
    """What evaluation during training scores with: the correctness term of ``reward`` (a
    :class:`siri.rewards.reward_scorer.RewardScorer`, or a reward function in any form
    ``siri.rewards`` accepts), and 0 for a response cut at the cap, without a call."""
    return CorrectnessJudge.of(reward, truncated_reward=0.0)


class TrainingEvaluator:
    """Decides when to evaluate and runs the evaluation.

    Args:
        cfg: the run's config (``eval.*``, ``trainer.eval_every`` / ``eval_at_extrema``, the
            data section's prompt format).
        tokenizer: the policy's tokenizer.
        engine: the trainer's :class:`siri.engine.LLMEngine` (over the rollout model).
        scorer: the trainer's reward scorer (its worker processes score evaluation too); its
            correctness term decides, as in training (``siri.rewards.correctness.is_correct``:
            >= 0.5), and a response that reaches ``eval.max_tokens`` is wrong whatever it says.
        stop_token_ids: the tokens that end a response.
        dist: the trainer's :class:`siri.train.distributed.DistributedContext`.

    Raises ValueError (naming ``eval.data``) when the held-out set has no usable problem.
    """

    def __init__(self, cfg: Config, tokenizer, engine, scorer: RewardScorer, stop_token_ids: list[int], dist):
        e, d = cfg.eval, cfg.data
        self.tokenizer, self.engine, self.stop_token_ids, self.dist = tokenizer, engine, stop_token_ids, dist
        self.judge = wrong_when_truncated(scorer)
        examples = load_eval_examples(e.data, tokenizer, path=e.path,
                                      prompt_format=PromptFormat.from_data_config(d, source="training config"),
                                      max_prompt_tokens=d.max_prompt_tokens, prompt_key=e.prompt_key,
                                      answer_key=e.answer_key)
        if e.limit is not None:
            examples = examples[:e.limit]
        if not examples:
            raise ValueError(f"eval.data={e.data!r} has no usable problems")
        self.num_problems = len(examples)
        self.examples = examples[dist.rank::dist.world_size]
        schedule = cfg.length_schedule()
        self.settings = EvalSettings(n=e.n, temperature=e.temperature, top_p=e.top_p, seed=cfg.trainer.seed,
                                     max_tokens=e.max_tokens or schedule.longest_cap(cfg.trainer.steps))
        t = cfg.trainer
        self.every = t.eval_every
        self.extrema = set(schedule.peaks(t.steps)) | set(schedule.troughs(t.steps)) if t.eval_at_extrema else set()

    def due(self, step: int) -> bool:
        """Whether to evaluate after step ``step`` (0-based) has updated the weights."""
        return bool(self.every and (step + 1) % self.every == 0) or step in self.extrema

    def run(self) -> dict[str, float]:
        """Evaluate the rollout model as it is now (the caller refreshes it first); a
        collective under torchrun. Returns the ``eval_*`` metrics (the same on every rank)."""
        started = time.perf_counter()
        mine = []
        truncated = 0.0
        if self.examples:
            result = evaluate_examples(self.engine, self.tokenizer, self.examples, self.settings,
                                       reward_fn=self.judge, stop_token_ids=self.stop_token_ids)
            mine = [(p["accuracy"], p["mean_tokens"]) for p in result["per_prompt"]]
            truncated = result["truncation_rate"] * result["num_samples"]
        parts = self.dist.all_gather_objects((mine, truncated))
        per_problem = [p for part, _ in parts for p in part]
        samples = len(per_problem) * self.settings.n
        return {
            "eval_accuracy": sum(a for a, _ in per_problem) / len(per_problem),
            "eval_response_len_mean": sum(n for _, n in per_problem) / len(per_problem),
            "eval_truncation_rate": sum(count for _, count in parts) / samples,
            "eval_num_samples": samples,
            "eval_seconds": time.perf_counter() - started,
        }
