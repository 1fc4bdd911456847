"""Rewards that name their inputs (siri.rewards.binding), batched rewards, weighted terms
(siri.rewards.terms) and where they run (siri.rewards.reward_scorer): in the config, in the
trainer, in evaluation and under the ``siri`` console command."""
import functools
import json
import math
import os
import subprocess
import sys
import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest

import reward_fns
from siri import Trainer, load_config
from siri.config import ConfigError, RewardConfig
from siri.eval import EvalSettings, evaluate_examples
from siri.rewards import capped_reward, is_correct
from siri.rewards.binding import bind_reward
from siri.rewards.reward_input import RewardInput
from siri.rewards.reward_scorer import CorrectnessJudge, correctness_scores, make_scorer
from siri.rewards.scoring import score_batched, score_serially
from siri.rewards.terms import RewardTerm, RewardTerms
from siri.train.metrics import REWARD_TERM_METRICS, STEP_METRICS

ITEM = RewardInput("resp", "ref", "stop", prompt=[{"role": "user", "content": "hi"}], row={"id": 7}, step=4)


# ---- binding: what a reward function is given --------------------------------------------

def test_a_keyword_reward_gets_the_inputs_it_names_in_any_order():
    def reward(row, completion, step, prompt):
        return (completion, prompt, row, step)

    assert bind_reward(reward)(ITEM) == ("resp", ITEM.prompt, {"id": 7}, 4)

    def named_response(prompt, response_text, finish_reason):     # the response need not come first
        return (prompt, response_text, finish_reason)

    assert bind_reward(named_response)(ITEM) == (ITEM.prompt, "resp", "stop")

    def everything(text, **inputs):
        return text, inputs

    assert bind_reward(everything)(ITEM) == ("resp", {"prompt": ITEM.prompt, "reference": "ref",
                                                      "finish_reason": "stop", "row": {"id": 7}, "step": 4})


def test_the_three_positional_form_keeps_working():
    def old(text, answer, finish):
        return (text, answer, finish)

    assert bind_reward(old)(ITEM) == ("resp", "ref", "stop")
    assert bind_reward(lambda t, a, f, scale=2: (t, a, f, scale))(ITEM) == ("resp", "ref", "stop", 2)
    assert bind_reward(capped_reward)(RewardInput(r"so \boxed{3}", "3", "stop")) == 1.0
    assert bind_reward(capped_reward)(RewardInput(r"so \boxed{3}", "3", "length")) == 0.0
    assert bind_reward(functools.partial(capped_reward, correct=2.0))(RewardInput(r"\boxed{3}", "3", "stop")) == 2.0
    # a builtin whose signature cannot be read gets the three positional inputs
    assert bind_reward(max)(RewardInput("b", "a", "c")) == "c"


def test_a_parameter_it_cannot_fill_is_a_clear_error():
    def wants_answer(response, answer):
        return 0.0

    with pytest.raises(ValueError) as info:
        bind_reward(wants_answer)
    message = str(info.value)
    assert "'wants_answer' has a parameter 'answer'" in message and "\n" not in message
    assert "prompt, reference, finish_reason, row, step" in message and "response / completion" in message
    assert bind_reward(lambda response, answer=1: answer)(ITEM) == 1, "a default is kept"
    with pytest.raises(ValueError, match="takes no response"):
        bind_reward(lambda *, prompt: 0.0)
    with pytest.raises(ValueError, match="is not callable"):
        bind_reward(3)


def test_score_serially_takes_inputs_and_old_tuples():
    result = score_serially(lambda completion, step, reference: len(completion) + step + len(reference),
                            [ITEM, RewardInput("ab", "", "stop", step=1)], None)
    assert result.rewards == [4 + 4 + 3, 2 + 1 + 0]
    assert score_serially(lambda t, r, f: len(t + r + f), [("a", "bb", "stop")], None).rewards == [7.0]


# ---- batched rewards ----------------------------------------------------------------------

def test_a_batched_reward_is_called_once_with_lists():
    calls = []

    def judge(responses, prompt, step):
        calls.append((list(responses), list(prompt), list(step)))
        return [len(r) for r in responses]

    items = [RewardInput("a" * k, "x", "stop", prompt=f"p{k}", step=k) for k in range(1, 4)]
    result = score_batched(judge, items)
    assert result.rewards == [1.0, 2.0, 3.0] and result.errors == 0
    assert calls == [(["a", "aa", "aaa"], ["p1", "p2", "p3"], [1, 2, 3])]
    assert score_batched(judge, []).rewards == [] and len(calls) == 1, "no responses: no call"


