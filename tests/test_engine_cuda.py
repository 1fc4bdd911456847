"""The engine on a CUDA device: a decode step launches without one device-to-host sync, and
CUDA-graph decode gives the eager decode's tokens. Skipped, with the reason, without a GPU."""
import pytest
import torch

from conftest import CUDA_SKIP_REASON
from siri.engine import LLMEngine, SamplingParams
from siri.engine.cuda_graphs import CudaGraphCapture
from tiny_models import random_prompts, tiny_model

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(CUDA_SKIP_REASON is not None, reason=CUDA_SKIP_REASON or "")]


def forbid_syncs(engine):
    """Every decode step's device side runs under sync debug mode "error"."""
    launch = engine._launch_decode_step

    def checked():
        torch.cuda.set_sync_debug_mode("error")
        try:
            return launch()
        finally:
            torch.cuda.set_sync_debug_mode("default")

    engine._launch_decode_step = checked


@pytest.mark.parametrize("cuda_graphs", [False, True])
@pytest.mark.parametrize("num_pages", [4096, 60])  # 60: preemption, rows leaving and joining
def test_a_decode_step_never_waits_on_the_device(gen, cuda_graphs, num_pages):
    model = tiny_model("qwen2", dtype=torch.bfloat16).cuda()
    engine = LLMEngine(model, page_size=4, num_pages=num_pages, max_num_seqs=12, cuda_graphs=cuda_graphs)
    forbid_syncs(engine)
    outs = engine.generate(random_prompts(6, 256, gen), SamplingParams(n=2, max_tokens=[4, 30, 9, 30, 1, 17], seed=1))
    assert engine.last_stats["steps"] > 20 and all(len(c.token_ids) >= 1 for g in outs for c in g)
    if num_pages == 60:
        assert engine.last_stats["preemptions"] > 0


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_cuda_graph_decode_gives_the_eager_tokens(gen, temperature):
    model = tiny_model("qwen2").cuda()
    prompts = random_prompts(9, 256, gen)
    params = SamplingParams(n=3, temperature=temperature, max_tokens=24, seed=5)
    graphs = LLMEngine(model, page_size=8, max_num_seqs=32, num_pages=2048, cuda_graphs=True)
    eager = LLMEngine(model, page_size=8, max_num_seqs=32, num_pages=2048, cuda_graphs=False)
    a, b = graphs.generate(prompts, params), eager.generate(prompts, params)
    assert isinstance(graphs._graphs._capture, CudaGraphCapture)
    assert [[c.token_ids for c in g] for g in a] == [[c.token_ids for c in g] for g in b]
    for ga, gb in zip(a, b):
        for ca, cb in zip(ga, gb):
            torch.testing.assert_close(ca.logprobs, cb.logprobs, atol=1e-4, rtol=0)


def test_graphs_are_on_by_default_on_cuda():
    assert LLMEngine(tiny_model("qwen2").cuda(), num_pages=64).cuda_graphs


def paper_layout_model():
    """DeepSeek-R1-Distill-Qwen-1.5B's layout (Qwen2: 28 layers, hidden 1536, 12 query heads
    over 2 KV heads of 128, vocabulary 151936), random weights, bf16: the paper recipe's shapes."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(vocab_size=151936, hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
                         num_attention_heads=12, num_key_value_heads=2, max_position_embeddings=131072,
                         rope_theta=10000.0, tie_word_embeddings=False)
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = Qwen2ForCausalLM(config)
    return model.to(torch.bfloat16).eval()


def test_default_pool_with_graphs_matches_eager(gen):
    """What every shipped config runs on its first rollout: no pool size (free-memory query),
    graphs on, the paper's layout; the graph tokens equal the eager ones."""
    model = paper_layout_model()
    prompts = random_prompts(16, 151936, gen, min_len=20, max_len=200)
    params = SamplingParams(n=4, temperature=1.0, max_tokens=[64, 300] * 8, seed=2)
    graphs = LLMEngine(model, max_num_seqs=256)
    assert graphs.cuda_graphs and graphs.graph_memory_bytes() > 0
    a = graphs.generate(prompts, params)
    pages = graphs.pool.num_pages
    graphs.release_kv_cache()
    eager = LLMEngine(model, max_num_seqs=256, num_pages=pages, cuda_graphs=False)
    b = eager.generate(prompts, params)
    # bf16 GEMMs over a padded bucket may round differently from the unpadded batch, which can
    # flip a rare draw at a CDF boundary: nearly every completion must still be identical
    same = [ca.token_ids == cb.token_ids for ga, gb in zip(a, b) for ca, cb in zip(ga, gb)]
    print(f"identical completions, graphs vs eager: {sum(same)}/{len(same)}; pool {pages} pages")
    assert sum(same) >= 0.9 * len(same)


