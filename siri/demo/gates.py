"""Checks on the base model, run and printed before any RL: the study refuses to train when
one fails, because then the toy cannot show SIRI's mechanism (or its absence).

1. ``truncation``: at L_max at most ``MAX_TRUNCATION`` of the base's sampled answers are cut,
   in every tier (L_max does not bind the baseline). *Sampled*: the gate probe at temperature
   1.0, ``max_tokens`` = L_max.
2. ``confirmations_harmless``: the base's accuracy is the same whatever the number K of
   confirmations it wrote, within ``MAX_K_EFFECT`` (the redundancy really is harmless).
   *Stratified* sampled answers: accuracy per K (the tiers weighted equally, so a K that is
   more common in one tier does not pass for an effect), the widest gap between two Ks.
3. ``correction_needed``: after a hard slip, accuracy at least ``MIN_ACCURACY_CORRECTED`` with a
   correction and at most ``MAX_ACCURACY_UNCORRECTED`` without (the correction is necessary
   reasoning). *Forced prefixes*: a first walk with one slip (``siri.demo.task.slipped_walk``)
   then either the correction text or ``\\boxed{``, and the base writes the rest.
"""
from __future__ import annotations

import random
import statistics
from collections import defaultdict
from dataclasses import dataclass

from siri.demo.caps import Sample
from siri.demo.mechanism import parse_response
from siri.demo.task import CORRECTION, SLIP_FREE_ITEMS, Problem, slipped_walk
from siri.engine import LLMEngine, SamplingParams
from siri.rewards import capped_reward, is_correct

MAX_TRUNCATION = 0.02
MAX_K_EFFECT = 0.03
MIN_ACCURACY_CORRECTED = 0.80
MAX_ACCURACY_UNCORRECTED = 0.20
WITHOUT_CORRECTION = " \\boxed{"


@dataclass(frozen=True)
class Gate:
    """One gate: ``value`` against ``threshold`` (``passed`` None when it could not be
    measured), how it was measured, and the numbers behind it."""

    name: str
    passed: bool | None
    value: float | None
    threshold: str
    method: str
    detail: dict
    observed: str = ""
    """What was measured, in words (``"worst tier 0.3% (hard)"``)."""

    def line(self) -> str:
        verdict = {True: "passed", False: "FAILED", None: "not measured"}[self.passed]
        observed = self.observed or ("n/a" if self.value is None else f"{self.value:.3f}")
        return f"{self.name}: {verdict}: {observed}; needs {self.threshold} ({self.method})"


def _correct(sample: Sample) -> bool:
    return is_correct(capped_reward(sample.text, sample.problem.answer, sample.finish_reason))


def truncation_gate(samples: list[Sample]) -> Gate:
    """Gate 1 on samples drawn with ``max_tokens`` = L_max."""
    by_tier: dict[str, list[bool]] = defaultdict(list)
    for s in samples:
        by_tier[s.problem.tier].append(s.finish_reason == "length")
    rates = {tier: sum(cut) / len(cut) for tier, cut in by_tier.items()}
    worst = max(rates.values()) if rates else None
    return Gate("truncation", None if worst is None else worst <= MAX_TRUNCATION, worst,
                f"<= {MAX_TRUNCATION:.0%} in every tier", "sampled at temperature 1.0, max tokens L_max",
                {"per_tier": rates, "samples": {t: len(v) for t, v in by_tier.items()}},
                "cut " + ", ".join(f"{t} {r:.1%}" for t, r in rates.items()))


