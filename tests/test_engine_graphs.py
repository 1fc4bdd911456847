"""The CUDA-graph decode path's host code, executed on the CPU: default pool sizing with graphs
on, the padded buckets against the eager decode on every parity case, graph reuse across
``generate`` calls, the memory estimate against what the graphs keep, and models whose RoPE
a graph cannot capture. Only the capture/replay calls differ on a GPU (tests/test_engine_cuda.py)."""
import random

import pytest
import torch

from siri.engine import LLMEngine, SamplingParams, device_memory
from siri.engine.cuda_graphs import (DecodeGraphs, EagerCapture, batch_buckets, buckets_for, graph_logits_bytes,
                                     graph_memory_bytes, replay_chunk_tokens)
from siri.engine.page_pool import PagePool
from siri.models.shape import ModelShape
from siri.ops.paged_attention import attention_split_plan, graph_max_splits
from tiny_models import assert_greedy_matches_hf, random_prompts, tiny_model


def test_a_default_sized_engine_with_graphs_generates(gen):
    """The configuration every CUDA config runs: no pool size, graphs on."""
    model = tiny_model("qwen2")
    engine = LLMEngine(model, page_size=8, max_num_seqs=8, cuda_graphs=True)
    prompts = random_prompts(3, 256, gen)
    outs = engine.generate(prompts, SamplingParams(temperature=0.0, max_tokens=12))
    for prompt, out in zip(prompts, outs):
        assert_greedy_matches_hf(model, prompt, out[0].token_ids, 12)
    assert isinstance(engine._graphs._capture, EagerCapture)
    assert engine.last_stats["graph_captures"] == len(buckets_for(3, 8)) == 3  # 1, 2, 4


def _tokens(outs):
    return [[(c.token_ids, c.finish_reason) for c in group] for group in outs]


# every engine parity case: (model type, vocab, prompts, sampling params, pool pages or None for the default)
PARITY_CASES = {
    "qwen2-greedy": ("qwen2", 256, 7, dict(n=1, temperature=0.0, max_tokens=20), None),
    "llama-n4-top-p": ("llama", 256, 5, dict(n=4, temperature=1.0, top_p=0.9, max_tokens=24, seed=3), None),
    "qwen3-mixed-caps-and-stops": ("qwen3", 40, 10, dict(n=3, temperature=1.0, stop_token_ids=[5], seed=11,
                                                         max_tokens=[3, 40, 17, 40, 9, 1, 33, 40, 25, 12]), None),
    "qwen2-n8": ("qwen2", 256, 2, dict(n=8, temperature=1.0, max_tokens=12, seed=2), None),
    "llama-preemption": ("llama", 256, 8, dict(n=4, temperature=1.0, top_p=0.9, max_tokens=24, seed=3), 40),
    "qwen3-preemption-mixed-caps": ("qwen3", 40, 10, dict(n=3, temperature=1.0, stop_token_ids=[5], seed=11,
                                                          max_tokens=[3, 40, 17, 40, 9, 1, 33, 40, 25, 12]), 45),
}


@pytest.mark.parametrize("case", sorted(PARITY_CASES))
def test_graph_decode_gives_the_eager_tokens(gen, case):
    model_type, vocab, count, params, num_pages = PARITY_CASES[case]
    model = tiny_model(model_type, vocab_size=vocab)
    prompts = random_prompts(count, vocab, gen)
    params = SamplingParams(**params)
    engines = {graphs: LLMEngine(model, page_size=4, num_pages=num_pages, max_num_seqs=10, cuda_graphs=graphs)
               for graphs in (True, False)}
    outs = {graphs: engine.generate(prompts, params) for graphs, engine in engines.items()}
    assert _tokens(outs[True]) == _tokens(outs[False])
    for group_graphs, group_eager in zip(outs[True], outs[False]):
        for a, b in zip(group_graphs, group_eager):
            torch.testing.assert_close(a.logprobs, b.logprobs, atol=1e-5, rtol=0)
    if num_pages is not None:
        assert engines[True].last_stats["preemptions"] > 0, "the small pool must force preemption"
    if params.temperature == 0:
        for prompt, out in zip(prompts, outs[True]):
            assert_greedy_matches_hf(model, prompt, out[0].token_ids, params.max_tokens)