def test_graphs_are_reused_across_generate_calls(gen):
    """The second call captures nothing and is not slower for it; the capture time is printed."""
    import time

    model = tiny_model("qwen2", dtype=torch.bfloat16).cuda()
    engine = LLMEngine(model, page_size=16, max_num_seqs=64, num_pages=4096, max_seq_len=512)
    params = SamplingParams(n=8, temperature=1.0, max_tokens=64, seed=1)
    times = []
    for _ in range(2):
        start = time.perf_counter()
        engine.generate(random_prompts(8, 256, gen), params)
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
        print(f"generate: {times[-1]:.3f} s, graphs captured: {engine.last_stats['graph_captures']}")
    assert engine.last_stats["graph_captures"] == 0


@pytest.mark.parametrize("heads", [(12, 2), (28, 4)])
def test_graph_replay_splits_the_skewed_batch_like_eager(gen, heads):
    """One 32K-token sequence among 63 short ones, attended in a captured CUDA graph whose split
    length is the device scalar written before each replay: the graph's output equals the eager
    call's, the scalar is read at replay (changing it after capture changes the plan, not the
    result), and the replay is timed beside eager and the old capacity plan."""
    from siri.engine.cuda_graphs import replay_chunk_tokens
    from siri.ops import paged_attention_run
    from test_paged_attention import make_paged

    hq, hkv = heads
    lens = [32768] + [512] * 63
    k_cache, v_cache, table, kv_lens = make_paged(lens, 16, hkv, 128, torch.bfloat16, "cuda", gen)
    capacity = table.shape[1] * 16
    q = torch.randn(64, hq, 128, generator=gen).to("cuda", torch.bfloat16)
    eager = paged_attention_run(q, k_cache, v_cache, table, kv_lens, None, max_kv_len=max(lens), total_kv_len=sum(lens))
    chunk = torch.zeros(1, dtype=torch.int32, device="cuda")
    planned = replay_chunk_tokens(sum(lens), max(lens), 64, bucket=64, capacity=capacity, num_q_heads=hq,
                                  num_kv_heads=hkv, head_dim=128, device="cuda")

    def replayed():
        return paged_attention_run(q, k_cache, v_cache, table, kv_lens, None, max_kv_len=capacity,
                                   total_kv_len=64 * capacity, chunk_tokens=chunk)

    chunk.fill_(planned)
    replayed()  # warm-up
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = replayed()
    for value in (planned, 2048, 16):
        chunk.fill_(value)
        graph.replay()
        torch.testing.assert_close(out.float(), eager.float(), atol=2e-2, rtol=0)

    def timed(fn, repeats=20):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        samples = []
        for _ in range(repeats):
            start.record()
            fn()
            end.record()
            end.synchronize()
            samples.append(start.elapsed_time(end))
        return sorted(samples)[repeats // 2]

    chunk.fill_(planned)
    eager_ms = timed(lambda: paged_attention_run(q, k_cache, v_cache, table, kv_lens, None, max_kv_len=max(lens),
                                                 total_kv_len=sum(lens)))
    graph_ms = timed(graph.replay)
    capacity_ms = timed(lambda: paged_attention_run(q, k_cache, v_cache, table, kv_lens, None, max_kv_len=capacity,
                                                    total_kv_len=64 * capacity))
    print(f"heads {hq}/{hkv}: eager {eager_ms:.3f} ms, graph replay (chunk {planned}) {graph_ms:.3f} ms, "
          f"capacity plan {capacity_ms:.3f} ms")