@pytest.mark.parametrize("returns, rewards, errors, needle", [
    (lambda n: [1.0] * (n - 1), [0.0, 0.0, 0.0], 3, "returned 2 values for 3 responses"),
    (lambda n: 5, [0.0, 0.0, 0.0], 3, "TypeError"),
    (lambda n: [1.0, math.nan, "2"], [1.0, 0.0, 0.0], 2, "returned (nan|str)"),
])
def test_a_batched_reward_that_misbehaves_scores_zero_and_is_counted(returns, rewards, errors, needle):
    items = [RewardInput("r", "x", "stop")] * 3
    with pytest.warns(UserWarning, match=needle):
        result = score_batched(lambda responses: returns(len(responses)), items)
    assert (result.rewards, result.errors) == (rewards, errors)


def test_a_batched_reward_that_raises_scores_every_item_zero():
    def broken(responses):
        raise RuntimeError("judge is down")

    with pytest.warns(UserWarning, match="judge is down"):
        result = score_batched(broken, [RewardInput("r", "x", "stop")] * 4)
    assert result.rewards == [0.0] * 4 and result.errors == 4 and len(result.error_samples) == 3


# ---- terms: config, validation, weighted sum -----------------------------------------------

def cfg(**fields):
    return RewardConfig(**fields)


def test_the_config_shorthand_and_a_list_of_terms():
    one = RewardTerms.from_config(cfg(fn="reward_fns:even_length"))
    assert (one.names, one.correctness_index, one.report_terms) == (["even_length"], 0, False)
    many = RewardTerms.from_config(cfg(fns=[
        {"fn": "reward_fns:knows_its_row", "weight": 0.5},
        {"fn": "reward_fns:even_length", "correctness": True, "name": "even"},
        "reward_fns:batched_length"]))
    assert many.names == ["knows_its_row", "even", "batched_length"] and many.report_terms
    assert many.correctness_index == 1 and many.correctness_term.name == "even"
    assert [t.weight for t in many.terms] == [0.5, 1.0, 1.0]
    batched = RewardTerms.from_config(cfg(fn="reward_fns:batched_length", batched=True))
    assert [(t.fn, t.batched) for t in batched.terms] == [("reward_fns:batched_length", True)]
    with pytest.raises(ValueError, match="not both: put 'siri.rewards.capped:capped_reward' in the list .* and "
                                         "reward.batched false"):
        RewardTerms.from_config(cfg(batched=True, fns=["reward_fns:even_length"]))


@pytest.mark.parametrize("fields, needle", [
    ({"fn": "reward_fns:flaky", "fns": [{"fn": "reward_fns:even_length"}]}, "either 'reward.fn'"),
    ({"fns": [{"fn": "reward_fns:even_length", "weight": math.inf}]}, "'reward.fns[0].weight' must be a finite"),
    ({"fns": [{"fn": "reward_fns:even_length", "weight": "heavy"}]}, "'reward.fns[0].weight' must be a finite"),
    ({"fns": [{"fn": "reward_fns:even_length", "correctness": True},
              {"fn": "reward_fns:flaky", "correctness": True}]}, "only one term may set correctness"),
    ({"fns": [{"fn": "reward_fns:even_length", "wieght": 2}]}, "'reward.fns[0]': unknown key 'wieght'"),
    ({"fns": [{"weight": 2}]}, "'reward.fns[0].fn' must be a 'package.module:function'"),
    ({"fns": [{"fn": "reward_fns:even_length"}, {"fn": "reward_fns:even_length"}]}, "two terms are named"),
    ({"fns": [{"fn": "reward_fns:even_length", "batched": "yes"}]}, "'reward.fns[0].batched' must be true or false"),
    ({"fns": [{"fn": "pool_reward_fns:wants_answer"}]}, "'reward.fns[0]': reward function 'pool_reward_fns:wants_answer'"),
    ({"fns": {"fn": "reward_fns:even_length"}}, "'reward.fns' must be a list"),
    ({"fn": "pool_reward_fns:wants_answer"}, "'reward.fn': reward function 'pool_reward_fns:wants_answer' has a "
                                             "parameter 'answer'"),
])
def test_bad_terms_are_one_line_errors_naming_the_key(fields, needle):
    with pytest.raises(ValueError) as info:
        RewardTerms.from_config(cfg(**fields))
    assert needle in str(info.value) and "\n" not in str(info.value)


def test_the_config_validates_terms_before_any_work(workspace):
    with pytest.raises(ConfigError, match="'reward.fns\\[1\\].weight' must be a finite number, got nan"):
        load_config(workspace / "config.yaml", ["reward.fn=siri.rewards.capped:capped_reward",
                                                "reward.fns=[reward_fns:even_length, {fn: reward_fns:flaky, "
                                                "weight: .nan}]"])
    good = load_config(workspace / "config.yaml", ["reward.fn=siri.rewards.capped:capped_reward",
                                                   "reward.fns=[reward_fns:even_length, {fn: reward_fns:flaky}]"])
    assert RewardTerms.from_config(good.reward).names == ["even_length", "flaky"]