@pytest.mark.parametrize("graphs", [True, False])
def test_default_pool_is_the_fraction_of_free_memory_less_the_graphs(monkeypatch, graphs):
    """pool bytes = fraction x free - graph memory, with the device's memory query replaced."""
    free = 3 << 30
    monkeypatch.setattr(device_memory, "free_bytes", lambda device: free)
    model = tiny_model("qwen2", vocab_size=512)
    engine = LLMEngine(model, page_size=16, max_num_seqs=64, gpu_memory_fraction=0.5, cuda_graphs=graphs)
    config = model.config
    page_bytes = PagePool.bytes_per_page(16, config.num_hidden_layers, config.num_key_value_heads,
                                         config.head_dim, torch.float32)
    graph_bytes = graph_memory_bytes(ModelShape.from_hf_config(config), 4, 64) if graphs else 0
    assert engine.graph_memory_bytes() == graph_bytes
    expected = (int(free * 0.5) - graph_bytes) // page_bytes
    assert engine.pool_pages() == expected
    engine.generate([[1, 2, 3]], SamplingParams(max_tokens=4))
    assert engine.pool.num_pages == expected


def test_the_cpu_default_pool_is_two_gib_less_the_graphs():
    engine = LLMEngine(tiny_model("qwen2"), page_size=16, max_num_seqs=16, cuda_graphs=True)
    page_bytes = PagePool.bytes_per_page(16, 2, 2, 64, torch.float32)
    assert engine.pool_pages() == (device_memory.CPU_DEFAULT_POOL_BYTES - engine.graph_memory_bytes()) // page_bytes
    assert 0 < engine.graph_memory_bytes() < device_memory.CPU_DEFAULT_POOL_BYTES


def test_a_pool_budget_under_one_page_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(device_memory, "free_bytes", lambda device: 1 << 20)
    engine = LLMEngine(tiny_model("qwen2", vocab_size=512), max_num_seqs=256, cuda_graphs=True)
    with pytest.raises(ValueError, match="KV pool's budget"):
        engine.generate([[1, 2, 3]], SamplingParams(max_tokens=4))


def test_every_bucket_writes_one_shared_output_that_the_estimate_counts(gen):
    """All buckets' graphs write their logits into one [max_rows, V] buffer (not one tensor per
    bucket: 32x less at 1,024 rows), and the estimate holds it and the LM head's own result."""
    model = tiny_model("llama", vocab_size=300)
    engine = LLMEngine(model, page_size=4, max_num_seqs=40, num_pages=512, cuda_graphs=True)
    engine.generate(random_prompts(10, 300, gen), SamplingParams(n=4, max_tokens=6, seed=1))  # 40 rows
    graphs = engine._graphs
    assert graphs.buckets == batch_buckets(40)
    stored = graphs.stored_logits_bytes()
    assert stored == 40 * 300 * 4 and graph_logits_bytes(300, 4, 40) == 2 * stored
    assert graph_memory_bytes(ModelShape.from_hf_config(model.config), 4, 40) > 2 * stored
    # a replay of a small bucket leaves the larger buckets' rows alone and returns its own rows
    logits = graphs.forward(3)
    assert logits.shape == (3, 300) and logits.data_ptr() == graphs._output.data_ptr()


