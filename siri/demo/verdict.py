"""The demo's verdict, computed from the eval numbers: which checkpoints are on the
accuracy-vs-tokens Pareto front, whether any arm beats SIRI-low or SIRI-high (or they beat it)
beyond the spread, and the per-tier effect of SIRI against the reference arms.

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

The test (``siri.demo.statistics``), used by every "beyond the spread" below: a paired t test
on each axis. With several seeds the pairs are the seeds (seed i of one checkpoint with seed i
of the other: the seeds share data order, eval draws and base, so what moves every arm
together cancels), ``df = seeds - 1``; with one seed they are the eval prompts of that run
(matched by prompt index), ``df = prompts - 1``. Two-sided, level ``alpha`` (0.05 unless
told). An arm beats another when it is better beyond the threshold on one axis (accuracy up,
or tokens down) and not worse beyond it on the other; beyond on both is a domination, and a
win on one axis at a tie on the other counts too. The overall comparisons are each tested at
``alpha``; the per-tier claims are corrected with Holm over all the per-tier tests of the
verdict (every tier x SIRI checkpoint x reference x axis).
"""
from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence

from siri.demo.statistics import PairedDifference, better, compare, holm, outcome, paired_difference

__all__ = ["DEFAULT_ALPHA", "aggregate", "format_mean_spread", "pareto_front", "spread", "verdict"]

