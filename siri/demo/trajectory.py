"""Every arm's trajectory in the demo: the eval points at SIRI's peaks and troughs, their
mechanism numbers, the frontier area per cycle, and the mean over seeds the report and the
README show. The shapes are in ``siri.demo.report``'s docstring (``summary["trajectory"]``,
``summary["frontier"]``)."""
from __future__ import annotations

_MECHANISM_KEYS = ("R", "C", "U", "slip_rate", "confirmations")


def point_of(result: dict) -> dict:
    """A trajectory point's numbers from an eval result of ``siri.demo.run.evaluate_checkpoint``:
    accuracy, tokens, truncation, the mechanism's rates (``siri.demo.mechanism``) overall and per
    tier, and the long hard lists' accuracy and tokens."""
    mechanism = result.get("mechanism", {})
    return {"accuracy": result["accuracy"], "mean_tokens": result["mean_tokens"],
            "truncation_rate": result["truncation_rate"],
            **{k: mechanism.get(k) for k in _MECHANISM_KEYS},
            "tiers": {t: {"accuracy": r["accuracy"], "mean_tokens": r["mean_tokens"],
                          **{k: r.get(k) for k in _MECHANISM_KEYS}}
                      for t, r in result["tiers"].items()},
            "long_hard": result.get("long_hard", {"accuracy": None, "mean_tokens": None, "num_prompts": 0})}


def trajectory_summary(results: dict[tuple[str, int, int], dict], schedule, num_steps: int) -> dict:
    """``summary["trajectory"]`` (shape in ``siri.demo.report``'s docstring) from ``{(arm, N, seed): eval
    result}`` (N: steps done, ``step_N``), each point labelled and given its cycle by SIRI's
    ``schedule`` over ``num_steps`` steps (``siri.plot.trajectory_place``)."""
    from siri.plot import trajectory_place

    steps = sorted({n for _, n, _ in results})
    arms: dict[str, dict[str, list[dict]]] = {}
    for (arm, n, seed) in sorted(results, key=lambda key: key[1]):
        label, series = trajectory_place(n - 1, schedule, num_steps)
        arms.setdefault(arm, {}).setdefault(str(seed), []).append(
            {"step": n, "label": label, "series": series, **point_of(results[(arm, n, seed)])})
    return {"steps": steps, "peaks": [p + 1 for p in schedule.peaks(num_steps) if p > 0],
            "troughs": [t + 1 for t in schedule.troughs(num_steps)], "arms": arms}


def frontier_summary(trajectory: dict, l_max: int) -> dict:
    """``summary["frontier"]``: per cycle k (its trough and the peak that closes it), the frontier
    area (``siri.demo.mechanism.frontier_area`` against (``l_max``, 0)) of each arm's two
    points at those steps, per seed: ``{"cycles": [1, ...], "steps": [[trough, peak], ...],
    "siri": {seed: [area, ...]}, "arms": {arm: {seed: [area, ...]}}}``."""
    from siri.demo.mechanism import frontier_area

    cycles = list(zip(trajectory["troughs"], trajectory["peaks"]))
    areas = {arm: {seed: [frontier_area([(p["mean_tokens"], p["accuracy"]) for p in points if p["step"] in cycle],
                                        l_max) for cycle in cycles]
                   for seed, points in by_seed.items()}
             for arm, by_seed in trajectory["arms"].items()}
    return {"cycles": list(range(1, len(cycles) + 1)), "steps": [list(c) for c in cycles],
            "siri": areas.get("siri", {}), "arms": areas}


def mean_trajectory(trajectories: dict[str, list[dict]]) -> list[dict]:
    """SIRI's trajectory averaged over seeds: one point per evaluation (label) that every seed
    with a trajectory made, in the first such seed's order, with the mean accuracy and tokens
    and, over several seeds, their standard deviations as ``accuracy_err`` / ``tokens_err``.
    Seeds without evaluations are left out."""
    import statistics

    runs = [points for points in trajectories.values() if points]
    if not runs:
        return []
    by_label = [{p["label"]: p for p in points} for points in runs]
    averaged = []
    for point in runs[0]:
        same = [labels[point["label"]] for labels in by_label if point["label"] in labels]
        if len(same) < len(runs):
            continue
        accuracy, tokens = [p["accuracy"] for p in same], [p["mean_tokens"] for p in same]
        several = len(same) > 1
        averaged.append({"label": point["label"], "series": point["series"],
                         "accuracy": statistics.fmean(accuracy), "mean_tokens": statistics.fmean(tokens),
                         "accuracy_err": statistics.stdev(accuracy) if several else None,
                         "tokens_err": statistics.stdev(tokens) if several else None,
                         "mechanism": {name: _mean_known([read(p) for p in same])
                                       for name, read in MECHANISM_COLUMNS.items()}})
    return averaged


#: The mechanism's numbers the report shows per trajectory point: name -> how to read it from a point.
MECHANISM_COLUMNS = {
    "R": lambda p: p.get("R"),
    "hard accuracy": lambda p: p.get("tiers", {}).get("hard", {}).get("accuracy"),
    "hard slip rate": lambda p: p.get("tiers", {}).get("hard", {}).get("slip_rate"),
    "hard C": lambda p: p.get("tiers", {}).get("hard", {}).get("C"),
    "hard U": lambda p: p.get("tiers", {}).get("hard", {}).get("U"),
    "long hard accuracy": lambda p: p.get("long_hard", {}).get("accuracy"),
}


def _mean_known(values: list) -> float | None:
    """The mean of ``values``, None when any is None (a rate without a denominator in a seed)."""
    import statistics

    return None if not values or any(v is None for v in values) else statistics.fmean(values)


def mean_trajectories(summary: dict) -> dict[str, list[dict]]:
    """Each arm's trajectory averaged over seeds (``mean_trajectory``), arm -> points."""
    return {arm: mean_trajectory(by_seed) for arm, by_seed in summary["trajectory"]["arms"].items()}
