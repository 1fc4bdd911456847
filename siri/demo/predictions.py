"""The demo study's pre-registered predictions and refutations, evaluated by code on the
study's summary and printed as held / not held (occurred / did not occur).

Pre-registered: the statements and every margin below were written before the first full
study's results existed, and the study's numbers never tune them. A prediction that fails is
reported as NOT held, not rewritten until it holds; changing a margin after seeing a result
makes it a new, post-hoc claim.

    report = evaluate_predictions(summary)         # summary: the study's summary dict (shape below)
    print("\\n".join(report["lines"]))
    report["predictions"][0]["held"]                # True | False | None (unknown)
    report["toy_valid"]                             # False when the baseline compressed like SIRI

Input: the study's summary (seeds are strings of ints, the same set in every arm, in
``base_points`` and in the frontier; lists are in step order)::

    {"trajectory": {"steps": [1, 16, 31, ...],      # steps done at each eval
                    "peaks": [31, 61, 91],           # SIRI's peaks after a trough
                    "troughs": [16, 46, 76],
                    "arms": {arm: {seed: [point, ...]}}},   # one point per step, in "steps" order
     "base_points": {seed: point without "step"},    # the untrained base, with each seed's eval draws
     "frontier": {"cycles": [1, 2, 3], "siri": {seed: [area per cycle]}},   # hypervolume, in [0, 1]
     "l_max": int, "l_min": int}

    point = {"step": int, "accuracy": float, "mean_tokens": float, "R": float | None,
             "C": float | None, "U": float | None,
             "tiers": {"easy" | "medium" | "hard": {"accuracy", "mean_tokens", "R", "C", "U",
                                                    "slip_rate", "confirmations"}},
             "long_hard": {"accuracy": float | None, "mean_tokens": float | None, "num_prompts": int}}

``R`` is confirmation tokens / all tokens, ``C`` P(correction | slip), ``U`` P(slip without
correction); ``long_hard`` holds the hard lists too long to fit under ``l_min`` even with a
clean walk. The arms read here are ``siri``, ``baseline`` and ``compress_only``.

Means are over seeds. "Below (above) beyond the paired spread": a paired t test over seeds
(``siri.demo.statistics.paired_difference``, seed i of one arm with seed i of the other,
``df = seeds - 1``), two-sided at ``alpha``: the mean difference is negative (positive) and
``|t|`` is past the threshold. It needs at least 2 seeds.

Unknown: a check whose inputs hold a None (in any seed), an arm the trajectory lacks, or a
paired test with one seed, is unknown. A prediction is held when every check holds, NOT held
when any check fails (whatever the unknown ones would say), else unknown; a refutation
occurred when its condition is met, by the same three-valued logic.
"""
from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from siri.demo.statistics import paired_difference

__all__ = ["ALPHA", "BASELINE_COMPRESSION", "BASELINE_DRIFT_MAX", "BASELINE_R_MIN_RATIO", "FRONTIER_MARGIN",
           "PEAK_R_MAX_RATIO", "TROUGH_LONG_HARD_DROP", "TROUGH_R_MAX_RATIO", "evaluate_predictions"]

ALPHA = 0.05
"""The two-sided level of every paired test."""
BASELINE_DRIFT_MAX = 0.15
"""The baseline's mean |relative change| of mean tokens from the base must stay below this."""
BASELINE_R_MIN_RATIO = 0.75
"""The baseline's R at its last eval must be at least this x the base's R."""
TROUGH_R_MAX_RATIO = 0.25
"""SIRI's R at every trough must be at most this x the base's R."""
TROUGH_LONG_HARD_DROP = 0.05
"""SIRI's long-hard accuracy at every trough must be at least this far (a fraction: 5 points)
below its value at the eval before the trough."""
PEAK_R_MAX_RATIO = 0.5
"""SIRI's R at every peak must be at most this x the base's R (above it at the last peak: the
refutation ``confirmations_return_at_peaks``)."""
FRONTIER_MARGIN = 0.0
"""SIRI's mean frontier area must grow by more than this from each cycle to the next."""
BASELINE_COMPRESSION = 0.15
"""A baseline whose mean tokens fall by at least this fraction from the base compresses (the
first half of the refutation ``baseline_compresses_like_siri``)."""

