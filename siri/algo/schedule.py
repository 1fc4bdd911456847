"""Length schedules: the maximum response length (the "cap") as a pure function of the step.

    from siri.algo.schedule import make_schedule
    s = make_schedule("cosine", l_max=16384, l_min=8192, period=640, multiple_of=16)
    s(0), s(320)          # 16384, 8192
    s.phase(100)          # "compress"
    s.peaks(1920)         # [0, 640, 1280]  (checkpoint the expanded model here)
    s.troughs(1920)       # [320, 960, 1600] (and the compressed one here)
    s.longest_cap(1920), s.shortest_cap(1920)   # 16384, 8192

Kinds and their continuous value ``L(t)`` (mid = (l_max+l_min)/2, amp = (l_max-l_min)/2):

- ``constant``: ``l_max``.
- ``cosine``: ``mid + amp*cos(2*pi*t/period)``: l_max at t=0, l_min at t=period/2.
- ``stair``: l_max for the first ``1-compress_fraction`` of each period, then l_min.
- ``stair_cosine``: with ``phi = 2*pi*(t mod period)/period``: l_max for phi < pi/4 or
  phi >= 7pi/4; ``mid + amp*cos(2(phi-pi/4))`` on [pi/4, 3pi/4); l_min on [3pi/4, 5pi/4);
  ``mid + amp*cos(2(phi-3pi/4))`` on [5pi/4, 7pi/4).
- ``piecewise``: ``points=[(step, cap), ...]``: ``cap`` from ``step`` on (the first at step 0).

The cap is ``s(t) = max(multiple_of, floor(round(L(t)) / multiple_of) * multiple_of)``
(Python's ``round``, i.e. halves go to the even integer).

Phase: ``s.phase(t)`` is the direction of the change that led to step t, read on the
unrounded ``L``: "compress" when ``L(t) < L(t-1)`` (the cap is falling, or has just reached
a trough), "expand" when ``L(t) > L(t-1)`` (rising, or at a peak). When ``L(t) == L(t-1)``
(a plateau) the phase is that of the most recent change before t, so the l_min plateau of a
stair is "compress" and the l_max plateau "expand"; a schedule that never changed (constant,
or a piecewise schedule before its first change) is "expand". Periodic schedules are
continued backwards, so for cosine ``phase(0)`` sees ``L(-1) < L(0)``: step 0 is a peak.

Peaks and troughs are where the phase flips: t is a peak when ``phase(t) == "expand"`` and
``phase(t+1) == "compress"`` (the last step of an expansion), a trough in the opposite case.
For cosine with an even period they are the exact extrema (0, period, ... and period/2, ...);
for stair they are the last step at l_max and the last step at l_min of each period.

Schedules are frozen dataclasses; ``to_dict()`` gives a JSON/YAML-friendly dict and
``schedule_from_dict`` rebuilds the same schedule from it.
"""
from __future__ import annotations

import abc

import math
import operator
from dataclasses import dataclass, field
from typing import Any, Sequence

__all__ = ["KINDS", "LengthSchedule", "make_schedule", "schedule_from_dict"]

PARAMS = ("l_max", "l_min", "period", "compress_fraction", "points", "multiple_of")

# Two unrounded values closer than this (relative) count as equal when reading the phase, so
# that float noise in cos() does not invent a tiny rise or fall (e.g. odd cosine periods).
_REL_TOL = 1e-12


