"""The rollout engine against Hugging Face generate and the trainer's logprob recomputation."""
import pytest
import torch

from siri.engine import LLMEngine, SamplingParams
from siri.engine.batch_state import DecodeBatchState
from siri.engine.page_pool import PagePool
from siri.engine.scheduler import Scheduler
from siri.engine.sequence import Sequence
from siri.ops import token_logprobs
from tiny_models import assert_greedy_matches_hf, random_prompts, tiny_model


@pytest.mark.parametrize("model_type", ["qwen2", "llama", "qwen3"])
@pytest.mark.parametrize("num_pages", [None, 40])  # None: the default pool size
def test_greedy_matches_hf_generate(model_type, num_pages, gen):
    model = tiny_model(model_type)
    prompts = random_prompts(16, 256, gen)
    engine = LLMEngine(model, page_size=4, num_pages=num_pages, max_num_seqs=16)
    outs = engine.generate(prompts, SamplingParams(n=1, temperature=0.0, max_tokens=64))
    if num_pages:
        assert engine.last_stats["preemptions"] > 0, "the small pool must force preemption"
    else:
        assert engine.last_stats["preemptions"] == 0 and engine.pool.num_pages == engine.pool_pages() > 2048
    for prompt, out in zip(prompts, outs):
        assert_greedy_matches_hf(model, prompt, out[0].token_ids, 64)
        assert out[0].finish_reason == "length"


def test_logprobs_equal_trainer_recomputation(gen):
    model = tiny_model("qwen2")
    prompts = random_prompts(6, 256, gen)
    temperature = 0.8
    outs = LLMEngine(model, page_size=16).generate(
        prompts, SamplingParams(n=3, temperature=temperature, max_tokens=20, seed=7))
    for prompt, group in zip(prompts, outs):
        for completion in group:
            ids = torch.tensor([prompt + completion.token_ids])
            with torch.no_grad():
                logits = model(ids).logits[0, len(prompt) - 1:-1]
            expected = token_logprobs(logits.contiguous(), ids[0, len(prompt):], temperature=temperature)
            torch.testing.assert_close(torch.tensor(completion.logprobs), expected, atol=1e-4, rtol=0)


def test_engine_sees_parameter_updates_without_any_call(gen):
    model = tiny_model("qwen2")
    prompts = random_prompts(4, 256, gen)
    engine = LLMEngine(model, page_size=8)
    greedy = SamplingParams(temperature=0.0, max_tokens=16)
    before = engine.generate(prompts, greedy)
    optimizer = torch.optim.SGD(model.parameters(), lr=5.0)
    loss = model(torch.tensor([prompts[0]]), labels=torch.tensor([prompts[0]])).loss
    loss.backward()
    optimizer.step()
    after = engine.generate(prompts, greedy)
    assert [o[0].token_ids for o in after] != [o[0].token_ids for o in before]
    for prompt, out in zip(prompts, after):
        assert_greedy_matches_hf(model, prompt, out[0].token_ids, 16)


def test_mixed_caps_and_stop_tokens(gen):
    model = tiny_model("qwen2", vocab_size=32)  # small vocab: stop tokens get sampled
    prompts = random_prompts(12, 32, gen)
    caps = [1, 2, 5, 9, 17, 33] * 2
    outs = LLMEngine(model, page_size=4).generate(
        prompts, SamplingParams(n=4, temperature=1.0, max_tokens=caps, stop_token_ids=[3, 7], seed=1))
    reasons = set()
    for cap, group in zip(caps, outs):
        for c in group:
            assert 1 <= len(c.token_ids) <= cap
            reasons.add(c.finish_reason)
            if c.finish_reason == "length":
                assert len(c.token_ids) == cap and c.token_ids[-1] not in (3, 7)
            else:
                assert c.finish_reason == "stop" and c.token_ids[-1] in (3, 7)
                assert not set(c.token_ids[:-1]) & {3, 7}
    assert reasons == {"stop", "length"}


def test_seeded_sampling_is_identical_under_preemption_and_batching(gen):
    model = tiny_model("llama")
    prompts = random_prompts(8, 256, gen)
    params = SamplingParams(n=4, temperature=1.0, top_p=0.9, max_tokens=24, seed=3)
    roomy = LLMEngine(model, page_size=4, num_pages=4096).generate(prompts, params)
    tight_engine = LLMEngine(model, page_size=4, num_pages=40, max_num_seqs=8)
    tight = tight_engine.generate(prompts, params)
    assert tight_engine.last_stats["preemptions"] > 0
    assert [[c.token_ids for c in g] for g in tight] == [[c.token_ids for c in g] for g in roomy]
    # the same prompt, alone and with the same key, draws the same completions
    alone = LLMEngine(model, page_size=4).generate([prompts[5]], params, prompt_keys=[5])
    assert [c.token_ids for c in alone[0]] == [c.token_ids for c in roomy[5]]


def test_completions_of_one_prompt_differ_when_sampling(gen):
    model = tiny_model("qwen2")
    outs = LLMEngine(model).generate(random_prompts(1, 256, gen), SamplingParams(n=8, max_tokens=12))
    assert len({tuple(c.token_ids) for c in outs[0]}) > 1


def test_prompt_pages_are_shared_and_last_page_copied():
    pool = PagePool(num_pages=64, page_size=16, num_layers=1, num_kv_heads=1, head_dim=64,
                    dtype=torch.float32, device=torch.device("cpu"))
    batch = DecodeBatchState(max_rows=64, max_pages=4, page_size=16, device=torch.device("cpu"))
    scheduler = Scheduler(pool, max_num_seqs=64, max_prefill_tokens=4096, batch=batch)
    group = [Sequence(0, j, list(range(1, 41)), 8, seed=j) for j in range(8)]
    for seq in group:
        seq.output_ids.append(5)  # first token, as drawn from the prefill logits
    scheduler.add_prompt(group)
    (item,) = scheduler.admit()
    scheduler.start_running(item)
    # 40 tokens = 2 full pages shared by all 8 + one partial page copied per completion
    assert pool.num_free == 64 - (2 + 8)
    assert all(s.pages[:2] == group[0].pages[:2] for s in group)
    assert len({s.pages[2] for s in group}) == 8


def test_unsupported_architecture_is_a_clear_error():
    import transformers

    gpt2 = transformers.GPT2LMHeadModel(transformers.GPT2Config(n_layer=1, n_embd=64, n_head=2, vocab_size=50))
    with pytest.raises(ValueError, match="supports the model types"):
        LLMEngine(gpt2)


@pytest.mark.parametrize("prompts, params, match", [
    ([[]], SamplingParams(), "prompt 0 is empty"),
    ([[1, 999]], SamplingParams(), "outside the vocabulary"),
    ([[1, 2]], SamplingParams(max_tokens=0), "max_tokens must be >= 1"),
    ([[1, 2]], SamplingParams(top_p=0.0), "top_p"),
    ([[1, 2]], SamplingParams(max_tokens=[4, 4]), "2 caps for 1 prompts"),
    ([[1, 2]], SamplingParams(stop_token_ids=[300]), "stop_token_ids"),
])
def test_bad_requests(prompts, params, match):
    engine = LLMEngine(tiny_model("qwen2"), num_pages=64)
    with pytest.raises(ValueError, match=match):
        engine.generate(prompts, params)


def test_a_sequence_larger_than_the_pool_is_an_error(gen):
    engine = LLMEngine(tiny_model("qwen2"), page_size=4, num_pages=8)
    with pytest.raises(ValueError, match="exceeds the KV pool"):
        engine.generate([list(range(1, 30))], SamplingParams(max_tokens=4))