SIRI, BASELINE, COMPRESS_ONLY = "siri", "baseline", "compress_only"
_REQUIRED = ("trajectory", "base_points", "frontier")
_TRAJECTORY_KEYS = ("steps", "peaks", "troughs", "arms")
_HELD_WORD = {True: "held", False: "NOT held", None: "unknown"}
_OCCURRED_WORD = {True: "occurred", False: "did not occur", None: "unknown"}


@dataclass(frozen=True)
class _Measure:
    """Where a number sits in a point, and how a sentence shows it (levels and differences)."""

    path: tuple[str, ...]
    label: str
    scale: float
    digits: int
    level_unit: str
    difference_unit: str

    def level(self, value: float | None) -> str:
        return "unknown" if value is None else f"{value * self.scale:.{self.digits}f}{self.level_unit}"

    def difference(self, value: float | None, *, signed: bool = True) -> str:
        sign = "+" if signed else ""
        return "unknown" if value is None else f"{value * self.scale:{sign}.{self.digits}f}{self.difference_unit}"


_TOKENS = _Measure(("mean_tokens",), "mean tokens", 1.0, 1, " tokens", " tokens")
_R = _Measure(("R",), "R", 1.0, 3, "", "")
_HARD_ACCURACY = _Measure(("tiers", "hard", "accuracy"), "hard accuracy", 100.0, 1, "%", " points")
_HARD_C = _Measure(("tiers", "hard", "C"), "hard C", 1.0, 3, "", "")
_LONG_HARD_ACCURACY = _Measure(("long_hard", "accuracy"), "long-hard accuracy", 100.0, 1, "%", " points")


@dataclass(frozen=True)
class _Check:
    """One part of a prediction or refutation: whether it holds (None: unknown), in words."""

    held: bool | None
    text: str


def evaluate_predictions(summary: Mapping, *, alpha: float = ALPHA) -> dict:
    """Evaluate the pre-registered predictions and refutations on the study's ``summary``
    (shape in the module docstring).

    Returns:
        ``{"predictions": [prediction, ...], "refutations": [refutation, ...],
        "toy_valid": bool | None, "lines": [str, ...]}``: each prediction is ``{"name",
        "statement", "held": bool | None, "values": {numbers used}, "why": sentence}``, each
        refutation the same with ``"occurred"`` in place of ``"held"``; ``toy_valid`` is False
        when ``baseline_compresses_like_siri`` occurred, True when it did not, None when
        unknown; ``lines`` has one line per prediction, one per refutation and one on the
        toy's validity.

    Raises:
        ValueError: the summary lacks ``trajectory``, ``base_points`` or ``frontier`` (or the
            trajectory its steps, peaks, troughs or arms), the seeds differ between arms (or
            from ``base_points`` or the frontier), or ``alpha`` is not in (0, 1).
    """
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
    study = _Study(summary, alpha)
    predictions = [_baseline_keeps_length_and_redundancy(study), _troughs_prune_redundancy(study),
                   _peaks_restore_necessary_reasoning(study), _frontier_grows_each_cycle(study)]
    refutations = [_confirmations_return_at_peaks(study), _hard_accuracy_not_recovered(study),
                   _compress_only_matches_siri_high_on_hard(study), _baseline_compresses_like_siri(study)]
    invalid = refutations[-1]["occurred"]
    toy_valid = None if invalid is None else not invalid
    lines = [f"prediction {p['name']}: {_HELD_WORD[p['held']]} — {p['why']}" for p in predictions]
    lines += [f"refutation {r['name']}: {_OCCURRED_WORD[r['occurred']]} — {r['why']}" for r in refutations]
    lines.append({True: "toy valid: yes — the baseline did not compress like SIRI, so what SIRI's arm shows is "
                        "not what plain RL on this task does anyway",
                  False: "toy valid: NO — the baseline compressed like SIRI, so this toy cannot tell SIRI's "
                         "mechanism from plain RL and its predictions say nothing about SIRI",
                  None: "toy valid: unknown — whether the baseline compresses like SIRI is unknown"}[toy_valid])
    return {"predictions": predictions, "refutations": refutations, "toy_valid": toy_valid, "lines": lines}


# ---- the summary, checked --------------------------------------------------------------

