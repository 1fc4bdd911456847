"""The demo's verdict, computed from the eval numbers: which checkpoints are on the
accuracy-vs-tokens Pareto front, whether any arm dominates SIRI-low or SIRI-high beyond the
spread, and the per-tier effect of SIRI against the reference arms.

    aggregated = aggregate({"siri_low": [run_seed0, run_seed1, run_seed2], "baseline": [...], ...})
    report = verdict(aggregated)
    print("\\n".join(report["lines"]))
    format_mean_spread(aggregated["siri_low"]["accuracy"])        # "84.2% ± 1.3"

Input: ``results: dict[str, list[dict]]``, checkpoint name -> one eval result per seed (the
same seed order for every checkpoint), each result as ``siri.eval.evaluate_examples`` returns
it plus per-tier numbers::

    {"accuracy": float in [0, 1], "mean_tokens": float, "truncation_rate": float,
     "num_prompts": int, "num_samples": int,
     "per_prompt": [{"index": int, "accuracy": float, "mean_tokens": float}, ...],
     "tiers": {"easy": {"accuracy": float, "mean_tokens": float, "num_prompts": int}, ...}}

The spread rule (used by every "beyond the spread" below): two means differ beyond the spread
when ``|difference| > 2 * sqrt(sem_a**2 + sem_b**2)``; a domination is beyond the spread only
when that holds on both axes (accuracy and tokens). How ``sem`` is estimated: see ``aggregate``.
"""
from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence

__all__ = ["aggregate", "format_mean_spread", "pareto_front", "spread", "verdict"]

MEASURES = ("accuracy", "mean_tokens")
SPREAD_FACTOR = 2.0  # a difference is beyond the spread above SPREAD_FACTOR x the combined standard error


def aggregate(results: Mapping[str, Sequence[dict]], *,
              prompt_tiers: Mapping[int, str] | None = None) -> dict[str, dict]:
    """Mean and spread over seeds of each checkpoint's accuracy and mean tokens, overall and per tier.

    Args:
        results: checkpoint name -> one eval result per seed (format in the module docstring);
            every checkpoint must have the same number of seeds, and all seeds of a checkpoint
            the same tiers.
        prompt_tiers: optional prompt ``index`` -> tier name; only used with one seed, to
            estimate each tier's standard error from the ``per_prompt`` rows of that tier.

    Returns:
        checkpoint name -> ``{"accuracy": stat, "mean_tokens": stat, "seeds": int,
        "tiers": {tier: {"accuracy": stat, "mean_tokens": stat, "num_prompts": [int per seed]}}}``
        where a stat is ``{"mean", "std", "min", "max", "values": [float per seed], "sem"}``:
        ``std`` is the sample std over seeds (0.0 for one seed) and ``sem`` the standard error
        of the mean. With several seeds ``sem = std / sqrt(seeds)``: the seed-to-seed spread
        is what a claim about the method must beat. With one seed there is no seed spread, so
        ``sem`` is the standard error over prompts of that single run: the sample std of the
        per-prompt values (``per_prompt``) / sqrt(number of prompts); it is None where that
        cannot be computed (fewer than two per-prompt rows, or a tier without ``prompt_tiers``).
        Accuracies stay fractions (``sem`` too); tokens are tokens.

    Raises:
        ValueError: no checkpoints, a checkpoint without results, different seed counts per
            checkpoint, a result without numeric ``accuracy`` / ``mean_tokens``, an accuracy
            outside [0, 1], different tiers across seeds, or ``per_prompt`` rows that do not
            match ``num_prompts`` (overall, or per tier through ``prompt_tiers``).
    """
    if not results:
        raise ValueError("aggregate needs at least one checkpoint's results")
    seed_counts = {name: len(runs) for name, runs in results.items()}
    if min(seed_counts.values()) == 0:
        raise ValueError(f"every checkpoint needs at least one result, got seed counts {seed_counts}")
    if len(set(seed_counts.values())) > 1:
        raise ValueError(f"every checkpoint needs the same number of seeds, got {seed_counts}")
    aggregated = {}
    for name, runs in results.items():
        for seed, run in enumerate(runs):
            _check_measures(run, f"results[{name!r}][{seed}]")
        single_run_rows = _prompt_rows(runs[0], f"results[{name!r}][0]") if len(runs) == 1 else None
        aggregated[name] = {**_measure_stats(runs, single_run_rows), "seeds": len(runs),
                            "tiers": _tier_stats(name, runs, single_run_rows, prompt_tiers)}
    return aggregated