def test_graphs_are_kept_across_generate_calls_while_the_pool_lives(gen):
    model = tiny_model("qwen2")
    engine = LLMEngine(model, page_size=4, max_num_seqs=16, num_pages=1024, cuda_graphs=True, max_seq_len=120)
    params = SamplingParams(n=2, temperature=1.0, max_tokens=20, seed=9)
    first = engine.generate(random_prompts(4, 256, gen), params)       # 8 rows: buckets 1, 2, 4, 8
    assert engine.last_stats["graph_captures"] == 4
    state = engine._state
    again = engine.generate(random_prompts(3, 256, gen), params)       # 6 rows: all captured
    assert engine.last_stats["graph_captures"] == 0 and engine._state is state
    engine.generate(random_prompts(8, 256, gen), params)               # 16 rows: only bucket 16 is new
    assert engine.last_stats["graph_captures"] == 1 and engine._graphs.buckets == [1, 2, 4, 8, 16]
    assert all(len(c.token_ids) >= 1 for g in first + again for c in g)
    engine.release_kv_cache()                                           # the graphs go with the pool
    engine.generate(random_prompts(1, 256, gen), params)
    assert engine.last_stats["graph_captures"] == 2                     # 2 rows: buckets 1, 2


def test_reused_graphs_give_the_tokens_of_a_fresh_engine(gen):
    model = tiny_model("qwen3")
    prompts = [random_prompts(5, 256, gen), random_prompts(3, 256, gen)]
    params = SamplingParams(n=3, temperature=1.0, max_tokens=[15, 4, 30, 9, 22], seed=4)
    kept = LLMEngine(model, page_size=4, max_num_seqs=16, num_pages=1024, cuda_graphs=True, max_seq_len=80)
    kept.generate(prompts[0], params)
    second = kept.generate(prompts[1], SamplingParams(n=3, temperature=1.0, max_tokens=18, seed=4))
    assert kept.last_stats["graph_captures"] == 0
    fresh = LLMEngine(model, page_size=4, max_num_seqs=16, num_pages=1024, cuda_graphs=False)
    expected = fresh.generate(prompts[1], SamplingParams(n=3, temperature=1.0, max_tokens=18, seed=4))
    assert _tokens(second) == _tokens(expected)


def test_a_longer_call_than_the_state_was_sized_for_rebuilds_it(gen):
    engine = LLMEngine(tiny_model("qwen2"), page_size=4, max_num_seqs=8, num_pages=1024, cuda_graphs=True)
    engine.generate([[1, 2, 3]], SamplingParams(max_tokens=5))
    narrow = engine._state
    engine.generate([[1, 2, 3]], SamplingParams(max_tokens=5))
    assert engine._state is narrow
    engine.generate([[1, 2, 3]], SamplingParams(max_tokens=60))
    assert engine._state is not narrow and engine._state.max_pages >= 63 // 4
    assert engine.last_stats["graph_captures"] == 1


def test_max_seq_len_sizes_the_state_once():
    engine = LLMEngine(tiny_model("qwen2"), page_size=4, max_num_seqs=4, num_pages=256, max_seq_len=101)
    engine.generate([[1, 2, 3]], SamplingParams(max_tokens=2))
    assert engine._state.max_pages == 26
    with pytest.raises(ValueError, match="max_seq_len"):
        LLMEngine(tiny_model("qwen2"), max_seq_len=1)


def test_a_batch_uses_the_grid_up_to_its_first_bucket_that_holds_it():
    assert buckets_for(6, 256) == [1, 2, 4, 8]
    assert buckets_for(40, 256) == [1, 2, 4, 8, 16, 32, 48]
    assert buckets_for(40, 40) == [1, 2, 4, 8, 16, 32, 40]
    assert buckets_for(300, 40) == batch_buckets(40)


def test_capturing_with_rows_in_the_batch_is_refused():
    engine = LLMEngine(tiny_model("qwen2"), page_size=4, max_num_seqs=4, num_pages=64, cuda_graphs=True)
    engine.generate([[1, 2, 3]], SamplingParams(max_tokens=2))
    graphs: DecodeGraphs = engine._graphs
    graphs.state.seqs.append(object())
    with pytest.raises(RuntimeError, match="decode batch is empty"):
        graphs.ensure(4)


