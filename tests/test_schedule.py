"""Length schedules: values against their defining formulas (recomputed here with math), the
multiple_of flooring, phase labels, peaks/troughs, serialisation and parameter errors."""
import json
import math

import pytest

from siri.algo.schedule import KINDS, make_schedule, schedule_from_dict

L_MAX, L_MIN = 1000, 203  # odd sum and difference, so halves and rounding are exercised


def cosine_ref(t, l_max, l_min, T):
    return (l_max + l_min) / 2 + (l_max - l_min) / 2 * math.cos(2 * math.pi * t / T)


def stair_ref(t, l_max, l_min, T, cf):
    return l_max if (t % T) < (1 - cf) * T else l_min


def stair_cosine_ref(t, l_max, l_min, T):
    mid, amp = (l_max + l_min) / 2, (l_max - l_min) / 2
    phi = 2 * math.pi * (t % T) / T
    if phi < math.pi / 4 or phi >= 7 * math.pi / 4:
        return l_max
    if phi < 3 * math.pi / 4:
        return mid + amp * math.cos(2 * (phi - math.pi / 4))
    if phi < 5 * math.pi / 4:
        return l_min
    return mid + amp * math.cos(2 * (phi - 3 * math.pi / 4))


def piecewise_ref(t, points):
    return [cap for step, cap in points if step <= t][-1]


def cap_ref(value, multiple_of=1):
    return max(multiple_of, math.floor(round(value) / multiple_of) * multiple_of)


CASES = [
    ("constant", dict(l_max=L_MAX), lambda t: L_MAX, 16),
    ("cosine", dict(l_max=L_MAX, l_min=L_MIN, period=64), lambda t: cosine_ref(t, L_MAX, L_MIN, 64), 64),
    ("cosine", dict(l_max=L_MAX, l_min=L_MIN, period=37), lambda t: cosine_ref(t, L_MAX, L_MIN, 37), 37),
    ("stair", dict(l_max=L_MAX, l_min=L_MIN, period=20), lambda t: stair_ref(t, L_MAX, L_MIN, 20, 0.5), 20),
    ("stair", dict(l_max=L_MAX, l_min=L_MIN, period=8, compress_fraction=0.25),
     lambda t: stair_ref(t, L_MAX, L_MIN, 8, 0.25), 8),
    ("stair_cosine", dict(l_max=L_MAX, l_min=L_MIN, period=64),
     lambda t: stair_cosine_ref(t, L_MAX, L_MIN, 64), 64),
    ("stair_cosine", dict(l_max=L_MAX, l_min=L_MIN, period=45),
     lambda t: stair_cosine_ref(t, L_MAX, L_MIN, 45), 45),
    ("piecewise", dict(points=[(0, 8192), (10, 16384), (25, 24576)]),
     lambda t: piecewise_ref(t, [(0, 8192), (10, 16384), (25, 24576)]), 20),
]