class _Study:
    """The summary, checked, with per-seed and mean lookups (None where anything is missing)."""

    def __init__(self, summary: Mapping, alpha: float) -> None:
        if not isinstance(summary, Mapping):
            raise ValueError(f"the demo summary must be a dict, got {type(summary).__name__}")
        missing = [key for key in _REQUIRED if key not in summary]
        if missing:
            raise ValueError(f"the demo summary lacks {', '.join(map(repr, missing))}: the predictions need "
                             f"'trajectory', 'base_points' and 'frontier'")
        for key in _REQUIRED:
            if not isinstance(summary[key], Mapping):
                raise ValueError(f"the demo summary's {key!r} must be a dict, got {type(summary[key]).__name__}")
        trajectory = summary["trajectory"]
        missing = [key for key in _TRAJECTORY_KEYS if key not in trajectory]
        if missing:
            raise ValueError(f"the demo summary's trajectory lacks {', '.join(map(repr, missing))}")
        self.alpha = alpha
        self.steps = [int(step) for step in trajectory["steps"]]
        self.peaks = [int(step) for step in trajectory["peaks"]]
        self.troughs = [int(step) for step in trajectory["troughs"]]
        if not self.steps:
            raise ValueError("the demo summary's trajectory has no steps")
        arms = {str(name): {str(seed): points for seed, points in per_seed.items()}
                for name, per_seed in trajectory["arms"].items()}
        if not arms:
            raise ValueError("the demo summary's trajectory has no arms")
        seed_sets = {name: sorted(per_seed, key=_seed_order) for name, per_seed in arms.items()}
        self.seeds = next(iter(seed_sets.values()))
        if not self.seeds:
            raise ValueError(f"the demo summary's arm {next(iter(seed_sets))!r} has no seeds")
        if any(seeds != self.seeds for seeds in seed_sets.values()):
            raise ValueError(f"the seeds differ between arms: {seed_sets}")
        self.points = {name: {seed: self._by_step(points) for seed, points in per_seed.items()}
                       for name, per_seed in arms.items()}
        self.base = {str(seed): point for seed, point in summary["base_points"].items()}
        if sorted(self.base, key=_seed_order) != self.seeds:
            raise ValueError(f"base_points has seeds {sorted(self.base, key=_seed_order)}, the arms {self.seeds}")
        frontier = summary["frontier"]
        self.cycles = list(frontier.get("cycles") or [])
        self.frontier: dict[str, list] | None = None
        if frontier.get("siri") is not None:
            self.frontier = {str(seed): list(areas) for seed, areas in frontier["siri"].items()}
            if sorted(self.frontier, key=_seed_order) != self.seeds:
                raise ValueError(f"frontier['siri'] has seeds {sorted(self.frontier, key=_seed_order)}, "
                                 f"the arms {self.seeds}")

    def _by_step(self, points: Sequence[Mapping]) -> dict[int, Mapping]:
        """A seed's points by step: each point's ``step``, or its position in ``steps``."""
        by_step = {}
        for i, point in enumerate(points):
            step = point.get("step", self.steps[i] if i < len(self.steps) else None)
            if step is not None:
                by_step[int(step)] = point
        return by_step

    def values(self, arm: str, step: int, measure: _Measure) -> list[float] | None:
        """The arm's ``measure`` at ``step``, one per seed (in ``self.seeds`` order)."""
        if arm not in self.points:
            return None
        return _all_known(_lookup(self.points[arm][seed].get(step), measure.path) for seed in self.seeds)

    def base_values(self, measure: _Measure) -> list[float] | None:
        return _all_known(_lookup(self.base[seed], measure.path) for seed in self.seeds)

    def mean(self, arm: str, step: int, measure: _Measure) -> float | None:
        return _mean(self.values(arm, step, measure))

    def base_mean(self, measure: _Measure) -> float | None:
        return _mean(self.base_values(measure))

    def relative_changes(self, arm: str, step: int, measure: _Measure) -> list[float] | None:
        """Per seed, ``(arm's value at step - base's value) / base's value``, each seed against its own base."""
        values, base = self.values(arm, step, measure), self.base_values(measure)
        if values is None or base is None or any(b == 0 for b in base):
            return None
        return [(v - b) / b for v, b in zip(values, base)]

    def pairing_problem(self, *arms: str) -> str | None:
        """Why a paired test between ``arms`` cannot run (an arm missing, one seed), or None."""
        lacking = [arm for arm in arms if arm not in self.points]
        if lacking:
            return f"needs the arm {' and '.join(map(repr, lacking))}, which the trajectory lacks"
        if len(self.seeds) < 2:
            return f"needs at least 2 seeds (got {len(self.seeds)})"
        return None

    def paired(self, a: list[float] | None, b: list[float] | None) -> dict | None:
        """The paired test of ``a - b`` over seeds, as reported in ``values``; None when unknown."""
        if a is None or b is None or len(a) < 2:
            return None
        d = paired_difference(a, b)
        beyond = d.beyond(self.alpha)
        return {"mean_difference": d.mean, "threshold": d.threshold(self.alpha), "p_value": d.p_value, "df": d.df,
                "below_beyond": beyond and d.mean < 0, "above_beyond": beyond and d.mean > 0}


