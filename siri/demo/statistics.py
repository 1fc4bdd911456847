"""Paired comparisons for the demo's verdict: Student's t on per-seed (or per-prompt)
differences, Holm's step-down correction, and the two-axis win rule (accuracy higher is
better, tokens lower is better). Pure Python: the t distribution is computed here, from the
regularized incomplete beta function (a continued fraction), with no scipy.

    d = paired_difference([0.965, 0.922, 0.932], [0.969, 0.978, 0.996])   # a - b per seed
    d.mean, d.se, d.df, d.t, d.p_value, d.beyond(0.05)
    holm({"easy": 0.01, "hard": 0.04}, alpha=0.05)                          # {"easy": True, "hard": False}
    compare({"accuracy": [...], "mean_tokens": [...]}, {...}, alpha=0.05).outcome   # "a wins" | "b wins" | "tie"

Why paired: every arm is trained and evaluated with the same seeds (seed i of one arm shares
the eval draws, the data order and the base with seed i of every other arm), so what moves
all arms together from seed to seed cancels in the per-seed difference. The test is then a
one-sample t test of the differences against 0 with ``seeds - 1`` degrees of freedom; with
3 seeds its two-sided 5% threshold is 4.303 standard errors, not the 1.96 of a z rule.
"""
from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

__all__ = ["AXES", "Comparison", "PairedDifference", "better", "compare", "holm", "outcome", "paired_difference",
           "t_cdf", "t_quantile", "t_two_sided_p"]

AXES: dict[str, int] = {"accuracy": +1, "mean_tokens": -1}
"""The axes ``compare`` reads: name -> +1 where higher is better, -1 where lower is better."""

_RELATIVE_ZERO = 1e-12  # differences whose spread is below this x the size of the numbers count as constant


# ---- Student's t distribution ------------------------------------------------------------

def t_two_sided_p(t: float, df: float) -> float:
    """``P(|T| >= |t|)`` for Student's t with ``df`` degrees of freedom (``df`` > 0, may be
    ``math.inf``: the normal distribution); ``t`` may be infinite (p = 0)."""
    _check_df(df)
    if math.isnan(t):
        raise ValueError("t must be a number, got nan")
    t = abs(t)
    if math.isinf(t):
        return 0.0
    if math.isinf(df):
        return math.erfc(t / math.sqrt(2.0))
    # P(|T| >= t) = I_x(df/2, 1/2) with x = df / (df + t^2); 1 - x = t^2 / (df + t^2) computed directly
    return _regularized_beta(df / 2.0, 0.5, df / (df + t * t), t * t / (df + t * t))


def t_cdf(t: float, df: float) -> float:
    """``P(T <= t)`` for Student's t with ``df`` degrees of freedom (see ``t_two_sided_p``)."""
    tail = t_two_sided_p(t, df) / 2.0
    return 1.0 - tail if t > 0 else tail


def t_quantile(q: float, df: float) -> float:
    """The ``q`` quantile of Student's t with ``df`` degrees of freedom, ``0 < q < 1``
    (``t_quantile(0.975, 2) = 4.303``). Bisection on ``t_two_sided_p``, to about 1e-12 relative."""
    _check_df(df)
    if not 0.0 < q < 1.0:
        raise ValueError(f"q must be in (0, 1), got {q!r}")
    if q == 0.5:
        return 0.0
    if q < 0.5:
        return -t_quantile(1.0 - q, df)
    if math.isinf(df):
        return statistics.NormalDist().inv_cdf(q)
    target = 2.0 * (1.0 - q)  # the two-sided p-value of the quantile; decreasing in t
    low, high = 0.0, 1.0
    while t_two_sided_p(high, df) > target:
        low, high = high, 2.0 * high
    while high - low > 1e-12 * high:
        middle = (low + high) / 2.0
        if t_two_sided_p(middle, df) > target:
            low = middle
        else:
            high = middle
    return (low + high) / 2.0


def _check_df(df: float) -> None:
    if not df > 0:  # also rejects nan
        raise ValueError(f"degrees of freedom must be > 0, got {df!r}")


def _regularized_beta(a: float, b: float, x: float, y: float) -> float:
    """``I_x(a, b)``, the regularized incomplete beta function, with ``y = 1 - x`` passed in
    (so that a tiny ``1 - x`` keeps its digits). The continued fraction converges fast for
    ``x < (a + 1) / (a + b + 2)``; above that, ``I_x(a, b) = 1 - I_y(b, a)``."""
    if x <= 0.0:
        return 0.0
    if y <= 0.0:
        return 1.0
    if x > (a + 1.0) / (a + b + 2.0):
        return 1.0 - _regularized_beta(b, a, y, x)
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log(y)
    return math.exp(log_front) / a * _beta_fraction(a, b, x)


