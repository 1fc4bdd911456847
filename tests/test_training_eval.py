"""Evaluation during training: rows at the configured steps and at every peak and trough,
numbers equal to evaluating the saved checkpoint with siri.eval, and the trajectory plot."""
import json

import pytest
import torch

from siri import Trainer, load_config
from siri.data import PromptFormat
from siri.engine import LLMEngine
from siri.eval import EvalSettings, evaluate_examples, load_eval_examples
from siri.train.metrics import read_metrics
from siri.models.loading import load_model, load_tokenizer
from siri.plot import plot_run, trajectory_points
from siri.rewards.loader import DEFAULT_REWARD, load_reward_fn
from siri.train.training_eval import wrong_when_truncated

from training_run import STEPS

EVAL = ["trainer.eval_every=3", "eval.n=2", "eval.limit=6", "reward.workers=0"]


@pytest.fixture(scope="module")
def evaluated_run(workspace, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("eval_run")
    cfg = load_config(workspace / "config.yaml", [f"trainer.run_dir={run_dir}", f"eval.data={workspace / 'train.jsonl'}",
                                                  *EVAL])
    Trainer(cfg).fit()
    return cfg, run_dir


def expected_eval_steps(cfg):
    schedule = cfg.length_schedule()
    assert schedule.peaks(STEPS) and schedule.troughs(STEPS)
    return sorted({t for t in range(STEPS) if (t + 1) % 3 == 0} | set(schedule.peaks(STEPS))
                  | set(schedule.troughs(STEPS)))


def test_eval_rows_appear_at_every_nth_step_and_at_the_extrema(evaluated_run):
    cfg, run_dir = evaluated_run
    rows = read_metrics(run_dir / "metrics.jsonl")
    assert [r["step"] for r in rows if "eval_accuracy" in r] == expected_eval_steps(cfg)
    for r in rows:
        if "eval_accuracy" in r:
            assert 0 <= r["eval_accuracy"] <= 1 and 0 < r["eval_response_len_mean"] <= 24
            assert r["eval_num_samples"] == 6 * 2 and 0 <= r["eval_truncation_rate"] <= 1


def test_eval_during_training_equals_evaluating_the_checkpoint(evaluated_run, workspace):
    """The last step's eval row against siri.eval on the final checkpoint (the same weights):
    the same draws, so the same numbers."""
    cfg, run_dir = evaluated_run
    last = [r for r in read_metrics(run_dir / "metrics.jsonl") if r["step"] == STEPS - 1][0]
    checkpoint = run_dir / "checkpoints" / f"step_{STEPS}"
    tokenizer = load_tokenizer(str(checkpoint))
    examples = load_eval_examples(str(workspace / "train.jsonl"), tokenizer,
                                  prompt_format=PromptFormat.from_data_config(cfg.data, source="test"),
                                  max_prompt_tokens=cfg.data.max_prompt_tokens)[:6]
    settings = EvalSettings(n=2, temperature=cfg.eval.temperature, max_tokens=24, seed=cfg.trainer.seed)
    engine = LLMEngine(load_model(str(checkpoint), device=torch.device("cpu"), dtype=torch.float32).eval(), page_size=4, max_num_seqs=64, kv_cache_bytes=2**22)
    result = evaluate_examples(engine, tokenizer, examples, settings, reward_fn=wrong_when_truncated(load_reward_fn(cfg.reward.fn)))
    assert last["eval_accuracy"] == pytest.approx(result["accuracy"], abs=1e-12)
    assert last["eval_response_len_mean"] == pytest.approx(result["mean_tokens"], abs=1e-12)
    assert 0 < result["accuracy"] < 1, "every answer right or every answer wrong: the comparison proves little"


def test_trajectory_plot_has_a_point_per_eval_in_cycles(evaluated_run):
    cfg, run_dir = evaluated_run
    paths = plot_run(run_dir)
    assert run_dir / "plots" / "trajectory.png" in paths
    assert (run_dir / "plots" / "trajectory.png").read_bytes()[:4] == b"\x89PNG"
    points = trajectory_points(read_metrics(run_dir / "metrics.jsonl"), cfg.length_schedule())
    assert [p["label"].split()[0] for p in points] == [str(t + 1) for t in expected_eval_steps(cfg)]
    assert {p["series"] for p in points} == {"cycle 1", "cycle 2"}
    assert any(p["label"].endswith("trough") for p in points) and any(p["label"].endswith("peak") for p in points)


def half_credit_on_even(response_text: str, reference: str, finish_reason: str) -> float:
    """``reward_fns.even_length`` at half credit: exactly the correctness threshold (0.5) for
    an even number of characters, 0 otherwise (named by config as ``test_training_eval:...``)."""
    return 0.5 * (len(response_text) % 2 == 0)


@pytest.mark.parametrize("reward", [
    "reward.fn=test_training_eval:half_credit_on_even",
    # two terms: the row term adds 3 to every reward, so only the correctness term can decide
    "reward.fns=[{fn: reward_fns:knows_its_row, weight: 3}, {fn: test_training_eval:half_credit_on_even, "
    "correctness: true}]",   # (the config's reward.fn is reset below)
])
def test_a_reward_at_the_threshold_counts_alike_in_training_and_in_eval(workspace, tmp_path, reward):
    """One definition of correct: a score of exactly the threshold is correct in the training
    ``accuracy`` and in ``eval_accuracy`` alike (they once used >= and >); with several reward
    terms, the correctness term's score is the one both read."""
    run_dir = tmp_path / "run"
    cfg = load_config(workspace / "config.yaml", [f"trainer.run_dir={run_dir}", f"eval.data={workspace / 'train.jsonl'}",
                                                  "trainer.steps=1", "trainer.eval_every=1", "eval.n=2", "eval.limit=6",
                                                  "reward.workers=0", f"reward.fn={DEFAULT_REWARD}", reward])
    metrics = []
    Trainer(cfg, callbacks=[metrics.append]).fit()
    [m] = metrics
    rows = [json.loads(line) for line in (run_dir / "rollouts" / "step_0.jsonl").open()]
    assert {r["correctness"] for r in rows} == {0.0, 0.5}, "the test needs responses on both sides"
    assert m["accuracy"] == sum(r["correctness"] == 0.5 for r in rows) / len(rows)
    if "reward.fns" in reward:
        assert {r["reward"] - r["correctness"] for r in rows if r["finish_reason"] == "stop"} == {3.0}
    # eval: the same draws scored at full credit (1.0 for an even length) give the same accuracy
    checkpoint = run_dir / "checkpoints" / "step_1"
    tokenizer = load_tokenizer(str(checkpoint))
    examples = load_eval_examples(str(workspace / "train.jsonl"), tokenizer,
                                  prompt_format=PromptFormat.from_data_config(cfg.data, source="test"),
                                  max_prompt_tokens=cfg.data.max_prompt_tokens)[:6]
    settings = EvalSettings(n=2, temperature=cfg.eval.temperature, max_tokens=24, seed=cfg.trainer.seed)
    engine = LLMEngine(load_model(str(checkpoint), device=torch.device("cpu"), dtype=torch.float32).eval(),
                       page_size=4, max_num_seqs=64, kv_cache_bytes=2**22)
    full = evaluate_examples(engine, tokenizer, examples, settings,
                             reward_fn=wrong_when_truncated(load_reward_fn("reward_fns:even_length")))
    half = evaluate_examples(engine, tokenizer, examples, settings,
                             reward_fn=wrong_when_truncated(half_credit_on_even))
    assert 0 < full["accuracy"] < 1, "every answer right or every answer wrong: the comparison proves little"
    assert half["accuracy"] == full["accuracy"]
    assert m["eval_accuracy"] == pytest.approx(full["accuracy"], abs=1e-12)