def _seed_order(seed: str) -> tuple[int, int, str]:
    return (0, int(seed), "") if seed.lstrip("-").isdigit() else (1, 0, seed)


def _lookup(node: object, path: Sequence[str]) -> float | None:
    """The finite number at ``path`` in nested dicts, else None."""
    for key in path:
        if not isinstance(node, Mapping):
            return None
        node = node.get(key)
    return _number(node)


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def _all_known(values: Iterable[float | None]) -> list[float] | None:
    out = []
    for value in values:
        if value is None:
            return None
        out.append(value)
    return out


def _mean(values: list[float] | None) -> float | None:
    return None if not values else statistics.fmean(values)


def _all(flags: Iterable[bool | None]) -> bool | None:
    """Three-valued AND: False if any is False, else None if any is None, else True."""
    flags = list(flags)
    return False if False in flags else None if None in flags else True


def _any(flags: Iterable[bool | None]) -> bool | None:
    """Three-valued OR: True if any is True, else None if any is None, else False."""
    flags = list(flags)
    return True if True in flags else None if None in flags else False


def _why(checks: Sequence[_Check], outcome: bool | None, failing: bool | None) -> str:
    """One sentence from the checks that decided ``outcome``: those equal to ``failing`` when
    the outcome is ``failing``, the unknown ones when it is unknown, else all of them."""
    if outcome is None:
        shown = [c for c in checks if c.held is None]
    elif outcome == failing:
        shown = [c for c in checks if c.held is failing]
    else:
        shown = list(checks)
    return "; ".join(dict.fromkeys(c.text for c in shown)) + "."


def _prediction(name: str, statement: str, checks: Sequence[_Check], values: dict) -> dict:
    held = _all(c.held for c in checks) if checks else None
    return {"name": name, "statement": statement, "held": held, "values": values,
            "why": _why(checks, held, False) if checks else "nothing to check."}


def _refutation(name: str, statement: str, occurred: bool | None, checks: Sequence[_Check], values: dict) -> dict:
    return {"name": name, "statement": statement, "occurred": occurred, "values": values,
            "why": _why(checks, occurred, True) if checks else "nothing to check."}


def _cap_check(where: str, value: float | None, limit: float | None, ratio: float, base: float | None,
               measure: _Measure, *, at_most: bool = True) -> _Check:
    """``value <= limit`` (``at_most``) or ``value >= limit``, the limit ``ratio`` x the base's ``base``."""
    held = None if value is None or limit is None else value <= limit if at_most else value >= limit
    bound = "at most" if at_most else "at least"
    return _Check(held, f"{where} {measure.label} is {measure.level(value)} (must be {bound} "
                        f"{measure.level(limit)} = {ratio:g} x the base's {measure.level(base)})")


def _test_text(test: dict, measure: _Measure) -> str:
    """``"paired threshold ±2.3 points, p=0.070"``."""
    p = test["p_value"]
    p_text = "p=0" if p == 0 else f"p={p:.1e}" if p < 0.001 else f"p={p:.3f}"
    return f"paired threshold ±{measure.difference(test['threshold'], signed=False)}, {p_text}"


def _paired_check(where: str, test: dict | None, measure: _Measure, other: str, *, fails_if: str) -> _Check:
    """A paired test ``SIRI - other`` that fails when ``test[fails_if]`` (below / above beyond)."""
    text = f"{where} SIRI's {measure.label} minus the {other}'s is "
    if test is None:
        return _Check(None, text + "unknown (a value is None)")
    verdict = f"{'' if test[fails_if] else 'not '}{fails_if.replace('_', ' ')}"
    return _Check(not test[fails_if],
                  f"{text}{measure.difference(test['mean_difference'])} ({_test_text(test, measure)}, {verdict})")