def _beta_fraction(a: float, b: float, x: float) -> float:
    """``1 / g`` with ``g = 1 + d1 / (1 + d2 / (1 + ...))``, the continued fraction of the
    incomplete beta function: ``d(2m+1) = -(a+m)(a+b+m) x / ((a+2m)(a+2m+1))`` and
    ``d(2m) = m(b-m) x / ((a+2m-1)(a+2m))``. ``g`` is evaluated front to back with Lentz's
    method (ratios C and D of successive numerators and denominators, kept off zero)."""
    tiny = 1e-300
    g, c, d = 1.0, 1.0, 0.0
    for n in range(1, 10_000):
        m = n // 2
        if n % 2:
            term = -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))
        else:
            term = m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m))
        d = 1.0 + term * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + term / c
        c = c if abs(c) > tiny else tiny
        g *= c * d
        if abs(c * d - 1.0) < 1e-15:
            return 1.0 / g
    raise ArithmeticError(f"the incomplete beta fraction did not converge for a={a}, b={b}, x={x}")


# ---- paired differences ------------------------------------------------------------------

@dataclass(frozen=True)
class PairedDifference:
    """``a - b`` paired by position (seed i of ``a`` with seed i of ``b``): the per-pair
    differences, their mean, the mean's standard error (sample std / sqrt(pairs)),
    ``df = pairs - 1``, the t statistic ``mean / se`` and its two-sided p-value.

    Differences that are all equal (zero spread, up to rounding) have ``se = 0``: a nonzero
    mean is then beyond any threshold (``t = ±inf``, ``p = 0``), a zero mean never is
    (``t = 0``, ``p = 1``)."""

    differences: tuple[float, ...]
    mean: float
    se: float
    df: int
    t: float
    p_value: float

    @property
    def pairs(self) -> int:
        return len(self.differences)

    def critical_t(self, alpha: float) -> float:
        """The two-sided threshold on ``|t|`` at level ``alpha``: ``t_quantile(1 - alpha / 2, df)``."""
        _check_alpha(alpha)
        return t_quantile(1.0 - alpha / 2.0, self.df)

    def threshold(self, alpha: float) -> float:
        """The smallest ``|mean|`` that is beyond at level ``alpha`` (in the units of the
        differences): ``critical_t(alpha) * se``, the half-width of the ``1 - alpha`` interval."""
        return self.critical_t(alpha) * self.se

    def beyond(self, alpha: float) -> bool:
        """Whether the mean difference is nonzero at two-sided level ``alpha``:
        ``|t| > t_quantile(1 - alpha / 2, pairs - 1)``."""
        return abs(self.t) > self.critical_t(alpha)


def paired_difference(a_per_seed: Sequence[float], b_per_seed: Sequence[float]) -> PairedDifference:
    """The paired difference ``a - b``, element i of ``a_per_seed`` with element i of
    ``b_per_seed`` (the same seed).

    Raises:
        ValueError: the sequences differ in length, have fewer than 2 pairs (no spread to test
            against: one seed cannot tell a method from its seed), or hold a non-finite value.
    """
    a, b = [float(v) for v in a_per_seed], [float(v) for v in b_per_seed]
    if len(a) != len(b):
        raise ValueError(f"paired_difference needs one value per seed on both sides, got {len(a)} and {len(b)}")
    if len(a) < 2:
        raise ValueError(f"paired_difference needs at least 2 seeds (pairs) to estimate a spread, got {len(a)}")
    if not all(math.isfinite(v) for v in a + b):
        raise ValueError(f"paired_difference needs finite values, got {a} and {b}")
    differences = tuple(x - y for x, y in zip(a, b))
    mean = statistics.fmean(differences)
    se = statistics.stdev(differences) / math.sqrt(len(differences))
    df = len(differences) - 1
    zero = _RELATIVE_ZERO * max(1.0, *(abs(v) for v in a + b))
    if se <= zero:
        if abs(mean) <= zero:
            return PairedDifference(differences, mean, 0.0, df, 0.0, 1.0)
        return PairedDifference(differences, mean, 0.0, df, math.copysign(math.inf, mean), 0.0)
    t = mean / se
    return PairedDifference(differences, mean, se, df, t, t_two_sided_p(t, df))