@dataclass(frozen=True)
class LengthSchedule(abc.ABC):
    """Base class: subclasses define ``kind`` and ``value(t)``, the unrounded cap ``L(t)``."""

    multiple_of: int = 1
    kind: str = field(default="", init=False, repr=False)

    # ---- what subclasses provide -------------------------------------------------------
    @abc.abstractmethod
    def value(self, t: int) -> float:
        """The unrounded cap ``L(t)``; periodic schedules accept negative t."""
        ...

    def _lookback(self) -> int:
        """How many steps back a plateau can extend before the phase is known to be "expand".
        Used by the default :meth:`phase`; a subclass that overrides ``phase`` needs none."""
        raise NotImplementedError(f"{type(self).__name__} must define _lookback or override phase")

    @abc.abstractmethod
    def _params(self) -> dict[str, Any]:
        ...

    def _extreme_candidates(self, num_steps: int) -> Sequence[int]:
        """Steps in [0, num_steps) among which the run's largest and smallest caps both occur
        (every step unless a subclass knows better)."""
        return range(num_steps)

    # ---- the interface -----------------------------------------------------------------
    def __call__(self, t: int) -> int:
        """The cap at step ``t``: ``round(L(t))`` floored to a multiple of ``multiple_of``."""
        t = _check_step(t)
        m = self.multiple_of
        return max(m, (round(self.value(t)) // m) * m)

    def _direction(self, t: int) -> int:
        """+1 if ``L(t) > L(t-1)``, -1 if smaller, 0 if equal (within float noise)."""
        cur, prev = self.value(t), self.value(t - 1)
        if math.isclose(cur, prev, rel_tol=_REL_TOL, abs_tol=0.0):
            return 0
        return 1 if cur > prev else -1

    def phase(self, t: int) -> str:
        """"compress" (falling, or at a trough) or "expand" (rising, or at a peak); see the
        module docstring for the exact rule."""
        t = _check_step(t)
        for u in range(t, t - self._lookback() - 1, -1):
            d = self._direction(u)
            if d:
                return "expand" if d > 0 else "compress"
        return "expand"

    def peaks(self, num_steps: int) -> list[int]:
        """Steps t in [0, num_steps) that end an expansion (phase flips to "compress" at t+1)."""
        return self._flips(num_steps, "expand", "compress")

    def troughs(self, num_steps: int) -> list[int]:
        """Steps t in [0, num_steps) that end a compression (phase flips to "expand" at t+1)."""
        return self._flips(num_steps, "compress", "expand")

    def _flips(self, num_steps: int, here: str, after: str) -> list[int]:
        if num_steps < 0:
            raise ValueError(f"num_steps must be >= 0, got {num_steps}")
        phases = [self.phase(t) for t in range(num_steps + 1)]
        return [t for t in range(num_steps) if phases[t] == here and phases[t + 1] == after]

    def longest_cap(self, num_steps: int) -> int:
        """The largest cap over steps [0, num_steps): what must hold a whole response (the
        engine's ``max_seq_len``, evaluation's default cap). Exact and cheap for any length of
        run: a periodic schedule looks at one period, a piecewise one at its points."""
        return max(self(t) for t in self._extreme_candidates(_check_num_steps(num_steps)))

    def shortest_cap(self, num_steps: int) -> int:
        """The smallest cap over steps [0, num_steps) (found like :meth:`longest_cap`)."""
        return min(self(t) for t in self._extreme_candidates(_check_num_steps(num_steps)))

    def to_dict(self) -> dict[str, Any]:
        """A plain dict (kind plus parameters) that ``schedule_from_dict`` turns back into an
        equal schedule."""
        return {"kind": self.kind, **self._params(), "multiple_of": self.multiple_of}


@dataclass(frozen=True)
class ConstantSchedule(LengthSchedule):
    """``L(t) = l_max``."""

    l_max: int = 0
    kind: str = field(default="constant", init=False, repr=False)

    def value(self, t: int) -> float:
        return float(self.l_max)

    def _lookback(self) -> int:
        return 0

    def _extreme_candidates(self, num_steps: int) -> Sequence[int]:
        return range(1)

    def _params(self) -> dict[str, Any]:
        return {"l_max": self.l_max}


@dataclass(frozen=True)
class _PeriodicSchedule(LengthSchedule):
    """Shared fields of the schedules that repeat every ``period`` steps."""

    l_max: int = 0
    l_min: int = 0
    period: int = 1

    @property
    def mid(self) -> float:
        return (self.l_max + self.l_min) / 2

    @property
    def amp(self) -> float:
        return (self.l_max - self.l_min) / 2

    def _lookback(self) -> int:
        return self.period

    def _extreme_candidates(self, num_steps: int) -> Sequence[int]:
        return range(min(num_steps, self.period))     # L(t) repeats every period

    def _params(self) -> dict[str, Any]:
        return {"l_max": self.l_max, "l_min": self.l_min, "period": self.period}


@dataclass(frozen=True)
class CosineSchedule(_PeriodicSchedule):
    """``L(t) = mid + amp*cos(2*pi*t/period)``."""

    kind: str = field(default="cosine", init=False, repr=False)

    def value(self, t: int) -> float:
        return self.mid + self.amp * math.cos(2 * math.pi * t / self.period)


@dataclass(frozen=True)
class StairSchedule(_PeriodicSchedule):
    """l_max for the first ``1-compress_fraction`` of each period, then l_min."""

    compress_fraction: float = 0.5
    kind: str = field(default="stair", init=False, repr=False)

    def value(self, t: int) -> float:
        in_expansion = (t % self.period) < (1 - self.compress_fraction) * self.period
        return float(self.l_max if in_expansion else self.l_min)

    def _params(self) -> dict[str, Any]:
        return {**super()._params(), "compress_fraction": self.compress_fraction}


@dataclass(frozen=True)
class StairCosineSchedule(_PeriodicSchedule):
    """Plateaus at l_max and l_min joined by half-cosine ramps (each a quarter period)."""

    kind: str = field(default="stair_cosine", init=False, repr=False)

    def value(self, t: int) -> float:
        r, T = t % self.period, self.period
        phi = 2 * math.pi * r / T
        # Region boundaries phi = k*pi/4 compared exactly as 8r vs k*T (integers).
        if 8 * r < T or 8 * r >= 7 * T:
            return float(self.l_max)
        if 8 * r < 3 * T:
            return self.mid + self.amp * math.cos(2 * (phi - math.pi / 4))
        if 8 * r < 5 * T:
            return float(self.l_min)
        return self.mid + self.amp * math.cos(2 * (phi - 3 * math.pi / 4))


@dataclass(frozen=True)
class PiecewiseSchedule(LengthSchedule):
    """``points=((step, cap), ...)``: ``cap`` from ``step`` on; the first step is 0."""

    points: tuple[tuple[int, int], ...] = ((0, 1),)
    kind: str = field(default="piecewise", init=False, repr=False)

    def value(self, t: int) -> float:
        cap = self.points[0][1]
        for step, c in self.points:
            if step > t:
                break
            cap = c
        return float(cap)

    def phase(self, t: int) -> str:
        # The direction of the last change of cap at or before t (plateaus carry it on).
        t = _check_step(t)
        reached = [c for s, c in self.points if s <= t]
        for prev, cur in zip(reversed(reached[:-1]), reversed(reached)):
            if cur != prev:
                return "expand" if cur > prev else "compress"
        return "expand"

    def _extreme_candidates(self, num_steps: int) -> Sequence[int]:
        return [step for step, _ in self.points if step < num_steps]    # the cap changes only there

    def _params(self) -> dict[str, Any]:
        return {"points": [list(p) for p in self.points]}


# ---- construction and validation ---------------------------------------------------------

def make_schedule(kind: str, **params: Any) -> LengthSchedule:
    """Build a length schedule.

    Args:
        kind: one of ``KINDS``.
        params: ``l_max, l_min, period, compress_fraction, points, multiple_of``; each kind
            uses a subset (constant: l_max; cosine and stair_cosine: l_max, l_min, period;
            stair: those plus compress_fraction (default 0.5); piecewise: points).
            ``multiple_of`` (default 1) applies to all. A parameter set to None counts as
            not given, so a config with every field can be passed through.

    Raises:
        ValueError: unknown kind or parameter, a missing or unused parameter, or a bad
            value (the message names the parameter).
    """
    if kind not in _BUILDERS:
        raise ValueError(f"unknown schedule kind {kind!r}; expected one of {', '.join(KINDS)}")
    unknown = sorted(set(params) - set(PARAMS))
    if unknown:
        raise ValueError(f"unknown schedule parameter(s) {unknown}; expected some of {list(PARAMS)}")
    given = {k: v for k, v in params.items() if v is not None}
    required, optional, build = _BUILDERS[kind]
    missing = [k for k in required if k not in given]
    if missing:
        raise ValueError(f"schedule kind {kind!r} needs parameter(s) {missing}")
    unused = sorted(set(given) - set(required) - set(optional) - {"multiple_of"})
    if unused:
        raise ValueError(f"schedule kind {kind!r} does not use parameter(s) {unused}")
    multiple_of = _positive_int("multiple_of", given.get("multiple_of", 1))
    return build(given, multiple_of)


def schedule_from_dict(d: dict[str, Any]) -> LengthSchedule:
    """Inverse of ``LengthSchedule.to_dict``: ``d["kind"]`` plus the parameters."""
    if "kind" not in d:
        raise ValueError(f"schedule dict needs a 'kind' key, got keys {sorted(d)}")
    params = dict(d)
    return make_schedule(params.pop("kind"), **params)


def _whole_number(value: int, name: str, minimum: int) -> int:
    """``value`` as a Python int (numpy integers are accepted); ValueError naming ``name``
    unless it is an int >= ``minimum``."""
    try:
        number = operator.index(value)
    except TypeError:
        number = None
    if isinstance(value, bool) or number is None or number < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return number


def _check_step(t: int) -> int:
    """A step: an int >= 0."""
    return _whole_number(t, "step", 0)


def _check_num_steps(num_steps: int) -> int:
    """A run's length for :meth:`LengthSchedule.longest_cap` / ``shortest_cap``: an int >= 1."""
    return _whole_number(num_steps, "num_steps", 1)


def _positive_int(name: str, v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise ValueError(f"{name} must be an int >= 1, got {v!r}")
    return v


def _lengths(p: dict[str, Any]) -> tuple[int, int]:
    l_max, l_min = _positive_int("l_max", p["l_max"]), _positive_int("l_min", p["l_min"])
    if l_min > l_max:
        raise ValueError(f"l_min ({l_min}) must be <= l_max ({l_max})")
    return l_max, l_min


def _periodic(cls: type[_PeriodicSchedule]):
    def build(p: dict[str, Any], m: int) -> LengthSchedule:
        l_max, l_min = _lengths(p)
        return cls(multiple_of=m, l_max=l_max, l_min=l_min, period=_positive_int("period", p["period"]))
    return build


def _stair(p: dict[str, Any], m: int) -> LengthSchedule:
    l_max, l_min = _lengths(p)
    cf = p.get("compress_fraction", 0.5)
    if isinstance(cf, bool) or not isinstance(cf, (int, float)) or not 0.0 <= cf <= 1.0:
        raise ValueError(f"compress_fraction must be a number in [0, 1], got {cf!r}")
    return StairSchedule(multiple_of=m, l_max=l_max, l_min=l_min,
                         period=_positive_int("period", p["period"]), compress_fraction=float(cf))


def _piecewise(p: dict[str, Any], m: int) -> LengthSchedule:
    pts = p["points"]
    if not isinstance(pts, Sequence) or isinstance(pts, str) or not pts:
        raise ValueError(f"points must be a non-empty list of (step, cap) pairs, got {pts!r}")
    out: list[tuple[int, int]] = []
    for i, pt in enumerate(pts):
        if not isinstance(pt, Sequence) or isinstance(pt, str) or len(pt) != 2:
            raise ValueError(f"points[{i}] must be a (step, cap) pair, got {pt!r}")
        step, cap = pt
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise ValueError(f"points[{i}] step must be an int >= 0, got {step!r}")
        _positive_int(f"points[{i}] cap", cap)
        if out and step <= out[-1][0]:
            raise ValueError(f"points must be sorted by strictly increasing step; points[{i}] "
                             f"step {step} follows step {out[-1][0]}")
        out.append((step, cap))
    if out[0][0] != 0:
        raise ValueError(f"points must start at step 0, got first step {out[0][0]}")
    return PiecewiseSchedule(multiple_of=m, points=tuple(out))


def _constant(p: dict[str, Any], m: int) -> LengthSchedule:
    return ConstantSchedule(multiple_of=m, l_max=_positive_int("l_max", p["l_max"]))


# The registry of kinds: kind -> (required params, optional params, builder). A new kind is
# one entry here; KINDS, make_schedule's checks and its error messages follow from it.
_BUILDERS = {
    "constant": (("l_max",), (), _constant),
    "cosine": (("l_max", "l_min", "period"), (), _periodic(CosineSchedule)),
    "stair": (("l_max", "l_min", "period"), ("compress_fraction",), _stair),
    "stair_cosine": (("l_max", "l_min", "period"), (), _periodic(StairCosineSchedule)),
    "piecewise": (("points",), (), _piecewise),
}

KINDS = tuple(_BUILDERS)
"""The schedule kinds, in the registry's order (the values of the config's ``schedule.kind``)."""