def test_terms_from_python_and_the_weighted_sum():
    def right(response, reference):
        return float(response == reference)

    def brief(response):
        return -len(response) / 10

    terms = RewardTerms.of([brief, (right, 2.0), RewardTerm(lambda response: 0.25, correctness=True, name="flat")])
    assert terms.names == ["brief", "right", "flat"] and terms.correctness_index == 2 and terms.report_terms
    assert RewardTerms.of(lambda t, r, f: 1.0).names == ["term0"]
    with pytest.raises(ValueError, match="'reward_fn\\[1\\] weight' must be a finite number"):
        RewardTerms.of([brief, (right, math.nan)])
    with pytest.raises(ValueError, match="must be a callable"):
        RewardTerms.of([brief, 3])
    items = [RewardInput("7", "7", "stop"), RewardInput("12", "7", "stop"), RewardInput("7", "7", "length")]
    with make_scorer(terms, 0, None) as scorer:
        scored = scorer.score(items, truncated_reward=-1.0)
    assert scored.rewards == pytest.approx([-0.1 + 2.0 + 0.25, -0.2 + 0.0 + 0.25, -1.0])
    assert scored.correctness == [0.25, 0.25, -1.0]
    assert scored.terms["right"][:2] == [1.0, 0.0] and math.isnan(scored.terms["right"][2])
    assert scorer.placements == ["in-process"] * 3 and scorer.pool is None


def test_callables_run_in_this_process_and_specs_in_the_pool():
    """``pool_reward_fns:scripted`` returns its process id for the response "pid"."""
    def here(response):
        return float(os.getpid())

    with make_scorer(["pool_reward_fns:scripted", here], 1, 5.0) as scorer:
        assert scorer.placements == ["pool", "in-process"]
        scored = scorer.score([RewardInput("pid", "", "stop")])
        worker = scorer.pool.pids[0]
    assert scored.terms == {"scripted": [float(worker)], "here": [float(os.getpid())]}
    assert worker != os.getpid()


def test_the_pool_is_sent_only_the_prompt_and_row_a_term_reads():
    assert ITEM.keeping(("response", "step")) == RewardInput("resp", "ref", "stop", step=4)
    assert ITEM.keeping(("prompt", "row")) is ITEM
    item = RewardInput("ab", "", "stop", prompt="pq", row={"level": 2}, step=1)
    with make_scorer(["pool_reward_fns:sees_everything", "pool_reward_fns:length_code"], 1, 5.0) as scorer:
        sent = []
        score = scorer.pool.score
        scorer.pool.score = lambda items, term: sent.append((term, items)) or score(items, term)
        scored = scorer.score([item])
    assert scored.terms == {"sees_everything": [2 + 20 + 2000 + 100000], "length_code": [2.5]}
    assert sent == [(0, [item]), (1, [RewardInput("ab", "", "stop", step=1)])]


def test_a_batched_term_runs_once_per_scoring_call_in_this_process():
    reward_fns.CALLS.clear()
    terms = RewardTerms.from_config(cfg(fns=[{"fn": "reward_fns:even_length"},
                                             {"fn": "reward_fns:batched_length", "batched": True, "weight": 10}]))
    with make_scorer(terms, 2, 5.0) as scorer:     # workers, yet the batched term stays here
        assert scorer.placements == ["pool", "batched"]
        scored = scorer.score([RewardInput("ab", "", "stop"), RewardInput("abc", "", "stop"),
                               RewardInput("abcd", "", "length")], truncated_reward=0.0)
    assert reward_fns.CALLS == [("batch", 2)]
    assert scored.rewards == [1.0 + 0.2, 0.0 + 0.3, 0.0] and scored.correctness == [1.0, 0.0, 0.0]


# ---- evaluation: the same interface, correctness from the correctness term ------------------

class FixedEngine:
    """An engine stand-in: every prompt gets the same responses."""

    def __init__(self, responses):
        self.responses = responses

    def generate(self, prompts, params, prompt_keys=None):
        return [[SimpleNamespace(token_ids=list(ids), finish_reason=finish) for ids, finish in self.responses]
                for _ in prompts]


class Tokens:
    eos_token_id = 0

    def decode(self, ids, skip_special_tokens=True):
        return "x" * len(ids)