MEASURES = ("accuracy", "mean_tokens")
DEFAULT_ALPHA = 0.05  # the two-sided level of every paired test (per-tier tests: family-wise, with Holm)
_SCALE = {"accuracy": 100.0, "mean_tokens": 1.0}  # accuracy deltas in percentage points, tokens in tokens
_AXIS_KEY = {"accuracy": "accuracy", "mean_tokens": "tokens"}  # the verdict's key for each measure


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
        With one seed and per-prompt rows a stat also has ``"prompts"`` (the prompt indices,
        ascending) and ``"prompt_values"`` (the value per prompt, in that order): the pairs of
        the verdict's paired test with one seed.
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
            tiers: Sequence[str] = ("easy", "medium", "hard"), *, base: str = "base",
            alpha: float = DEFAULT_ALPHA) -> dict:
    """What the numbers say about the SIRI checkpoints; checkpoints and tiers absent from
    ``aggregated`` are skipped. The test is described in the module docstring.

    Args:
        aggregated: the output of ``aggregate``.
        siri: the SIRI checkpoints the verdict is about.
        reference: the arms each SIRI checkpoint is compared with per tier.
        tiers: the tiers to compare, in this order.
        base: the untrained checkpoint: on the Pareto front, but not compared with.
        alpha: the two-sided level of each overall paired test, and the family-wise level of
            the per-tier tests (Holm).

    Returns:
        ``{"pareto_front": [name, ...]`` (on the means, in ``aggregated`` order),
        ``"test": {"name": "paired t", "paired_on": "seeds" | "prompts", "pairs", "df",
        "alpha", "tier_tests"}`` (``pairs`` / ``df``: of the overall comparisons; None when
        unknown),
        ``"comparisons": [comparison, ...]`` (each SIRI checkpoint against every other non-base
        checkpoint: ``{"siri", "other", "outcome", "dominates_on_means", "accuracy_delta_points",
        "tokens_delta", "accuracy": test, "tokens": test}``, deltas ``other`` minus ``siri``
        (accuracy in points); ``outcome`` is ``"<siri> wins"``, ``"<other> wins"``, ``"tie"``
        or ``"unknown"`` (no pairs to test); ``dominates_on_means``: ``other`` dominates
        ``siri`` on the means),
        ``"dominations": [{"siri", "by", "accuracy_delta_points", "tokens_delta",
        "beyond_spread"}, ...]`` (the comparisons where ``by`` dominates ``siri`` on the means;
        ``beyond_spread``: ``by`` wins by the paired test, None when unknown),
        ``"per_tier": {tier: [{"siri", "reference", "outcome", "accuracy_delta_points",
        "accuracy_beyond_spread", "tokens_delta", "tokens_beyond_spread", "accuracy": test,
        "tokens": test}, ...]}`` (deltas SIRI minus reference; the ``beyond`` flags after Holm
        over every per-tier test, the outcome by the win rule on them),
        ``"lines": [str, ...]`` (plain sentences for a console)}, where a ``test`` is
        ``{"p_value", "df", "se", "threshold", "beyond"}`` (``se`` and ``threshold``, the
        smallest |delta| beyond at ``alpha`` before any correction, in points or tokens;
        every field None when unknown).

    Raises:
        ValueError: ``aggregated`` is empty, its checkpoints have different seed counts, or
            ``alpha`` is not in (0, 1).
    """
    if not aggregated:
        raise ValueError("verdict needs at least one aggregated checkpoint")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
    seed_counts = {stats["seeds"] for stats in aggregated.values()}
    if len(seed_counts) > 1:
        raise ValueError(f"every aggregated checkpoint needs the same number of seeds, got {sorted(seed_counts)}")
    seeds = seed_counts.pop()
    spread_name = "seed spread" if seeds > 1 else "prompt spread"
    means = {name: (stats["accuracy"]["mean"], stats["mean_tokens"]["mean"]) for name, stats in aggregated.items()}
    front = pareto_front(means)
    siri_present = [name for name in siri if name in aggregated]

    comparisons = [_overall(name, other, aggregated, means, alpha)
                   for name in siri_present for other in aggregated if other not in (name, base)]
    dominations = [{"siri": c["siri"], "by": c["other"], "accuracy_delta_points": c["accuracy_delta_points"],
                    "tokens_delta": c["tokens_delta"],
                    "beyond_spread": None if c["outcome"] == "unknown" else c["outcome"] == f"{c['other']} wins"}
                   for c in comparisons if c["dominates_on_means"]]
    per_tier = _per_tier(aggregated, siri_present, reference, tiers, alpha)
    tier_tests = 2 * sum(len(entries) for entries in per_tier.values())

    pairs = seeds if seeds > 1 else next(
        (c["accuracy"]["df"] + 1 for c in comparisons if c["accuracy"]["df"] is not None), None)
    test = {"name": "paired t", "paired_on": "seeds" if seeds > 1 else "prompts",
            "pairs": pairs, "df": None if pairs is None else pairs - 1, "alpha": alpha, "tier_tests": tier_tests}
    lines = [f"Pareto front: {', '.join(front)}.", _rule_line(test, spread_name)]
    for name in siri_present:
        lines += _comparison_lines(name, [c for c in comparisons if c["siri"] == name], spread_name)
    for tier, entries in per_tier.items():
        lines += [_tier_line(tier, entry) for entry in entries]
    return {"pareto_front": front, "test": test, "comparisons": comparisons, "dominations": dominations,
            "per_tier": per_tier, "lines": lines}


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
    ``single_run_rows`` are the per-prompt rows giving the standard error (and the pairs of
    the paired test) with one seed."""
    rows = None if single_run_rows is None else sorted(single_run_rows, key=lambda r: r["index"])
    return {key: _stat([float(e[key]) for e in entries],
                       None if rows is None else [(int(r["index"]), float(r[key])) for r in rows])
            for key in MEASURES}


def _stat(values: list[float], per_prompt: list[tuple[int, float]] | None) -> dict:
    """Mean, sample std, min, max and standard error of ``values`` (one per seed); with one
    value the standard error is that over ``per_prompt`` ((index, value) rows; None with
    fewer than two), whose indices and values the stat keeps for the paired test."""
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    prompt_values = [value for _, value in per_prompt or []]
    if len(values) > 1:
        sem = std / math.sqrt(len(values))
    elif len(prompt_values) > 1:
        sem = statistics.stdev(prompt_values) / math.sqrt(len(prompt_values))
    else:
        sem = None
    stat = {"mean": statistics.fmean(values), "std": std, "min": min(values), "max": max(values),
            "values": list(values), "sem": sem}
    if len(values) == 1 and per_prompt:
        stat.update(prompts=[index for index, _ in per_prompt], prompt_values=prompt_values)
    return stat


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


def _pairs(a: dict, b: dict) -> tuple[dict[str, list[float]], dict[str, list[float]]] | None:
    """The paired values of two checkpoints (or two checkpoints' tiers), each ``{"accuracy":
    stat, "mean_tokens": stat}``: per measure, one value per seed, or with one seed one per
    eval prompt (matched by index). None when there is nothing to pair: one seed without
    per-prompt values on both sides, different prompts, or fewer than two of them."""
    if len(a["accuracy"]["values"]) > 1:
        return ({key: a[key]["values"] for key in MEASURES}, {key: b[key]["values"] for key in MEASURES})
    for key in MEASURES:
        prompts = a[key].get("prompts")
        if prompts is None or prompts != b[key].get("prompts") or len(prompts) < 2:
            return None
    return ({key: a[key]["prompt_values"] for key in MEASURES}, {key: b[key]["prompt_values"] for key in MEASURES})


def _test(difference: PairedDifference | None, beyond: bool | None, key: str, alpha: float) -> dict:
    """One axis's test as the verdict reports it (``se`` and ``threshold`` in points or tokens)."""
    if difference is None:
        return {"p_value": None, "df": None, "se": None, "threshold": None, "beyond": None}
    return {"p_value": difference.p_value, "df": difference.df, "se": difference.se * _SCALE[key],
            "threshold": difference.threshold(alpha) * _SCALE[key], "beyond": beyond}