# ---- predictions -----------------------------------------------------------------------

def _baseline_keeps_length_and_redundancy(study: _Study) -> dict:
    last = study.steps[-1]
    changes = study.relative_changes(BASELINE, last, _TOKENS)
    drift = None if changes is None else statistics.fmean(abs(c) for c in changes)
    base_r, r = study.base_mean(_R), study.mean(BASELINE, last, _R)
    limit = None if base_r is None else BASELINE_R_MIN_RATIO * base_r
    checks = [_Check(None if drift is None else drift < BASELINE_DRIFT_MAX,
                     f"the baseline's mean tokens at step {last} drift "
                     f"{'unknown' if drift is None else f'{drift:.1%}'} from the base's (mean over seeds of "
                     f"|relative change|, must be below {BASELINE_DRIFT_MAX:.0%})"),
              _cap_check(f"at step {last} the baseline's", r, limit, BASELINE_R_MIN_RATIO, base_r, _R, at_most=False)]
    return _prediction(
        "baseline_keeps_length_and_redundancy",
        f"Without a length cap, RL keeps the base's length and redundancy: the baseline's mean tokens at its last "
        f"eval drift less than {BASELINE_DRIFT_MAX:.0%} from the base's and its R stays at least "
        f"{BASELINE_R_MIN_RATIO:g} x the base's R.",
        checks, {"step": last, "relative_changes": changes, "drift": drift, "drift_max": BASELINE_DRIFT_MAX,
                 "baseline_R": r, "base_R": base_r, "R_limit": limit})


def _troughs_prune_redundancy(study: _Study) -> dict:
    base_r = study.base_mean(_R)
    limit = None if base_r is None else TROUGH_R_MAX_RATIO * base_r
    checks, rows = [], []
    for trough in study.troughs:
        before = max((peak for peak in study.peaks if peak < trough), default=study.steps[0])
        r = study.mean(SIRI, trough, _R)
        accuracy, accuracy_before = study.mean(SIRI, trough, _LONG_HARD_ACCURACY), \
            study.mean(SIRI, before, _LONG_HARD_ACCURACY)
        drop = accuracy_before - accuracy if accuracy is not None and accuracy_before is not None else None
        checks.append(_cap_check(f"at trough {trough} SIRI's", r, limit, TROUGH_R_MAX_RATIO, base_r, _R))
        checks.append(_Check(None if drop is None else drop >= TROUGH_LONG_HARD_DROP,
                             f"at trough {trough} SIRI's long-hard accuracy is {_LONG_HARD_ACCURACY.level(accuracy)} "
                             f"against {_LONG_HARD_ACCURACY.level(accuracy_before)} at step {before}, a drop of "
                             f"{_LONG_HARD_ACCURACY.difference(drop, signed=False)} (at least "
                             f"{_LONG_HARD_ACCURACY.difference(TROUGH_LONG_HARD_DROP, signed=False)} needed)"))
        rows.append({"step": trough, "R": r, "step_before": before, "long_hard_accuracy": accuracy,
                     "long_hard_accuracy_before": accuracy_before, "long_hard_drop": drop})
    if not study.troughs:
        checks.append(_Check(None, "the trajectory has no troughs"))
    return _prediction(
        "troughs_prune_redundancy",
        f"At every trough of the cap SIRI prunes the harmless confirmations, R at most {TROUGH_R_MAX_RATIO:g} x the "
        f"base's, and loses accuracy on the hard lists that cannot fit under L_min (at least "
        f"{TROUGH_LONG_HARD_DROP * 100:g} points below the eval before the trough).",
        checks, {"base_R": base_r, "R_limit": limit, "long_hard_drop_min": TROUGH_LONG_HARD_DROP, "troughs": rows})


