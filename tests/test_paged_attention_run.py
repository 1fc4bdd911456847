"""siri.ops.paged_attention_run (the engine's sync-free attention): the same results as the
validating decode/prefill ops and the float64 reference, with the split plan taken from host
facts (exact or an upper bound, as a CUDA graph uses), and clear errors on the CPU."""
import pytest
import torch

from conftest import CUDA_SKIP_REASON
import _siri_probes as probes
from siri.ops import (paged_attention_run, paged_decode_attention_reference, paged_prefill_attention,
                      paged_prefill_attention_reference)
from siri.ops.paged_attention import attention_split_plan, graph_max_splits
from test_paged_attention import TOL, UNUSED, make_paged


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("bound", ["exact", "capacity"])
def test_decode_matches_reference(device, gen, dtype, bound):
    batch = int(torch.randint(1, 12, (), generator=gen))
    lens = torch.randint(1, 900, (batch,), generator=gen).tolist()
    lens[0] = 1  # edge: a single cached token
    k_cache, v_cache, block_table, seq_lens = make_paged(lens, 16, 2, 128, dtype, device, gen)
    q = torch.randn(batch, 6, 128, generator=gen).to(device, dtype)
    capacity = block_table.shape[1] * 16
    max_kv, total = (max(lens), sum(lens)) if bound == "exact" else (capacity, batch * capacity)
    out = paged_attention_run(q, k_cache, v_cache, block_table, seq_lens, None, max_kv_len=max_kv, total_kv_len=total)
    ref = paged_decode_attention_reference(q, k_cache, v_cache, block_table, seq_lens)
    torch.testing.assert_close(out.cpu().double(), ref, atol=TOL[dtype], rtol=0)


def test_prefill_equals_the_validating_op(device, gen):
    lens = [40, 45, 7]
    new = [40, 5, 7]  # sequence 1 keeps a 40-token prefix, 5 tokens are new
    k_cache, v_cache, block_table, seq_lens = make_paged(lens, 8, 2, 64, torch.float32, device, gen)
    q = torch.randn(sum(new), 4, 64, generator=gen).to(device)
    cu = torch.tensor([0, 40, 45, 52], dtype=torch.int32, device=device)
    query_seq = torch.repeat_interleave(torch.arange(3), torch.tensor(new)).int().to(device)
    kv_lens = torch.cat([torch.arange(n - m + 1, n + 1) for n, m in zip(lens, new)]).int().to(device)
    out = paged_attention_run(q, k_cache, v_cache, block_table, kv_lens, query_seq,
                              max_kv_len=max(lens), total_kv_len=int(kv_lens.sum()))
    torch.testing.assert_close(out, paged_prefill_attention(q, k_cache, v_cache, block_table, seq_lens, cu),
                               atol=1e-6, rtol=0)
    ref = paged_prefill_attention_reference(q, k_cache, v_cache, block_table, seq_lens, cu)
    torch.testing.assert_close(out.cpu().double(), ref, atol=1e-4, rtol=0)


def call_with(**change):
    k_cache, v_cache, block_table, lens = make_paged([5, 20], 4, 1, 64, torch.float32, "cpu",
                                                     torch.Generator().manual_seed(0))
    args = dict(q=torch.zeros(2, 2, 64), block_table=block_table, kv_lens=lens, query_seq=None, max_kv_len=20,
                total_kv_len=25)
    args.update(change)
    return paged_attention_run(args["q"], k_cache, v_cache, args["block_table"], args["kv_lens"], args["query_seq"],
                               max_kv_len=args["max_kv_len"], total_kv_len=args["total_kv_len"])