def test_dynamic_rope_is_refused_under_graphs_and_runs_eagerly_by_default(gen):
    model = tiny_model("llama", rope_scaling={"rope_type": "dynamic", "factor": 2.0})
    with pytest.raises(ValueError, match="rope_type 'dynamic'"):
        LLMEngine(model, num_pages=64, cuda_graphs=True)
    engine = LLMEngine(model, page_size=4, num_pages=256)
    assert not engine.cuda_graphs
    prompt = random_prompts(1, 256, gen)[0]
    out = engine.generate([prompt], SamplingParams(temperature=0.0, max_tokens=10))
    assert_greedy_matches_hf(model, prompt, out[0][0].token_ids, 10)


HEADS = [(12, 2, 128), (28, 4, 128)]  # the 1.5B and 7B layouts


@pytest.mark.parametrize("heads", HEADS)
def test_graph_replay_splits_the_skewed_batch_like_eager(heads):
    """The planner's skew case on an H200 (132 SMs): one 32K-token sequence among 63 short
    ones. Planned for the capacity (the old graph path), the long row runs in 2,048-token
    chunks; the replay's chunk scalar now carries the eager plan, so its critical path is
    eager's."""
    hq, hkv, d = heads
    lens = [32768] + [512] * 63
    facts = dict(num_q_heads=hq, num_kv_heads=hkv, head_dim=d, device="cuda", units=132)
    eager_chunk, eager_splits = attention_split_plan(sum(lens), max(lens), len(lens), **facts)
    capacity = 32768 + 1024
    replay = replay_chunk_tokens(sum(lens), max(lens), len(lens), bucket=64, capacity=capacity, **facts)
    assert eager_splits <= graph_max_splits(capacity, 64, **facts)
    assert replay == eager_chunk
    old_chunk, _ = attention_split_plan(64 * capacity, capacity, 64, **facts)  # planned for the capacity
    assert min(max(lens), old_chunk) >= 2 * min(max(lens), replay), (old_chunk, replay)