def _peaks_restore_necessary_reasoning(study: _Study) -> dict:
    base_r = study.base_mean(_R)
    limit = None if base_r is None else PEAK_R_MAX_RATIO * base_r
    problem = study.pairing_problem(SIRI, BASELINE)
    checks = [] if problem is None else [_Check(None, f"the paired test against the baseline {problem}")]
    rows = []
    for peak in study.peaks:
        row: dict = {"step": peak}
        if problem is None:
            for key, measure in (("hard_accuracy", _HARD_ACCURACY), ("hard_C", _HARD_C)):
                test = study.paired(study.values(SIRI, peak, measure), study.values(BASELINE, peak, measure))
                row[key] = test
                checks.append(_paired_check(f"at peak {peak}", test, measure, "baseline", fails_if="below_beyond"))
        row["R"] = study.mean(SIRI, peak, _R)
        checks.append(_cap_check(f"at peak {peak} SIRI's", row["R"], limit, PEAK_R_MAX_RATIO, base_r, _R))
        rows.append(row)
    if not study.peaks:
        checks.append(_Check(None, "the trajectory has no peaks"))
    return _prediction(
        "peaks_restore_necessary_reasoning",
        f"At every peak SIRI's hard-tier accuracy and correction rate C are not below the baseline's beyond the "
        f"paired spread (the necessary reasoning comes back), while its R stays at most {PEAK_R_MAX_RATIO:g} x "
        f"the base's (the confirmations do not).",
        checks, {"alpha": study.alpha, "base_R": base_r, "R_limit": limit, "peaks": rows})


_FRONTIER_STATEMENT = ("SIRI's accuracy-vs-tokens frontier (hypervolume, mean over seeds) grows from each cycle of the "
                       f"cap to the next, by more than {FRONTIER_MARGIN:g}.")


def _frontier_grows_each_cycle(study: _Study) -> dict:
    if study.frontier is None:
        return _prediction("frontier_grows_each_cycle", _FRONTIER_STATEMENT,
                           [_Check(None, "the frontier has no 'siri' areas")], {"cycles": study.cycles})
    frontier = study.frontier
    count = max([len(study.cycles), *(len(areas) for areas in frontier.values())])
    cycles = study.cycles + list(range(len(study.cycles) + 1, count + 1))
    means = [_mean(_all_known(_number(areas[i]) if i < len(areas) else None for areas in frontier.values()))
             for i in range(count)]
    checks = []
    for i in range(1, count):
        now, before = means[i], means[i - 1]
        growth = None if now is None or before is None else now - before
        checks.append(_Check(None if growth is None else growth > FRONTIER_MARGIN,
                             f"SIRI's mean frontier area goes from {_area(means[i - 1])} in cycle {cycles[i - 1]} to "
                             f"{_area(means[i])} in cycle {cycles[i]} (growth {_area(growth, signed=True)}, "
                             f"more than {FRONTIER_MARGIN:g} needed)"))
    if count < 2:
        checks.append(_Check(None, f"the frontier has {count} cycle{'' if count == 1 else 's'}, 2 needed"))
    return _prediction("frontier_grows_each_cycle", _FRONTIER_STATEMENT, checks,
                       {"cycles": cycles, "mean_areas": means, "margin": FRONTIER_MARGIN})


def _area(value: float | None, *, signed: bool = False) -> str:
    return "unknown" if value is None else f"{value:+.4f}" if signed else f"{value:.4f}"


# ---- refutations -----------------------------------------------------------------------

def _confirmations_return_at_peaks(study: _Study) -> dict:
    name = "confirmations_return_at_peaks"
    statement = (f"At the last peak SIRI's R is above {PEAK_R_MAX_RATIO:g} x the base's: the confirmations come "
                 f"back with the length budget.")
    if not study.peaks:
        return _refutation(name, statement, None, [_Check(None, "the trajectory has no peaks")], {})
    peak = study.peaks[-1]
    base_r, r = study.base_mean(_R), study.mean(SIRI, peak, _R)
    limit = None if base_r is None else PEAK_R_MAX_RATIO * base_r
    occurred = None if r is None or limit is None else r > limit
    check = _Check(occurred, f"at the last peak ({peak}) SIRI's R is {_R.level(r)}, "
                             f"{'above' if occurred else 'not above' if occurred is False else 'compared with'} "
                             f"{_R.level(limit)} ({PEAK_R_MAX_RATIO:g} x the base's {_R.level(base_r)})")
    return _refutation(name, statement, occurred, [check], {"step": peak, "R": r, "base_R": base_r, "R_limit": limit})


