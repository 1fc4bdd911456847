"""The Python API: a script hands the Trainer and the evaluator a model, tokenizer, dataset and
reward it built itself (TRL's GRPOTrainer(model=, reward_funcs=, train_dataset=) convention)."""
import json

import pytest
import torch
import transformers
from safetensors.torch import load_file

from siri import Trainer
from siri.config import Config, config_from_dict
from siri.eval import EvalSettings, evaluate_model, pass_at_k, samples_path
from siri.models.tiny_lm import save_tiny_lm
from training_run import problems


def _rows(n=16):
    return [{"question": r["prompt"], "solution": {"value": r["answer"]}} for r in problems(n, seed=5)]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("api")
    corpus = [f"{r['prompt']} {r['answer']} \\boxed{{{r['answer']}}}" for r in problems(24, seed=1)]
    save_tiny_lm(root / "model", corpus, vocab_size=300, hidden_size=128, layers=2, max_positions=256)
    return root / "model"


def _config(run_dir, steps=2, reward=None, **trainer) -> Config:
    return config_from_dict({
        # model.path names nothing: the objects below are all the trainer gets
        "model": {"path": "unused/never-loaded"},
        "data": {"train": "unused", "prompt_key": "question", "answer_key": "solution.value",
                 "instruction": "Answer in \\boxed{}.", "max_prompt_tokens": 64},
        "schedule": {"kind": "constant", "l_max": 12},
        "rollout": {"prompts_per_step": 4, "group_size": 4, "page_size": 4, "max_num_seqs": 32, "kv_cache_gb": 0.01},
        "algo": {"micro_batch_tokens": 200},
        "optim": {"lr": 3e-3},
        "reward": {"workers": 0, **(reward or {})},
        "trainer": {"steps": steps, "seed": 0, "progress": False, "run_dir": str(run_dir), "save_every": 0,
                    "keep_last": 1, **trainer},
    })


def _objects(model_dir):
    return (transformers.AutoModelForCausalLM.from_pretrained(model_dir),
            transformers.AutoTokenizer.from_pretrained(model_dir))


def test_the_trainer_trains_the_objects_it_is_given(model_dir, tmp_path):
    model, tokenizer = _objects(model_dir)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    calls = []

    def odd_length(text, reference, finish_reason):    # any callable; runs in this process
        calls.append(reference)
        return float(len(text) % 2 == 1)

    # truncated_reward null: every response reaches the reward, cut at the cap or not
    trainer = Trainer(_config(tmp_path / "run", reward={"truncated_reward": None}), model=model, tokenizer=tokenizer, train_dataset=_rows(),
                      reward_fn=odd_length)
    last = trainer.fit()
    assert last["step"] == 1
    assert len(calls) == 2 * 4 * 4 and set(calls) <= {r["solution"]["value"] for r in _rows()}
    assert trainer.model is model
    moved = [k for k, v in model.state_dict().items() if not torch.equal(v, before[k])]
    assert moved, "the given model was not trained (were all rewards of a group equal?)"


def test_a_given_model_resumes_from_the_run_checkpoint(model_dir, tmp_path):
    model, tokenizer = _objects(model_dir)
    run = tmp_path / "run"
    Trainer(_config(run, steps=2, save_every=2), model=model, tokenizer=tokenizer, train_dataset=_rows(),
            reward_fn=lambda text, reference, finish_reason: float(len(text) % 2)).fit()
    fresh, _ = _objects(model_dir)
    resumed = Trainer(_config(run, steps=3), model=fresh, tokenizer=tokenizer, train_dataset=_rows(),
                      reward_fn=lambda text, reference, finish_reason: 0.0)
    assert resumed.step == 2
    saved = load_file(str(run / "checkpoints" / "step_2" / "model.safetensors"))
    trainer_weights = resumed.model.state_dict()
    for name, value in saved.items():
        assert torch.equal(trainer_weights[name].float(), value.float()), name


def test_evaluation_takes_objects_and_writes_every_response(model_dir, tmp_path):
    model, tokenizer = _objects(model_dir)
    rows = _rows(5)
    report_path = tmp_path / "eval" / "mine.json"
    report = evaluate_model(model, {"mine": rows}, EvalSettings(n=4, max_tokens=10, temperature=1.0),
                            out=report_path, tokenizer=tokenizer, prompt_key="question", answer_key="solution.value",
                            reward_fn=lambda text, reference, finish_reason: float(len(text) % 2), progress=False)
    result = report["benchmarks"]["mine"]
    samples = [json.loads(line) for line in samples_path(report_path).read_text().splitlines()]
    assert len(samples) == result["num_samples"] == 5 * 4
    assert {s["prompt"] for s in samples} == {r["question"] for r in rows}
    assert {s["reference"] for s in samples} == {r["solution"]["value"] for r in rows}
    assert all(s["finish_reason"] in ("stop", "length") and s["tokens"] >= 1 for s in samples)
    correct = sum(s["reward"] >= 0.5 for s in samples)
    assert result["accuracy"] == correct / len(samples)
    per_prompt = {}
    for s in samples:
        per_prompt.setdefault(s["prompt"], []).append(s["reward"] >= 0.5)
    expected = sum(pass_at_k(4, sum(v), 2) for v in per_prompt.values()) / len(per_prompt)
    assert result["pass_at_k"]["pass@2"] == pytest.approx(expected)


def test_pass_at_k_matches_the_combinatorial_definition():
    from math import comb
    for n in range(1, 9):
        for c in range(n + 1):
            for k in range(1, n + 1):
                assert pass_at_k(n, c, k) == pytest.approx(1 - comb(n - c, k) / comb(n, k), abs=1e-12)
    with pytest.raises(ValueError, match="num_correct"):
        pass_at_k(4, 5, 1)
    with pytest.raises(ValueError, match="k="):
        pass_at_k(4, 1, 5)