def pareto_front(points: Mapping[str, tuple[float, float]]) -> list[str]:
    """Names of the points ``(accuracy, tokens)`` that no other point dominates, in input order.

    A point is dominated by another with accuracy >= and tokens <= and at least one of the
    two strictly better; identical points do not dominate each other, so both stay on the front.
    """
    return [name for name, point in points.items()
            if not any(_dominates(other, point) for other_name, other in points.items() if other_name != name)]


def verdict(aggregated: Mapping[str, dict], siri: Sequence[str] = ("siri_low", "siri_high"),
            reference: Sequence[str] = ("baseline", "compress_only"),
            tiers: Sequence[str] = ("easy", "medium", "hard"), *, base: str = "base") -> dict:
    """What the numbers say about the SIRI checkpoints; checkpoints and tiers absent from
    ``aggregated`` are skipped.

    Args:
        aggregated: the output of ``aggregate``.
        siri: the SIRI checkpoints the verdict is about.
        reference: the arms each SIRI checkpoint is compared with per tier.
        tiers: the tiers to compare, in this order.
        base: the untrained checkpoint: on the Pareto front, but not counted as dominating.

    Returns:
        ``{"pareto_front": [name, ...]`` (on the means, in ``aggregated`` order),
        ``"dominations": [{"siri", "by", "accuracy_delta_points", "tokens_delta",
        "beyond_spread"}, ...]`` (every non-base checkpoint that dominates a SIRI checkpoint
        on the means; deltas are ``by`` minus ``siri``, accuracy in percentage points;
        ``beyond_spread`` is True when both deltas exceed 2 x the combined standard error
        ``sqrt(sem_a**2 + sem_b**2)``, None when a standard error is unknown),
        ``"per_tier": {tier: [{"siri", "reference", "accuracy_delta_points",
        "accuracy_beyond_spread", "tokens_delta", "tokens_beyond_spread"}, ...]}`` (deltas are
        SIRI minus reference, the flags per axis by the same rule), ``"lines": [str, ...]``
        (plain sentences for a console)}.

    Raises:
        ValueError: ``aggregated`` is empty or its checkpoints have different seed counts.
    """
    if not aggregated:
        raise ValueError("verdict needs at least one aggregated checkpoint")
    seed_counts = {stats["seeds"] for stats in aggregated.values()}
    if len(seed_counts) > 1:
        raise ValueError(f"every aggregated checkpoint needs the same number of seeds, got {sorted(seed_counts)}")
    spread_name = "seed spread" if seed_counts.pop() > 1 else "prompt spread"
    means = {name: (stats["accuracy"]["mean"], stats["mean_tokens"]["mean"]) for name, stats in aggregated.items()}
    front = pareto_front(means)
    siri_present = [name for name in siri if name in aggregated]

    dominations = []
    for name in siri_present:
        for other in aggregated:
            if other not in (name, base) and _dominates(means[other], means[name]):
                accuracy, tokens = _compare(aggregated[other], aggregated[name])
                beyond = _all_beyond(accuracy["beyond_spread"], tokens["beyond_spread"])
                dominations.append({"siri": name, "by": other, "accuracy_delta_points": accuracy["delta"],
                                    "tokens_delta": tokens["delta"], "beyond_spread": beyond})

    per_tier: dict[str, list[dict]] = {}
    for tier in tiers:
        for name in siri_present:
            for ref in reference:
                if ref not in aggregated or tier not in aggregated[name]["tiers"] \
                        or tier not in aggregated[ref]["tiers"]:
                    continue
                accuracy, tokens = _compare(aggregated[name]["tiers"][tier], aggregated[ref]["tiers"][tier])
                per_tier.setdefault(tier, []).append({
                    "siri": name, "reference": ref,
                    "accuracy_delta_points": accuracy["delta"], "accuracy_beyond_spread": accuracy["beyond_spread"],
                    "tokens_delta": tokens["delta"], "tokens_beyond_spread": tokens["beyond_spread"]})

    lines = [f"Pareto front: {', '.join(front)}.", _rule_line(spread_name, aggregated)]
    for name in siri_present:
        lines += _domination_lines(name, [d for d in dominations if d["siri"] == name], spread_name)
    for tier, comparisons in per_tier.items():
        lines += [f"{tier} tier: {c['siri']} vs {c['reference']}: "
                  f"{c['accuracy_delta_points']:+.1f} points ({_spread_word(c['accuracy_beyond_spread'])}), "
                  f"{c['tokens_delta']:+.1f} tokens ({_spread_word(c['tokens_beyond_spread'])})."
                  for c in comparisons]
    return {"pareto_front": front, "dominations": dominations, "per_tier": per_tier, "lines": lines}


