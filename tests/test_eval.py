"""siri.eval against a brute-force recomputation from engine.generate."""
import json

import pytest
import transformers
from tokenizers import Tokenizer, models, pre_tokenizers

from siri.engine import LLMEngine, SamplingParams
from siri.eval import (EvalExample, EvalSettings, evaluate_examples, load_eval_reports, print_eval_table,
                       write_eval_report)
from siri.rewards import capped_reward, is_correct
from tiny_models import tiny_model

WORDS = ["<pad>", "<unk>", "<eos>", "\\boxed{", "}", "the", "answer", "is", "so", "+", "="] + list("0123456789")


def tiny_tokenizer():
    """A word-level tokenizer over digits, ``\\boxed{``, ``}`` and a few words (whitespace split)."""
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return transformers.PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<eos>",
                                                unk_token="<unk>", pad_token="<pad>")


def even_words(text: str, answer: str, finish_reason: str) -> float:
    """1 for a finished response with an even number of words: about half the samples."""
    return float(finish_reason == "stop" and len(text.split()) % 2 == 0)


@pytest.fixture(scope="module")
def setup():
    tokenizer = tiny_tokenizer()
    engine = LLMEngine(tiny_model("qwen2", vocab_size=len(WORDS)), page_size=8, num_pages=512, max_num_seqs=64)
    questions = ["1 + 2 =", "the answer is", "3 + 4 = so", "9", "5 + 5 =", "so 7 + 1 ="]
    examples = [EvalExample(index=10 + 3 * i, answer=str(i), input_ids=tokenizer.encode(q))
                for i, q in enumerate(questions)]
    return engine, tokenizer, examples


def brute_force(engine, tokenizer, examples, settings, reward_fn):
    params = SamplingParams(n=settings.n, temperature=settings.temperature, top_p=settings.top_p,
                            max_tokens=settings.max_tokens, seed=settings.seed,
                            stop_token_ids=[tokenizer.eos_token_id])
    outputs = engine.generate([e.input_ids for e in examples], params, prompt_keys=[e.index for e in examples])
    flat = [(e, c) for e, group in zip(examples, outputs) for c in group]
    scores = [reward_fn(tokenizer.decode(c.token_ids, skip_special_tokens=True), e.answer, c.finish_reason)
              for e, c in flat]
    return outputs, flat, scores


def test_matches_brute_force(setup):
    engine, tokenizer, examples = setup
    settings = EvalSettings(n=8, temperature=1.0, top_p=0.95, max_tokens=20, seed=3, batch_prompts=4)
    result = evaluate_examples(engine, tokenizer, examples, settings, reward_fn=even_words)
    outputs, flat, scores = brute_force(engine, tokenizer, examples, settings, even_words)
    total = len(flat)
    assert result["num_prompts"] == len(examples) and result["num_samples"] == total == 48
    assert result["accuracy"] == sum(is_correct(s) for s in scores) / total
    assert result["mean_tokens"] == sum(len(c.token_ids) for _, c in flat) / total
    assert result["truncation_rate"] == sum(c.finish_reason == "length" for _, c in flat) / total
    assert 0 < result["accuracy"] < 1 and 0 < result["truncation_rate"] < 1, "the test needs a mix"
    per_sample = [sum(is_correct(scores[i * 8 + j]) for i in range(len(examples))) / len(examples) for j in range(8)]
    mean = sum(per_sample) / 8
    assert result["accuracy_std_over_samples"] == pytest.approx((sum((a - mean) ** 2 for a in per_sample) / 8) ** 0.5)
    for i, (example, group, row) in enumerate(zip(examples, outputs, result["per_prompt"])):
        assert row["index"] == example.index
        assert row["accuracy"] == sum(is_correct(s) for s in scores[i * 8:(i + 1) * 8]) / 8
        assert row["mean_tokens"] == sum(len(c.token_ids) for c in group) / 8
    assert result["seconds"] > 0


def test_default_reward_and_stop_tokens(setup):
    engine, tokenizer, examples = setup
    settings = EvalSettings(n=4, temperature=1.0, max_tokens=12, seed=1)
    result = evaluate_examples(engine, tokenizer, examples[:3], settings)
    _, flat, scores = brute_force(engine, tokenizer, examples[:3], settings, capped_reward)
    assert result["accuracy"] == sum(is_correct(s) for s in scores) / len(flat)
    assert result["truncation_rate"] == sum(c.finish_reason == "length" for _, c in flat) / len(flat)
    # the tokenizer's EOS ended every finished response
    assert all(c.token_ids[-1] == tokenizer.eos_token_id for _, c in flat if c.finish_reason == "stop")


def test_batching_does_not_change_results(setup):
    engine, tokenizer, examples = setup
    one, many = (evaluate_examples(engine, tokenizer, examples, EvalSettings(n=4, temperature=1.0, max_tokens=16,
                                                                             batch_prompts=b), reward_fn=even_words)
                 for b in (1, 64))
    for r in (one, many):
        del r["seconds"]
    assert one == many


def test_progress_bar_runs(setup, capsys):
    engine, tokenizer, examples = setup
    evaluate_examples(engine, tokenizer, examples[:2], EvalSettings(n=2, max_tokens=4, batch_prompts=1),
                      reward_fn=even_words, progress=True, name="tiny-bench")
    assert "tiny-bench" in capsys.readouterr().out


def test_bad_inputs(setup):
    engine, tokenizer, examples = setup
    with pytest.raises(ValueError, match="no examples"):
        evaluate_examples(engine, tokenizer, [], EvalSettings(n=2))
    with pytest.raises(ValueError, match="unique"):
        evaluate_examples(engine, tokenizer, [examples[0], examples[0]], EvalSettings(n=2))
    with pytest.raises(ValueError, match="batch_prompts"):
        evaluate_examples(engine, tokenizer, examples, EvalSettings(n=2, batch_prompts=0))
    no_eos = transformers.PreTrainedTokenizerFast(tokenizer_object=tokenizer.backend_tokenizer, unk_token="<unk>")
    with pytest.raises(ValueError, match="stop_token_ids"):
        evaluate_examples(engine, no_eos, examples, EvalSettings(n=2))


def test_report_round_trip(setup, tmp_path, capsys):
    engine, tokenizer, examples = setup
    settings = EvalSettings(n=2, temperature=1.0, max_tokens=8)
    results = {"tiny": evaluate_examples(engine, tokenizer, examples, settings, reward_fn=even_words)}
    prompt = {"instruction": "Answer.", "use_chat_template": False, "source": "test"}
    for step, label in ((None, "final"), (40, "peak"), (20, "trough")):
        name = "final" if step is None else f"step_{step:06d}"
        write_eval_report(tmp_path / "eval" / f"{name}.json", model="tiny-qwen2", label=label, step=step,
                          settings=settings, results=results, prompt=prompt)
    assert sorted(p.name for p in (tmp_path / "eval").iterdir()) == [
        "final.json", "step_000020.json", "step_000040.json"]  # no temp files left behind
    reports = load_eval_reports(tmp_path)
    assert [r["step"] for r in reports] == [20, 40, None]
    assert reports[0] == {"model": "tiny-qwen2", "label": "trough", "step": 20,
                          "settings": json.loads(json.dumps(settings.__dict__)), "prompt": prompt,
                          "benchmarks": results}
    assert load_eval_reports(tmp_path / "nothing-here") == []
    print_eval_table(reports[0])
    out = capsys.readouterr().out
    assert "tiny" in out and "trough" in out and f"{100 * results['tiny']['accuracy']:.1f}%" in out