@pytest.mark.parametrize("device, units", [("cuda", 132), ("cuda", 16), ("cpu", 2), ("cpu", 8)])
def test_replay_chunks_equal_eager_wherever_the_eager_plan_fits_the_graph(device, units):
    rng = random.Random(f"{device}{units}")
    for _ in range(300):
        rows = rng.choice([1, 3, 16, 64, 200])
        bucket = next(b for b in batch_buckets(256) if b >= rows)
        capacity = rng.choice([2048, 16384, 40960])
        lens = [rng.randint(1, capacity if rng.random() < 0.2 else capacity // 8) for _ in range(rows)]
        heads = dict(zip(("num_q_heads", "num_kv_heads", "head_dim"), rng.choice(HEADS)))
        facts = dict(device=device, units=units, **heads)
        eager_chunk, eager_splits = attention_split_plan(sum(lens), max(lens), rows, **facts)
        room = graph_max_splits(capacity, bucket, **facts)
        chunk = replay_chunk_tokens(sum(lens), max(lens), rows, bucket=bucket, capacity=capacity, **facts)
        if eager_splits <= room:
            assert chunk == eager_chunk
        else:
            assert -(-max(lens) // chunk) <= room and chunk % 16 == 0


def test_each_replay_writes_the_real_batch_plan(gen):
    """The engine hands the split planner the real rows' facts every step, and the value it
    returns is what the graph's attention reads."""
    model = tiny_model("qwen2")
    engine = LLMEngine(model, page_size=4, max_num_seqs=16, num_pages=1024, cuda_graphs=True, max_seq_len=100)
    engine.generate([[1, 2]] * 5, SamplingParams(n=3, max_tokens=2))   # captures the buckets for 15 rows
    graphs, calls = engine._graphs, []
    plan = graphs.split_chunk

    def recording(total, longest, rows):
        state = engine._state
        lens = state._kv_lens[:rows].tolist()
        assert (total, longest) == (sum(lens), max(lens)) and rows == state.size
        calls.append(plan(total, longest, rows))
        return calls[-1]

    graphs.split_chunk = recording
    engine.generate(random_prompts(5, 256, gen), SamplingParams(n=3, max_tokens=[4, 30, 9, 30, 1], seed=1))
    assert len(calls) > 20
    assert int(engine._state.device_views(1)["chunk_tokens"][0]) == calls[-1]


def test_a_replay_whose_eager_plan_overflows_the_graph_buffer_grows_its_chunk():
    """A 512K-token capacity for 9 rows in a 16-row bucket (28/4 heads): eager splits its long
    row 256 ways, more than the bucket's partial buffer holds; the replay takes the smallest
    multiple of 16 whose splits fit (what the kernel's clamp would do anyway)."""
    facts = dict(num_q_heads=28, num_kv_heads=4, head_dim=128, device="cuda", units=132)
    capacity = 1 << 19
    lens = [capacity] + [16] * 8
    _, eager_splits = attention_split_plan(sum(lens), capacity, 9, **facts)
    room = graph_max_splits(capacity, 16, **facts)
    assert eager_splits > room
    chunk = replay_chunk_tokens(sum(lens), capacity, 9, bucket=16, capacity=capacity, **facts)
    assert chunk % 16 == 0 and -(-capacity // chunk) <= room < -(-capacity // (chunk - 16))


def test_a_bucket_beyond_the_captured_ones_is_an_engine_error():
    engine = LLMEngine(tiny_model("qwen2"), page_size=4, max_num_seqs=8, num_pages=64, cuda_graphs=True)
    engine.generate([[1, 2, 3]], SamplingParams(max_tokens=2))
    with pytest.raises(RuntimeError, match="no CUDA graph captured for 5 rows"):
        engine._graphs.bucket(5)


def test_dynamic_rope_on_cuda_turns_graphs_off_with_a_warning(monkeypatch):
    """The default (graphs on for CUDA) meets a dynamic-RoPE model: eager decode, said once."""
    from siri.engine.model_runner import ModelRunner

    monkeypatch.setattr(ModelRunner, "device", property(lambda self: torch.device("cuda")))
    model = tiny_model("llama", rope_scaling={"rope_type": "dynamic", "factor": 2.0})
    with pytest.warns(UserWarning, match="CUDA graphs are off"):
        engine = LLMEngine(model, num_pages=64)
    assert not engine.cuda_graphs


@pytest.mark.parametrize("kwargs, match", [
    (dict(page_size=0), "page_size, max_num_seqs and max_prefill_tokens must be >= 1"),
    (dict(max_num_seqs=0), "page_size, max_num_seqs and max_prefill_tokens must be >= 1"),
    (dict(num_pages=4, kv_cache_bytes=1 << 20), "give num_pages or kv_cache_bytes, not both"),
    (dict(gpu_memory_fraction=1.0), r"gpu_memory_fraction must be in \(0, 1\), got 1.0"),
    (dict(num_pages=0), "needs at least one page, got num_pages=0"),
])
def test_bad_engine_arguments_are_clear_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LLMEngine(tiny_model("qwen2"), **kwargs)


@pytest.mark.parametrize("prompts, keys, n, match", [
    ([], None, 1, "prompt_token_ids is empty"),
    ([[1, 2]], [0, 1], 1, "prompt_keys has 2 entries for 1 prompts"),
    ([[1, 2]], None, 9, r"SamplingParams.n=9 exceeds max_num_seqs=8"),
])
def test_bad_generate_requests_are_clear_errors(prompts, keys, n, match):
    engine = LLMEngine(tiny_model("qwen2"), num_pages=64, max_num_seqs=8)
    with pytest.raises(ValueError, match=match):
        engine.generate(prompts, SamplingParams(n=n, max_tokens=2), prompt_keys=keys)
    with pytest.raises(RuntimeError, match="no generate"):
        engine._in_progress()