def spread(stat: dict) -> float | None:
    """The spread a table or an error bar shows for one stat of ``aggregate``: the std over
    seeds when there are several seeds (how much a rerun moves the number), else the
    single run's standard error over prompts (``sem``; None when unknown)."""
    return stat["std"] if len(stat["values"]) > 1 else stat["sem"]


def format_mean_spread(stat: dict, *, percent: bool = True) -> str:
    """``"84.2% ± 1.3"`` (``percent``: an accuracy fraction shown in %, spread in points) or
    ``"123.4 ± 5.6"`` (tokens), the spread being ``spread(stat)``: std over seeds with
    several seeds, else the single run's standard error over prompts; without a known
    spread only the mean is shown."""
    scale, unit = (100.0, "%") if percent else (1.0, "")
    text = f"{stat['mean'] * scale:.1f}{unit}"
    width = spread(stat)
    return text if width is None else f"{text} ± {width * scale:.1f}"


# ---- helpers ---------------------------------------------------------------------------

def _check_measures(entry: dict, where: str) -> None:
    """Raise ValueError unless ``entry`` has a numeric accuracy in [0, 1] and numeric mean_tokens."""
    for key in MEASURES:
        value = entry.get(key)
        if not isinstance(value, (int, float)) or isinstance(value, bool) or math.isnan(value):
            raise ValueError(f"{where} needs a numeric {key!r}, got {value!r}")
    if not 0.0 <= entry["accuracy"] <= 1.0:
        raise ValueError(f"{where} has accuracy {entry['accuracy']!r}, outside [0, 1]")


def _prompt_rows(run: dict, where: str) -> list[dict]:
    """The run's ``per_prompt`` rows; ValueError when they do not match its ``num_prompts``."""
    rows = run.get("per_prompt") or []
    if rows and run.get("num_prompts") is not None and len(rows) != run["num_prompts"]:
        raise ValueError(f"{where} has {len(rows)} per_prompt rows but num_prompts={run['num_prompts']}")
    return rows


def _measure_stats(entries: Sequence[dict], single_run_rows: list[dict] | None) -> dict[str, dict]:
    """``{"accuracy": stat, "mean_tokens": stat}`` over ``entries`` (one per seed);
    ``single_run_rows`` are the per-prompt rows giving the standard error with one seed."""
    return {key: _stat([float(e[key]) for e in entries],
                       None if single_run_rows is None else [float(r[key]) for r in single_run_rows])
            for key in MEASURES}


def _stat(values: list[float], per_prompt: list[float] | None) -> dict:
    """Mean, sample std, min, max and standard error of ``values`` (one per seed); with one
    value the standard error is that over ``per_prompt`` (None with fewer than two)."""
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    if len(values) > 1:
        sem = std / math.sqrt(len(values))
    elif per_prompt is not None and len(per_prompt) > 1:
        sem = statistics.stdev(per_prompt) / math.sqrt(len(per_prompt))
    else:
        sem = None
    return {"mean": statistics.fmean(values), "std": std, "min": min(values), "max": max(values),
            "values": list(values), "sem": sem}