@pytest.mark.parametrize("kind,params,ref,period", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
@pytest.mark.parametrize("multiple_of", [1, 16])
def test_values_equal_formula_over_two_periods(kind, params, ref, period, multiple_of):
    s = make_schedule(kind, **params, multiple_of=multiple_of)
    for t in range(2 * period + 1):
        got = s(t)
        assert isinstance(got, int)
        assert got == cap_ref(ref(t), multiple_of), (kind, t)


def test_kinds_are_all_covered():
    assert {c[0] for c in CASES} == set(KINDS)


def test_cosine_endpoints():
    s = make_schedule("cosine", l_max=16384, l_min=8192, period=640)
    assert s(0) == s(640) == 16384 and s(320) == s(960) == 8192


def test_multiple_of_floors_and_never_goes_below():
    s = make_schedule("constant", l_max=1000, multiple_of=64)
    assert s(0) == 1000 // 64 * 64
    tiny = make_schedule("cosine", l_max=40, l_min=1, period=10, multiple_of=16)
    caps = [tiny(t) for t in range(10)]
    assert min(caps) == 16 and all(c % 16 == 0 for c in caps)


def phases(s, n):
    return [s.phase(t) for t in range(n)]


def test_phase_cosine():
    T = 16
    s = make_schedule("cosine", l_max=L_MAX, l_min=L_MIN, period=T)
    expected = ["expand"] + ["compress"] * (T // 2) + ["expand"] * (T // 2 - 1)
    assert phases(s, T) == expected  # peak at 0, falling 1..T/2 (trough included), rising after
    assert s.phase(T) == "expand" and s.phase(T + 1) == "compress"


def test_phase_stair_plateaus():
    s = make_schedule("stair", l_max=L_MAX, l_min=L_MIN, period=10, compress_fraction=0.3)
    assert phases(s, 20) == (["expand"] * 7 + ["compress"] * 3) * 2


def test_phase_stair_cosine():
    T = 16  # l_max on r in {0,1,14,15}, falling 2..5, l_min 6..9, rising 10..13
    s = make_schedule("stair_cosine", l_max=L_MAX, l_min=L_MIN, period=T)
    assert phases(s, T) == ["expand"] * 3 + ["compress"] * 8 + ["expand"] * 5


def test_phase_constant_and_piecewise():
    assert set(phases(make_schedule("constant", l_max=512), 5)) == {"expand"}
    p = make_schedule("piecewise", points=[(0, 100), (3, 100), (5, 200), (8, 50), (10, 50)])
    assert phases(p, 12) == ["expand"] * 8 + ["compress"] * 4


def test_peaks_and_troughs():
    s = make_schedule("cosine", l_max=16384, l_min=8192, period=640)
    assert s.peaks(1920) == [0, 640, 1280]
    assert s.troughs(1920) == [320, 960, 1600]
    st = make_schedule("stair", l_max=L_MAX, l_min=L_MIN, period=10)
    assert st.peaks(30) == [4, 14, 24]  # last step at l_max
    assert st.troughs(30) == [9, 19, 29]  # last step at l_min
    assert make_schedule("constant", l_max=8).peaks(50) == []
    assert make_schedule("constant", l_max=8).troughs(50) == []


@pytest.mark.parametrize("kind,params,ref,period", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_round_trip_through_json(kind, params, ref, period):
    s = make_schedule(kind, **params, multiple_of=8)
    d = json.loads(json.dumps(s.to_dict()))
    s2 = schedule_from_dict(d)
    assert s2 == s and s2.to_dict() == s.to_dict()
    assert [s2(t) for t in range(2 * period)] == [s(t) for t in range(2 * period)]


def test_none_params_are_ignored():
    s = make_schedule("constant", l_max=64, l_min=None, period=None, points=None)
    assert s(3) == 64


@pytest.mark.parametrize("kind,params,needle", [
    ("sawtooth", dict(l_max=8), "cosine"),
    ("cosine", dict(l_max=8, l_min=16, period=4), "l_min"),
    ("cosine", dict(l_max=8, l_min=4, period=0), "period"),
    ("cosine", dict(l_max=8, l_min=4), "period"),
    ("cosine", dict(l_max=8, l_min=4, period=4, multiple_of=0), "multiple_of"),
    ("cosine", dict(l_max=8, l_min=0, period=4), "l_min"),
    ("stair", dict(l_max=8, l_min=4, period=4, compress_fraction=1.5), "compress_fraction"),
    ("constant", dict(l_max=8, period=4), "period"),
    ("constant", dict(l_max=8, lmax=4), "lmax"),
    ("piecewise", dict(points=[]), "points"),
    ("piecewise", dict(points=[(1, 8)]), "step 0"),
    ("piecewise", dict(points=[(0, 8), (5, 16), (3, 4)]), "sorted"),
    ("piecewise", dict(points=[(0, 8), (5, 0)]), "cap"),
])
def test_bad_params(kind, params, needle):
    with pytest.raises(ValueError, match=needle):
        make_schedule(kind, **params)


def test_bad_step():
    s = make_schedule("constant", l_max=8)
    with pytest.raises(ValueError, match="step"):
        s(-1)
    with pytest.raises(ValueError, match="step"):
        s(1.5)
    with pytest.raises(ValueError, match="kind"):
        schedule_from_dict({"l_max": 8})


def test_numpy_integer_steps():
    np = pytest.importorskip("numpy")
    s = make_schedule("cosine", l_max=L_MAX, l_min=L_MIN, period=64)
    assert s(np.int64(10)) == s(10) and type(s(np.int64(10))) is int
    assert s.phase(np.int32(40)) == s.phase(40)


@pytest.mark.parametrize("kind,params,ref,period", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
@pytest.mark.parametrize("multiple_of", [1, 16])
def test_longest_and_shortest_cap_are_the_extremes_over_the_run(kind, params, ref, period, multiple_of):
    s = make_schedule(kind, **params, multiple_of=multiple_of)
    for steps in (1, 2, period // 2, period // 2 + 1, period, 3 * period + 5):
        caps = [s(t) for t in range(steps)]
        assert s.longest_cap(steps) == max(caps), (kind, steps)
        assert s.shortest_cap(steps) == min(caps), (kind, steps)


def test_extreme_caps_of_long_runs_are_exact_and_cheap():
    # a period longer than a probe of the first steps would see: the trough is at 25000
    s = make_schedule("cosine", l_max=16384, l_min=8192, period=50000)
    assert s.shortest_cap(30000) == 8192 and s.longest_cap(10**9) == 16384
    late = make_schedule("piecewise", points=[(0, 100), (30000, 400), (60000, 50)])
    assert (late.longest_cap(30000), late.longest_cap(30001), late.shortest_cap(60001)) == (100, 400, 50)


def test_extreme_caps_reject_an_empty_run():
    s = make_schedule("constant", l_max=8)
    for bad in (0, -3, True, 2.0):
        with pytest.raises(ValueError, match="num_steps"):
            s.longest_cap(bad)
    with pytest.raises(ValueError, match="num_steps"):
        s.shortest_cap(0)


def test_kinds_are_the_registry():
    from siri.algo import schedule

    assert KINDS == tuple(schedule._BUILDERS)
    with pytest.raises(ValueError, match="expected one of " + ", ".join(KINDS)):
        make_schedule("sawtooth", l_max=8)