def _overall(name: str, other: str, aggregated: Mapping[str, dict], means: Mapping[str, tuple[float, float]],
             alpha: float) -> dict:
    """SIRI checkpoint ``name`` against checkpoint ``other`` (see ``verdict``'s "comparisons")."""
    pairs = _pairs(aggregated[other], aggregated[name])
    entry = {"siri": name, "other": other, "outcome": "unknown",
             "dominates_on_means": _dominates(means[other], means[name]),
             **_deltas(aggregated[other], aggregated[name])}
    if pairs is None:
        return {**entry, **{_AXIS_KEY[key]: _test(None, None, key, alpha) for key in MEASURES}}
    result = compare(*pairs, alpha=alpha)
    entry["outcome"] = {"a wins": f"{other} wins", "b wins": f"{name} wins", "tie": "tie"}[result.outcome]
    return {**entry, **{_AXIS_KEY[key]: _test(result.differences[key], result.better[key] != 0, key, alpha)
                        for key in MEASURES}}


def _per_tier(aggregated: Mapping[str, dict], siri: Sequence[str], reference: Sequence[str],
              tiers: Sequence[str], alpha: float) -> dict[str, list[dict]]:
    """Every SIRI checkpoint against every reference per tier (see ``verdict``'s "per_tier"),
    the axes' flags after Holm over all these tests (an unknown one counts as p = 1)."""
    found = []  # (tier, siri, reference, {measure: PairedDifference | None})
    for tier in tiers:
        for name in siri:
            for ref in reference:
                if ref not in aggregated or tier not in aggregated[name]["tiers"] \
                        or tier not in aggregated[ref]["tiers"]:
                    continue
                pairs = _pairs(aggregated[name]["tiers"][tier], aggregated[ref]["tiers"][tier])
                differences = {key: None if pairs is None else paired_difference(pairs[0][key], pairs[1][key])
                               for key in MEASURES}
                found.append((tier, name, ref, differences))
    p_values = {f"{tier}/{name}/{ref}/{key}": 1.0 if d is None else d.p_value
                for tier, name, ref, differences in found for key, d in differences.items()}
    rejected = holm(p_values, alpha) if p_values else {}
    per_tier: dict[str, list[dict]] = {}
    for tier, name, ref, differences in found:
        beyond = {key: None if d is None else rejected[f"{tier}/{name}/{ref}/{key}"] for key, d in differences.items()}
        known = {key: d for key, d in differences.items() if d is not None}
        if len(known) < len(MEASURES):
            result = "unknown"
        else:
            won = outcome(better(known, {key: rejected[f"{tier}/{name}/{ref}/{key}"] for key in known}))
            result = {"a wins": f"{name} wins", "b wins": f"{ref} wins", "tie": "tie"}[won]
        deltas = _deltas(aggregated[name]["tiers"][tier], aggregated[ref]["tiers"][tier])
        per_tier.setdefault(tier, []).append({
            "siri": name, "reference": ref, "outcome": result,
            "accuracy_delta_points": deltas["accuracy_delta_points"], "accuracy_beyond_spread": beyond["accuracy"],
            "tokens_delta": deltas["tokens_delta"], "tokens_beyond_spread": beyond["mean_tokens"],
            **{_AXIS_KEY[key]: _test(differences[key], beyond[key], key, alpha) for key in MEASURES}})
    return per_tier