def test_evaluation_scores_through_the_correctness_term_with_the_prompt_and_row():
    seen = []

    def row_aware(response, prompt, row, step):
        seen.append((prompt, row["level"], step))
        return float(len(response) == row["level"])

    engine = FixedEngine([([1, 2], "stop"), ([1, 2, 3], "stop"), ([1, 2, 3], "length")])
    examples = [SimpleNamespace(index=k, answer="a", input_ids=[5], prompt=f"p{k}", row={"level": 2 + k})
                for k in range(2)]
    settings = EvalSettings(n=3, max_tokens=3, batch_prompts=1)
    terms = [lambda response: 5.0, RewardTerm(row_aware, correctness=True)]
    plain = evaluate_examples(engine, Tokens(), examples, settings, reward_fn=terms)
    assert [p["accuracy"] for p in plain["per_prompt"]] == [1 / 3, 2 / 3], "the 5.0 term must not decide"
    assert seen[:3] == [("p0", 2, None)] * 3
    judged = evaluate_examples(engine, Tokens(), examples, settings,
                               reward_fn=CorrectnessJudge.of(terms, truncated_reward=0.0))
    assert [p["accuracy"] for p in judged["per_prompt"]] == [1 / 3, 1 / 3], "truncated: wrong"
    assert correctness_scores(reward_fns.even_length, [("ab", "", "stop"), ("a", "", "stop")]) == [1.0, 0.0]


# ---- training with reward.fns --------------------------------------------------------------

FNS = ("reward.fns=[{fn: reward_fns:knows_its_row, weight: 0.5}, {fn: reward_fns:even_length, correctness: true}, "
       "{fn: reward_fns:batched_length, batched: true, weight: 0.25, name: length}]")


def test_two_training_steps_with_weighted_terms(workspace, tmp_path):
    """Truncated responses are scored too (``reward.truncated_reward: null``): the tiny model
    rarely finishes within these caps (skipping them is tested on the scorer above)."""
    reward_fns.CALLS.clear()
    config = load_config(workspace / "config.yaml", [f"trainer.run_dir={tmp_path}", "trainer.steps=2",
                                                     "reward.fn=siri.rewards.capped:capped_reward", FNS,
                                                     "reward.truncated_reward=null", "trainer.save_every=0",
                                                     "trainer.save_at_extrema=false"])
    metrics = []
    Trainer(config, callbacks=[metrics.append]).fit()
    assert [list(m) for m in metrics] == [list(STEP_METRICS) + ["reward_term/knows_its_row", "reward_term/even_length",
                                                               "reward_term/length"]] * 2
    assert "reward_term/<name>" in REWARD_TERM_METRICS
    rows = [json.loads(line) for step in range(2) for line in (tmp_path / "rollouts" / f"step_{step}.jsonl").open()]
    assert len(rows) == 2 * 4 * 4
    # the row term saw every response with its own prompt, row and step
    assert sorted(c for c in reward_fns.CALLS if c[0] == "row") == sorted(("row", r["step"]) for r in rows)
    # the batched term: one call per step, with all of that step's responses
    assert [c for c in reward_fns.CALLS if c[0] == "batch"] == [("batch", 16), ("batch", 16)]
    for r in rows:
        even = reward_fns.even_length(r["response"], r["answer"], r["finish_reason"])
        assert r["correctness"] == even
        assert r["reward"] == pytest.approx(0.5 * 1.0 + even + 0.25 * len(r["response"]) / 100)
    assert 0 < sum(r["correctness"] for r in rows) < len(rows), "the correctness term must tell responses apart"
    for step, m in enumerate(metrics):
        mine = [r for r in rows if r["step"] == step]
        assert m["accuracy"] == sum(is_correct(r["correctness"]) for r in mine) / len(mine)
        assert m["reward_mean"] == pytest.approx(sum(r["reward"] for r in mine) / len(mine))
        assert m["reward_term/knows_its_row"] == 1.0
        assert m["reward_term/even_length"] == pytest.approx(sum(r["correctness"] for r in mine) / len(mine))
        assert m["reward_term/length"] == pytest.approx(sum(len(r["response"]) / 100 for r in mine) / len(mine))


# ---- the console command finds a reward module in the working directory --------------------

def test_the_siri_command_imports_reward_modules_from_the_working_directory(workspace, tmp_path):
    (tmp_path / "my_cwd_reward.py").write_text("def score(completion, row):\n    return 1.0\n")
    siri_command = Path(sys.executable).parent / "siri"
    assert siri_command.exists(), "the installed console script"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    out = subprocess.run([str(siri_command), "train", str(workspace / "config.yaml"), "--dry-run",
                          "reward.fn=my_cwd_reward:score"], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "my_cwd_reward:score" in out.stdout


def test_warnings_stay_quiet_when_every_term_is_healthy():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with make_scorer([reward_fns.even_length, (lambda response: 1.0, 0.5)], 0, 5.0) as scorer:
            assert scorer.score([("ab", "", "stop")]).rewards == [1.5]