# ---- multiplicity ------------------------------------------------------------------------

def holm(p_values: Mapping[str, float], alpha: float) -> dict[str, bool]:
    """Holm-Bonferroni step-down: which hypotheses to reject at family-wise level ``alpha``.

    Sort the m p-values ascending; reject the k-th smallest (k = 1..m) while
    ``p_(k) < alpha / (m - k + 1)``, and stop at the first that is not (it and every larger one
    stay). Uniformly more powerful than Bonferroni (every ``p < alpha / m``) at the same
    family-wise error. Strict ``<``, like ``PairedDifference.beyond``, so a family of one is
    that test alone. Returns name -> rejected, in the input order.
    """
    _check_alpha(alpha)
    for name, p in p_values.items():
        if not 0.0 <= p <= 1.0:  # also rejects nan
            raise ValueError(f"p-value {name!r} must be in [0, 1], got {p!r}")
    m = len(p_values)
    rejected = dict.fromkeys(p_values, False)
    for k, name in enumerate(sorted(p_values, key=p_values.__getitem__)):
        if not p_values[name] < alpha / (m - k):
            break
        rejected[name] = True
    return rejected


# ---- two-axis comparison -----------------------------------------------------------------

@dataclass(frozen=True)
class Comparison:
    """``compare(a, b)``: ``outcome`` ("a wins", "b wins" or "tie"), the per-axis paired
    differences ``a - b`` and each axis's ``better`` (+1: a better beyond the threshold,
    -1: b better beyond it, 0: within)."""

    outcome: str
    differences: dict[str, PairedDifference]
    better: dict[str, int]
    alpha: float


def better(differences: Mapping[str, PairedDifference], beyond: Mapping[str, bool],
           axes: Mapping[str, int] = AXES) -> dict[str, int]:
    """Per axis, which side is better beyond the threshold: +1 where a is (the difference
    ``a - b`` is beyond and points the better way), -1 where b is, 0 where it is not beyond.
    ``beyond`` says per axis whether the difference is beyond: ``differences[axis].beyond(alpha)``,
    or a family's ``holm`` decision."""
    return {axis: direction * _sign(differences[axis].mean) if beyond[axis] else 0 for axis, direction in axes.items()}


def outcome(better_by_axis: Mapping[str, int]) -> str:
    """The win rule over axes, on ``better``'s +1 / -1 / 0 per axis: "a wins" when a is better
    on at least one axis and worse on none; "b wins" symmetrically; "tie" otherwise (nothing
    beyond, or a trade-off: each better on a different axis)."""
    signs = set(better_by_axis.values())
    if not signs <= {-1, 0, 1}:
        raise ValueError(f"better_by_axis must map each axis to -1, 0 or +1, got {dict(better_by_axis)}")
    if 1 in signs and -1 not in signs:
        return "a wins"
    if -1 in signs and 1 not in signs:
        return "b wins"
    return "tie"


def compare(a: Mapping[str, Sequence[float]], b: Mapping[str, Sequence[float]], *, alpha: float,
            axes: Mapping[str, int] = AXES) -> Comparison:
    """Compare two arms per seed on every axis (default: accuracy, higher better; mean
    tokens, lower better): a paired t on each axis at level ``alpha``, then ``outcome``.

    An arm wins when it is better beyond the paired threshold on one axis and not worse
    beyond it on the other, so a win on accuracy at equal length (or on length at equal
    accuracy) is reported; a domination on both axes is the special case of two.

    Args:
        a, b: axis -> one value per seed, the seeds in the same order on both sides.
        alpha: the two-sided level of each axis's test (no correction across axes or pairs:
            for a family of comparisons, pass the p-values to ``holm`` and its decisions to
            ``better`` and ``outcome``).
        axes: axis -> +1 (higher is better) or -1 (lower is better).
    """
    _check_alpha(alpha)
    for axis, direction in axes.items():
        if direction not in (-1, 1):
            raise ValueError(f"axes[{axis!r}] must be +1 (higher is better) or -1 (lower is better), got {direction!r}")
        if axis not in a or axis not in b:
            raise ValueError(f"compare needs per-seed values of {axis!r} on both sides")
    differences = {axis: paired_difference(a[axis], b[axis]) for axis in axes}
    by_axis = better(differences, {axis: d.beyond(alpha) for axis, d in differences.items()}, axes)
    return Comparison(outcome(by_axis), differences, by_axis, alpha)


def _sign(value: float) -> int:
    return (value > 0) - (value < 0)


def _check_alpha(alpha: float) -> None:
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