def confirmations_gate(samples: list[Sample]) -> Gate:
    """Gate 2: accuracy per number of confirmations K, each tier weighted equally."""
    cells: dict[int, dict[str, list[bool]]] = defaultdict(lambda: defaultdict(list))
    for s in samples:
        k = len(parse_response(s.text, len(s.problem.items)).confirmations)
        cells[k][s.problem.tier].append(_correct(s))
    tiers = {s.problem.tier for s in samples}
    # a K stratum counts when every tier has answers in it (else its tier mix is not comparable)
    accuracy = {str(k): statistics.fmean(sum(v) / len(v) for v in by_tier.values())
                for k, by_tier in sorted(cells.items()) if set(by_tier) == tiers and all(by_tier.values())}
    gap = max(accuracy.values()) - min(accuracy.values()) if len(accuracy) > 1 else None
    counts = {str(k): sum(len(v) for v in by_tier.values()) for k, by_tier in sorted(cells.items())}
    # K as a string key: the detail goes to summary.json as it is
    return Gate("confirmations_harmless", None if gap is None else gap <= MAX_K_EFFECT, gap,
                f"<= {100 * MAX_K_EFFECT:g} points between any two K", "stratified: sampled answers grouped by their "
                "number of confirmations K, tiers weighted equally", {"accuracy_by_k": accuracy, "samples_by_k": counts},
                "accuracy by K " + ", ".join(f"{k}: {a:.1%} ({counts[k]})" for k, a in accuracy.items())
                + ("" if gap is None else f", widest gap {100 * gap:.1f} points"))


def correction_gate(model, tokenizer, problems: list[Problem], prompt_ids: list[list[int]], *, samples: int,
                    max_tokens: int, seed: int) -> Gate:
    """Gate 3 by forced prefixes on the problems whose lists can slip."""
    chosen = [(p, ids) for p, ids in zip(problems, prompt_ids) if len(p.items) > SLIP_FREE_ITEMS]
    if not chosen:
        return Gate("correction_needed", None, None, "", "forced prefixes: no list long enough to slip", {})
    rng = random.Random(seed)
    walks = [slipped_walk(p, rng) for p, _ in chosen]
    engine = LLMEngine(model.eval(), page_size=16, max_num_seqs=256, kv_cache_bytes=256 << 20)
    params = SamplingParams(n=samples, temperature=1.0, max_tokens=max_tokens,
                            stop_token_ids=[tokenizer.eos_token_id], seed=seed)
    accuracy = {}
    for name, forced in (("with_correction", CORRECTION), ("without_correction", WITHOUT_CORRECTION)):
        prefixes = [w + forced for w in walks]
        inputs = [ids + tokenizer(prefix, add_special_tokens=False)["input_ids"]
                  for (_, ids), prefix in zip(chosen, prefixes)]
        right = [is_correct(capped_reward(prefix + tokenizer.decode(c.token_ids, skip_special_tokens=True),
                                          p.answer, c.finish_reason))
                 for (p, _), prefix, group in zip(chosen, prefixes, engine.generate(inputs, params)) for c in group]
        accuracy[name] = sum(right) / len(right)
    passed = (accuracy["with_correction"] >= MIN_ACCURACY_CORRECTED
              and accuracy["without_correction"] <= MAX_ACCURACY_UNCORRECTED)
    return Gate("correction_needed", passed, accuracy["with_correction"] - accuracy["without_correction"],
                f"with >= {MIN_ACCURACY_CORRECTED:.0%} and without <= {MAX_ACCURACY_UNCORRECTED:.0%}",
                "forced prefixes: a slipped first walk, then the correction or \\boxed{, completed at "
                "temperature 1.0", {**accuracy, "prompts": len(chosen), "samples_per_prompt": samples},
                f"accuracy after a hard slip with the correction {accuracy['with_correction']:.1%}, without "
                f"{accuracy['without_correction']:.1%} ({len(chosen)} problems x {samples})")


def gate_report(gates: list[Gate]) -> dict:
    """``summary["gates"]``: every gate's fields and whether all passed."""
    return {"passed": all(g.passed for g in gates), "gates": [vars(g) for g in gates]}


class BaseModelGateError(ValueError):
    """The base model fails a gate: the demo refuses to run RL on it."""


def check_base(model, tokenizer, problems: list[Problem], prompt_ids: list[list[int]], *, l_max: int, samples: int,
               seed: int) -> list[Gate]:
    """The three gates on ``problems`` (``samples`` answers each, at most ``l_max`` tokens)."""
    from siri.demo.caps import sample_base

    sampled = sample_base(model, tokenizer, problems, prompt_ids, samples=samples, max_tokens=l_max, seed=seed + 1)
    return [truncation_gate(sampled), confirmations_gate(sampled),
            correction_gate(model, tokenizer, problems, prompt_ids, samples=samples, max_tokens=l_max, seed=seed)]