def _hard_accuracy_not_recovered(study: _Study) -> dict:
    name = "hard_accuracy_not_recovered"
    statement = ("At some peak SIRI's hard accuracy is below the baseline's beyond the paired spread: the "
                 "necessary reasoning does not come back within half a period of the cap.")
    problem = study.pairing_problem(SIRI, BASELINE)
    if problem is not None or not study.peaks:
        why = f"the paired test against the baseline {problem}" if problem else "the trajectory has no peaks"
        return _refutation(name, statement, None, [_Check(None, why)], {"alpha": study.alpha})
    checks, rows = [], []
    for peak in study.peaks:
        test = study.paired(study.values(SIRI, peak, _HARD_ACCURACY), study.values(BASELINE, peak, _HARD_ACCURACY))
        check = _paired_check(f"at peak {peak}", test, _HARD_ACCURACY, "baseline", fails_if="below_beyond")
        checks.append(_Check(None if check.held is None else not check.held, check.text))
        rows.append({"step": peak, "hard_accuracy": test})
    return _refutation(name, statement, _any(c.held for c in checks), checks, {"alpha": study.alpha, "peaks": rows})


def _compress_only_matches_siri_high_on_hard(study: _Study) -> dict:
    name = "compress_only_matches_siri_high_on_hard"
    statement = ("compress_only's hard accuracy at its last eval is not below SIRI's at the last peak beyond the "
                 "paired spread: the re-expansion adds nothing on the hard lists.")
    problem = study.pairing_problem(SIRI, COMPRESS_ONLY)
    if problem is not None or not study.peaks:
        why = f"the paired test against compress_only {problem}" if problem else "the trajectory has no peaks"
        return _refutation(name, statement, None, [_Check(None, why)], {"alpha": study.alpha})
    last, peak = study.steps[-1], study.peaks[-1]
    test = study.paired(study.values(COMPRESS_ONLY, last, _HARD_ACCURACY), study.values(SIRI, peak, _HARD_ACCURACY))
    where = f"compress_only at step {last} minus SIRI at the last peak ({peak}): hard accuracy"
    if test is None:
        check = _Check(None, f"{where} unknown (a value is None)")
    else:
        check = _Check(not test["below_beyond"],
                       f"{where} {_HARD_ACCURACY.difference(test['mean_difference'])} "
                       f"({_test_text(test, _HARD_ACCURACY)}, "
                       f"{'below beyond' if test['below_beyond'] else 'not below beyond'})")
    return _refutation(name, statement, check.held, [check],
                       {"alpha": study.alpha, "step": last, "siri_step": peak, "hard_accuracy": test})


def _baseline_compresses_like_siri(study: _Study) -> dict:
    last = study.steps[-1]
    changes = study.relative_changes(BASELINE, last, _TOKENS)
    change = None if changes is None else statistics.fmean(changes)
    checks = [_Check(None if change is None else change <= -BASELINE_COMPRESSION,
                     f"the baseline's mean tokens at step {last} change by "
                     f"{'unknown' if change is None else f'{change:+.1%}'} from the base's (mean over seeds; a "
                     f"fall of at least {BASELINE_COMPRESSION:.0%} compresses)")]
    test = None
    problem = study.pairing_problem(SIRI, BASELINE)
    if problem is not None or not study.peaks:
        why = f"the paired test against SIRI {problem}" if problem else "the trajectory has no peaks"
        checks.append(_Check(None, why))
    else:
        peak = study.peaks[-1]
        test = study.paired(study.values(BASELINE, last, _TOKENS), study.values(SIRI, peak, _TOKENS))
        where = f"the baseline at step {last} minus SIRI at the last peak ({peak}): mean tokens"
        if test is None:
            checks.append(_Check(None, f"{where} unknown (a value is None)"))
        else:
            checks.append(_Check(not test["above_beyond"],
                                 f"{where} {_TOKENS.difference(test['mean_difference'])} "
                                 f"({_test_text(test, _TOKENS)}, "
                                 f"{'above beyond' if test['above_beyond'] else 'not above beyond'})"))
    return _refutation(
        "baseline_compresses_like_siri",
        f"The baseline's mean tokens fall by at least {BASELINE_COMPRESSION:.0%} from the base's and are not above "
        f"SIRI's at the last peak beyond the paired spread: plain RL compresses on this task by itself, so the toy "
        f"is invalid.",
        _all(c.held for c in checks), checks,
        {"alpha": study.alpha, "step": last, "relative_changes": changes, "change": change,
         "compression": BASELINE_COMPRESSION, "mean_tokens": test})