def _tier_stats(name: str, runs: Sequence[dict], single_run_rows: list[dict] | None,
                prompt_tiers: Mapping[int, str] | None) -> dict[str, dict]:
    """The per-tier stats of one checkpoint (see ``aggregate``)."""
    tier_names = [list(run.get("tiers") or {}) for run in runs]
    if any(set(names) != set(tier_names[0]) for names in tier_names):
        raise ValueError(f"results[{name!r}] has different tiers across seeds: {tier_names}")
    out = {}
    for tier in tier_names[0]:
        entries = [run["tiers"][tier] for run in runs]
        for seed, entry in enumerate(entries):
            _check_measures(entry, f"results[{name!r}][{seed}]['tiers'][{tier!r}]")
        rows = None
        if single_run_rows is not None and prompt_tiers is not None:
            rows = [r for r in single_run_rows if prompt_tiers.get(r["index"]) == tier]
            expected = entries[0].get("num_prompts")
            if expected is not None and len(rows) != expected:
                raise ValueError(f"prompt_tiers assigns {len(rows)} of results[{name!r}][0]'s prompts to tier "
                                 f"{tier!r}, which reports num_prompts={expected}")
        out[tier] = {**_measure_stats(entries, rows), "num_prompts": [e.get("num_prompts") for e in entries]}
    return out


def _dominates(a: tuple[float, float], b: tuple[float, float]) -> bool:
    """Whether ``a = (accuracy, tokens)`` dominates ``b``: no worse on both, better on one."""
    return a[0] >= b[0] and a[1] <= b[1] and (a[0] > b[0] or a[1] < b[1])


def _compare(a: dict, b: dict) -> tuple[dict, dict]:
    """``a`` minus ``b`` (each with "accuracy" and "mean_tokens" stats) per axis:
    ``({"delta", "beyond_spread"} for accuracy in points, the same for tokens)``."""
    out = []
    for key, scale in (("accuracy", 100.0), ("mean_tokens", 1.0)):
        delta = (a[key]["mean"] - b[key]["mean"]) * scale
        sems = (a[key]["sem"], b[key]["sem"])
        beyond = None if None in sems else abs(delta) > SPREAD_FACTOR * math.hypot(*sems) * scale
        out.append({"delta": delta, "beyond_spread": beyond})
    return out[0], out[1]


def _all_beyond(*flags: bool | None) -> bool | None:
    """True when every flag is True, False when any is False, else None (unknown)."""
    if False in flags:
        return False
    return None if None in flags else True


def _spread_word(beyond: bool | None) -> str:
    return {True: "beyond spread", False: "within spread", None: "spread unknown"}[beyond]


def _rule_line(spread_name: str, aggregated: Mapping[str, dict]) -> str:
    seeds = next(iter(aggregated.values()))["seeds"]
    source = (f"the std over {seeds} seeds / sqrt({seeds})" if seeds > 1
              else "the std over prompts / sqrt(prompts) of the single run")
    return (f"Spread rule: a difference is beyond the {spread_name} when it exceeds 2 x the combined standard "
            f"error sqrt(se_a^2 + se_b^2), on both axes for a domination; s.e. = {source}.")


def _domination_lines(name: str, dominations: list[dict], spread_name: str) -> list[str]:
    """One sentence per arm dominating SIRI checkpoint ``name``, then one on whether any does so beyond the spread."""
    lines = []
    for d in dominations:
        if d["beyond_spread"] is None:
            where = f"{spread_name} unknown (no standard error)"
        else:
            where = f"{'beyond' if d['beyond_spread'] else 'within'} the {spread_name} (2 x combined s.e.)"
        lines.append(f"{d['by']} dominates {name}: {d['accuracy_delta_points']:+.1f} points, "
                     f"{d['tokens_delta']:+.1f} tokens, {where}.")
    if not dominations:
        lines.append(f"No arm dominates {name}, not even on the means.")
    elif not any(d["beyond_spread"] for d in dominations):
        unknown = any(d["beyond_spread"] is None for d in dominations)
        lines.append(f"Whether an arm dominates {name} beyond the {spread_name} is unknown." if unknown
                     else f"No arm dominates {name} beyond the {spread_name}.")
    return lines