def _deltas(a: dict, b: dict) -> dict[str, float]:
    """``a`` minus ``b`` on the means: accuracy in points, tokens in tokens."""
    return {"accuracy_delta_points": (a["accuracy"]["mean"] - b["accuracy"]["mean"]) * _SCALE["accuracy"],
            "tokens_delta": a["mean_tokens"]["mean"] - b["mean_tokens"]["mean"]}


def _p_text(p: float | None) -> str:
    if p is None:
        return "p unknown"
    return "p=0" if p == 0 else f"p={p:.1e}" if p < 0.001 else f"p={p:.3f}"


def _axis_text(delta: float, test: dict, unit: str) -> str:
    """``"+4.1 points (p=0.159, within)"``."""
    word = {True: "beyond", False: "within", None: "unknown"}[test["beyond"]]
    delta = 0.0 if round(delta, 1) == 0 else delta  # no "-0.0"
    return f"{delta:+.1f} {unit} ({_p_text(test['p_value'])}, {word})"


def _rule_line(test: dict, spread_name: str) -> str:
    if test["paired_on"] == "seeds":
        head, pairs = f"paired t, df={test['df']}", "per-seed differences (seed i of one arm with seed i of the other)"
    else:
        head = "paired t, df=prompts-1"
        pairs = (f"one seed, so per-prompt differences over the run's eval prompts ({test['pairs']} overall)"
                 if test["pairs"] else "one seed and no per-prompt values: nothing to pair")
    return (f"Test ({spread_name}): {head}, alpha={test['alpha']:g}, Holm over {test['tier_tests']} tier tests: "
            f"{pairs}, two-sided; an arm beats another when it is better beyond the threshold on one axis "
            f"(accuracy, tokens) and not worse beyond it on the other; overall comparisons each at alpha, "
            f"per-tier claims corrected over the tier tests.")


def _comparison_lines(name: str, comparisons: list[dict], spread_name: str) -> list[str]:
    """The comparisons of SIRI checkpoint ``name`` worth a sentence (wins either way,
    trade-offs beyond the spread, dominations on the means), then one on whether any arm
    beats it beyond the spread."""
    lines = []
    for c in comparisons:
        other = c["other"]
        if c["outcome"] in (f"{other} wins", f"{name} wins"):
            winner, loser, sign = (other, name, 1.0) if c["outcome"] == f"{other} wins" else (name, other, -1.0)
            lines.append(f"{winner} beats {loser} beyond the {spread_name}: "
                         f"{_axis_text(sign * c['accuracy_delta_points'], c['accuracy'], 'points')}, "
                         f"{_axis_text(sign * c['tokens_delta'], c['tokens'], 'tokens')}.")
        elif c["accuracy"]["beyond"] and c["tokens"]["beyond"]:
            lines.append(f"{other} vs {name}: a trade-off beyond the {spread_name}: "
                         f"{_axis_text(c['accuracy_delta_points'], c['accuracy'], 'points')}, "
                         f"{_axis_text(c['tokens_delta'], c['tokens'], 'tokens')}.")
        elif c["dominates_on_means"]:
            where = (f"the {spread_name} unknown (nothing to pair)" if c["outcome"] == "unknown"
                     else f"within the {spread_name}")
            lines.append(f"{other} dominates {name} on the means, {where}: "
                         f"{_axis_text(c['accuracy_delta_points'], c['accuracy'], 'points')}, "
                         f"{_axis_text(c['tokens_delta'], c['tokens'], 'tokens')}.")
    if any(c["outcome"] == f"{c['other']} wins" for c in comparisons):
        return lines
    if any(c["outcome"] == "unknown" for c in comparisons):
        lines.append(f"Whether an arm beats {name} beyond the {spread_name} is unknown.")
    elif any(c["dominates_on_means"] for c in comparisons):
        lines.append(f"No arm beats {name} beyond the {spread_name}.")
    else:
        lines.append(f"No arm beats {name} beyond the {spread_name}; none dominates it even on the means.")
    return lines


def _tier_line(tier: str, c: dict) -> str:
    return (f"{tier} tier: {c['siri']} vs {c['reference']}: "
            f"{_axis_text(c['accuracy_delta_points'], c['accuracy'], 'points')}, "
            f"{_axis_text(c['tokens_delta'], c['tokens'], 'tokens')}: {c['outcome']}.")
