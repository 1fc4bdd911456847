"""Rewards: answer extraction, math-verify equivalences (as math-verify 0.9.0 actually
behaves), the length-capped reward, loading user rewards, and use from worker threads."""
import sys
import textwrap
import threading

import pytest

from siri.rewards import (DEFAULT_REWARD, RewardFunction, capped_reward, extract_final_answer,
                          load_reward_fn, math_equal)


# ---- extraction ---------------------------------------------------------------------------

@pytest.mark.parametrize("text,expected", [
    (r"so the answer is \boxed{\frac{1}{2}}.", r"\frac{1}{2}"),
    (r"\boxed{\left\{1, \{2\}\right\}}", r"\left\{1, \{2\}\right\}"),  # nested/escaped braces
    (r"first \boxed{1}, then \boxed{2}, finally \boxed{ 3 }", "3"),     # last one, stripped
    (r"<think>maybe \boxed{1}</think> so \boxed{2}", "2"),
    (r"<think>maybe \boxed{1}</think> no box after thinking", None),
    (r"<think>a</think><think>\boxed{1}</think>\boxed{7}", "7"),         # after the last </think>
    (r"unbraced \boxed 42$ done", "42"),
    (r"\boxed {5}", "5"),
    (r"\boxed{1} then cut mid-answer \boxed{2", "1"),                   # unbalanced last box
    (r"\boxedfoo{3}", None),                                           # another command
    ("no answer here", None),
    ("", None),
])
def test_extract_final_answer(text, expected):
    assert extract_final_answer(text) == expected


def test_extract_non_string_is_none():
    assert extract_final_answer(None) is None


# ---- math_equal: what math-verify does -----------------------------------------------------

@pytest.mark.parametrize("answer,reference,expected", [
    ("1/2", "0.5", True),
    ("0.5", "1/2", True),
    (r"\frac{1}{2}", "0.5", True),
    (r"\dfrac12", "1/2", True),
    ("2", "3", False),
    (" 42 ", "42", True),
    ("1,000", "1000", True),
    # math-verify reads "1 000" as the product 1*0*0*0, so thin-space thousands do not match
    ("1 000", "1000", False),
    ("x=3", "3", True),       # an equation x=3 matches the bare value 3, both ways
    ("3", "x=3", True),
    (r"\sqrt{2}/2", r"\frac{\sqrt2}{2}", True),
    ("10^{3}", "1000", True),
    ("5", r"\boxed{5}", True),  # a reference given already boxed
    ("5", "$5$", True),
])
def test_math_equal_observed_behaviour(answer, reference, expected):
    assert math_equal(answer, reference) is expected


@pytest.mark.parametrize("garbage", ["", "}}{{\\frac", "\\boxed{", "\\left(", "$$$", "\x00\x01",
                                     "1/0", "x" * 2000, "\\frac{1}{"])
def test_math_equal_never_raises_on_garbage(garbage):
    assert math_equal(garbage, "3") is False
    assert math_equal("3", garbage) is False


def test_math_equal_none_answer():
    assert math_equal(None, "3") is False


# ---- the capped reward ---------------------------------------------------------------------

def test_capped_reward_correct_wrong_and_missing():
    assert capped_reward(r"... \boxed{0.5}", "1/2", "stop") == 1.0
    assert capped_reward(r"... \boxed{0.6}", "1/2", "stop") == 0.0
    assert capped_reward("... no box", "1/2", "stop") == 0.0
    assert capped_reward(r"\boxed{0.5}", "1/2", "stop", correct=2.0, wrong=-1.0) == 2.0
    assert capped_reward(r"\boxed{7}", "1/2", "stop", correct=2.0, wrong=-1.0) == -1.0


def test_truncated_response_scores_wrong_even_when_correct():
    text = r"<think>so</think> the answer is \boxed{\frac12} and then more text that got cut"
    assert capped_reward(text, "0.5", "stop") == 1.0
    assert capped_reward(text, "0.5", "length") == 0.0
    assert capped_reward(text, "0.5", "length", wrong=-1.0) == -1.0


def test_length_penalty_is_off_by_default_and_explicit_when_on():
    text = r"\boxed{3}"
    assert capped_reward(text, "3", "stop") == 1.0
    assert capped_reward(text, "3", "stop", length_penalty=lambda t: 0.01 * len(t)) == \
        pytest.approx(1.0 - 0.01 * len(text))
    assert capped_reward(text, "3", "length", length_penalty=lambda t: 0.5) == 0.0


# ---- user rewards ---------------------------------------------------------------------------

@pytest.fixture
def user_module(tmp_path, monkeypatch):
    pkg = tmp_path / "myrewards"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "score.py").write_text(textwrap.dedent("""
        NOT_CALLABLE = 3
        def exact(response_text, reference, finish_reason):
            return float(response_text.strip() == reference and finish_reason == "stop")
        class Scorers:
            @staticmethod
            def length(response_text, reference, finish_reason):
                return float(len(response_text))
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "myrewards.score"
    for name in ("myrewards.score", "myrewards"):
        sys.modules.pop(name, None)


def test_load_user_reward(user_module):
    fn = load_reward_fn(f"{user_module}:exact")
    assert isinstance(fn, RewardFunction)
    assert fn("abc", "abc", "stop") == 1.0 and fn("abc", "abc", "length") == 0.0
    assert load_reward_fn(f"{user_module}:Scorers.length")("abcd", "", "stop") == 4.0


def test_default_reward_loads():
    assert load_reward_fn(DEFAULT_REWARD) is capped_reward


@pytest.mark.parametrize("spec,needle", [
    ("myrewards.score.exact", "package.module:function"),
    ("a:b:c", "package.module:function"),
    (":exact", "package.module:function"),
    ("myrewards.nope:exact", "cannot import module"),
    ("myrewards.score:missing", "no attribute"),
    ("myrewards.score:NOT_CALLABLE", "not callable"),
])
def test_load_reward_errors(user_module, spec, needle):
    with pytest.raises(ValueError, match=needle):
        load_reward_fn(spec)


# ---- threads ------------------------------------------------------------------------------

def _in_thread(fn, *args):
    out = {}

    def run():
        try:
            out["value"] = fn(*args)
        except BaseException as e:  # recorded, so the test sees it
            out["error"] = e

    th = threading.Thread(target=run)
    th.start()
    th.join(60)
    return out


def test_math_verify_with_timeout_fails_in_a_thread():
    """Why math_equal switches timeouts off off the main thread: math-verify's signal.alarm."""
    from math_verify import parse
    out = _in_thread(parse, r"\boxed{1}")
    assert isinstance(out.get("error"), ValueError)


def test_rewards_work_from_a_worker_thread():
    assert _in_thread(math_equal, "1/2", "0.5") == {"value": True}
    assert _in_thread(math_equal, "2", "3") == {"value": False}
    assert _in_thread(capped_reward, r"\boxed{\frac{1}{2}}", "0.5", "stop") == {"value": 1.0}