@pytest.mark.parametrize("change, match", [
    (dict(kv_lens=torch.tensor([5, 21], dtype=torch.int32)), r"kv_lens\[1\] = 21 is outside \[1, max_kv_len = 20\]"),
    (dict(kv_lens=torch.tensor([0, 20], dtype=torch.int32)), r"kv_lens\[0\] = 0"),
    (dict(max_kv_len=10 ** 6), "max_kv_len must be in"),
    (dict(total_kv_len=-1), "total_kv_len must be >= 0"),
    (dict(kv_lens=torch.tensor([5, 20])), "kv_lens must have dtype"),
    (dict(query_seq=torch.tensor([0, 2], dtype=torch.int32)), r"query_seq\[1\] = 2 is outside"),
    (dict(block_table=torch.tensor([[0, 1, 2, 3, 4], [9, 99, 0, 0, 0]], dtype=torch.int32)),
     r"block_table\[1, 1\] = 99 is outside"),
    (dict(q=torch.zeros(3, 2, 64)), "q.shape"),
])
def test_bad_input_on_the_cpu_is_a_clear_error(change, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call_with(**change)


def test_opcheck(device, gen):
    k_cache, v_cache, block_table, lens = make_paged([3, 20], 4, 2, 64, torch.float32, device, gen)
    q = torch.randn(2, 4, 64, generator=gen).to(device)
    torch.library.opcheck(torch.ops.siri.paged_attention_run.default,
                          (q, k_cache, v_cache, block_table, lens, None, 20, 23, None))


# ---- chunk_tokens: the split length read at run time (CUDA-graph replay) --------------------

def exact_width(block_table, capacity_pages):
    """The block table cut or padded (with UNUSED ids) to capacity_pages columns, so
    max_pages * page_size is exactly the capacity."""
    pad = torch.full((block_table.shape[0], max(0, capacity_pages - block_table.shape[1])), UNUSED,
                     dtype=block_table.dtype, device=block_table.device)
    return torch.cat([block_table, pad], dim=1)[:, :capacity_pages].contiguous()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("lens, chunk", [
    ([2048] + [96] * 7, 512),     # skewed: the long row at capacity takes 4 splits, short rows one
    ([2048] + [96] * 7, 1000),    # not a multiple of 16: runs as 1008 (3 splits of the long row)
    ([2048, 1, 700, 2047], 16),   # far too short: the clamp raises it (2048 / max_splits per split)
    ([2048, 1, 700, 2047], 5),    # below 16 and not a multiple of 16: reads as 16, then clamped
    ([1, 1, 1], 64),              # every query one token
    ([2048, 1500], 4096),         # longer than every query: nothing is split
])
def test_chunk_tokens_decode_matches_reference(device, gen, dtype, lens, chunk):
    """Graph-style calls (max_kv_len = the block table's capacity, total = rows x capacity,
    the chunk in a [1] int32 tensor) give the float64 reference's result and the eager call's,
    for a skewed batch and edge sizes: kv_len 1, kv_len == capacity, a chunk shorter than the
    capacity needs (the clamp engages), and chunk values that are not multiples of 16."""
    page_size = 16
    k_cache, v_cache, block_table, seq_lens = make_paged(lens, page_size, 2, 128, dtype, device, gen)
    capacity = 2048
    block_table = exact_width(block_table, capacity // page_size)
    q = torch.randn(len(lens), 8, 128, generator=gen).to(device, dtype)
    chunk_t = torch.tensor([chunk], dtype=torch.int32, device=device)
    out = paged_attention_run(q, k_cache, v_cache, block_table, seq_lens, None, max_kv_len=capacity,
                              total_kv_len=len(lens) * capacity, chunk_tokens=chunk_t)
    ref = paged_decode_attention_reference(q, k_cache, v_cache, block_table, seq_lens)
    torch.testing.assert_close(out.cpu().double(), ref, atol=TOL[dtype], rtol=0)
    eager = paged_attention_run(q, k_cache, v_cache, block_table, seq_lens, None, max_kv_len=max(lens),
                                total_kv_len=sum(lens))
    torch.testing.assert_close(out, eager, atol=TOL[dtype], rtol=0)
    assert chunk_t.item() == chunk  # read, never written


def test_the_chunk_clamp_engages_in_the_cases_above():
    """The 16- and 5-token chunks cannot cover a 2,048-token row within the call's max_splits:
    the kernels' per-query split (siri::query_split) raises them, and leaves the others."""
    max_splits = graph_max_splits(2048, 4, 8, 2, 128, device="cpu")
    for chunk, runs_as, raised in [(16, 16, True), (5, 16, True), (512, 512, False), (1000, 1008, False)]:
        (keys, used, splits), = probes.attention_query_splits([2048], 2048, chunk, max_splits, True)
        assert keys == 2048 and splits <= max_splits
        assert (used != runs_as) == raised and used >= runs_as, (chunk, used)


def test_chunk_tokens_prefill_equals_the_validating_op(device, gen):
    """Prefill queries (query_seq) with a run-time chunk: the same as paged_prefill_attention."""
    lens, new = [600, 45, 7], [40, 5, 7]
    k_cache, v_cache, block_table, seq_lens = make_paged(lens, 8, 2, 64, torch.float32, device, gen)
    q = torch.randn(sum(new), 4, 64, generator=gen).to(device)
    cu = torch.tensor([0, 40, 45, 52], dtype=torch.int32, device=device)
    query_seq = torch.repeat_interleave(torch.arange(3), torch.tensor(new)).int().to(device)
    kv_lens = torch.cat([torch.arange(n - m + 1, n + 1) for n, m in zip(lens, new)]).int().to(device)
    capacity = block_table.shape[1] * 8
    for chunk in (16, 100, 256):
        out = paged_attention_run(q, k_cache, v_cache, block_table, kv_lens, query_seq, max_kv_len=capacity,
                                  total_kv_len=len(new) * capacity,
                                  chunk_tokens=torch.tensor([chunk], dtype=torch.int32, device=device))
        torch.testing.assert_close(out, paged_prefill_attention(q, k_cache, v_cache, block_table, seq_lens, cu),
                                   atol=1e-5, rtol=0)


def test_a_graph_replay_given_the_eager_chunk_matches_eager(gen):
    """The engine's use: the graph is called with max_kv_len = capacity and the chunk that
    attention_split_plan gives for the real batch; a CPU plan that splits (1 thread, a long row)
    is reproduced exactly, and the outputs agree with the eager call."""
    lens = [4000] + [300] * 5
    page_size, capacity = 16, 4096
    k_cache, v_cache, block_table, seq_lens = make_paged(lens, page_size, 2, 64, torch.float32, "cpu", gen)
    block_table = exact_width(block_table, capacity // page_size)
    q = torch.randn(len(lens), 4, 64, generator=gen)
    chunk, splits = attention_split_plan(sum(lens), max(lens), len(lens), 4, 2, 64, device="cpu")
    assert 1 < splits <= graph_max_splits(capacity, len(lens), 4, 2, 64, device="cpu")
    out = paged_attention_run(q, k_cache, v_cache, block_table, seq_lens, None, max_kv_len=capacity,
                              total_kv_len=len(lens) * capacity,
                              chunk_tokens=torch.tensor([chunk], dtype=torch.int32))
    eager = paged_attention_run(q, k_cache, v_cache, block_table, seq_lens, None, max_kv_len=max(lens),
                                total_kv_len=sum(lens))
    torch.testing.assert_close(out, eager, atol=1e-5, rtol=0)


@pytest.mark.parametrize("chunk_tokens, error, match", [
    (torch.tensor([512]), TypeError, "chunk_tokens must have dtype Int"),
    (torch.tensor([512, 512], dtype=torch.int32), ValueError, r"chunk_tokens.shape\[0\] must equal"),
    (torch.tensor(512, dtype=torch.int32), ValueError, "chunk_tokens must be 1-D"),
    (torch.tensor([0], dtype=torch.int32), ValueError, "chunk_tokens must hold a chunk length >= 1, got 0"),
    (torch.tensor([-7], dtype=torch.int32), ValueError, "chunk_tokens must hold a chunk length >= 1, got -7"),
])
def test_bad_chunk_tokens_on_the_cpu_is_a_clear_error(chunk_tokens, error, match):
    k_cache, v_cache, block_table, lens = make_paged([5, 20], 4, 1, 64, torch.float32, "cpu",
                                                     torch.Generator().manual_seed(0))
    with pytest.raises(error, match=match):
        paged_attention_run(torch.zeros(2, 2, 64), k_cache, v_cache, block_table, lens, None, max_kv_len=20,
                            total_kv_len=25, chunk_tokens=chunk_tokens)


def test_opcheck_with_chunk_tokens(device, gen):
    k_cache, v_cache, block_table, lens = make_paged([3, 20], 4, 2, 64, torch.float32, device, gen)
    q = torch.randn(2, 4, 64, generator=gen).to(device)
    chunk = torch.tensor([16], dtype=torch.int32, device=device)
    torch.library.opcheck(torch.ops.siri.paged_attention_run.default,
                          (q, k_cache, v_cache, block_table, lens, None, 24, 48, None, chunk))


def skewed_capacity_batch(device, gen, dtype=torch.float32):
    """Row 0 holds 600 tokens; row 1 fills its block-table row (2,048 tokens, every page valid)."""
    k_cache, v_cache, block_table, seq_lens = make_paged([600, 2048], 16, 2, 128, dtype, device, gen)
    block_table = exact_width(block_table, 128)
    q = torch.randn(2, 8, 128, generator=gen).to(device, dtype)
    return q, k_cache, v_cache, block_table, seq_lens


@pytest.mark.gpu
@pytest.mark.skipif(CUDA_SKIP_REASON is not None, reason=CUDA_SKIP_REASON or "")
def test_cuda_kv_lens_above_max_kv_len_stay_memory_safe(gen):
    """CUDA trusts kv_lens. With max_kv_len = 600 the plan has one split and no
    partial buffers; row 1 claiming 2,048 (within its pages) or 5,000 (past its block-table
    row) tokens made ceil(kv_len / chunk) splits write through a null partial_o (an illegal
    address). The kernels now clamp: the row takes at most max_splits splits and reads at most
    its row's capacity, so the result is the attention over min(kv_len, capacity) tokens."""
    q, k_cache, v_cache, block_table, seq_lens = skewed_capacity_batch("cuda", gen)
    for claimed in (2048, 5000):
        kv_lens = torch.tensor([600, claimed], dtype=torch.int32, device="cuda")
        out = paged_attention_run(q, k_cache, v_cache, block_table, kv_lens, None, max_kv_len=600, total_kv_len=1200)
        torch.cuda.synchronize()
        ref = paged_decode_attention_reference(q, k_cache, v_cache, block_table, seq_lens)  # row 1: 2,048 tokens
        torch.testing.assert_close(out.cpu().double(), ref, atol=TOL[torch.float32], rtol=0)


@pytest.mark.gpu
@pytest.mark.skipif(CUDA_SKIP_REASON is not None, reason=CUDA_SKIP_REASON or "")
def test_cuda_graph_replay_follows_the_chunk_tensor(gen):
    """Captured once with max_kv_len = capacity, the graph reads the chunk from its tensor at
    every replay: each value written before a replay (too short, odd, eager, longer than every
    row) gives the float64 reference's result."""
    q, k_cache, v_cache, block_table, seq_lens = skewed_capacity_batch("cuda", gen)
    chunk_t = torch.tensor([256], dtype=torch.int32, device="cuda")

    def run():
        return paged_attention_run(q, k_cache, v_cache, block_table, seq_lens, None, max_kv_len=2048,
                                   total_kv_len=2 * 2048, chunk_tokens=chunk_t)

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        run()  # warm-up outside the capture
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = run()
    ref = paged_decode_attention_reference(q, k_cache, v_cache, block_table, seq_lens)
    eager_chunk, _ = attention_split_plan(2648, 2048, 2, 8, 2, 128, device="cuda")
    for chunk in (16, 5, 1000, eager_chunk, 4096):
        chunk_t.fill_(chunk)
        out.fill_(float("nan"))
        graph.replay()
        torch.cuda.synchronize()
        torch.testing.assert_close(out.cpu().double(), ref, atol=TOL[torch.float32], rtol=0)
