"""The query-tiled prefill kernels (csrc/cpu/paged_prefill.cpp, csrc/cuda/paged_prefill.cu)
behind paged_prefill_attention and paged_attention_run, against float64 references on fresh
random inputs: run lengths around the query tile, GQA groups, head dims, page sizes, cached
prefixes, shared prompt pages, KV splits, query layouts that are not runs, huge logits; and
that the tiled path is the one taken (the ops' query_tiled=False selects the per-query kernel)."""
import pytest
import torch

import siri
from siri.ops import (paged_attention_run, paged_decode_attention_reference, paged_prefill_attention,
                      paged_prefill_attention_reference)
from test_paged_attention import TOL, make_paged, poison


def query_tile(device, group, d):
    """Queries per tile: 64 // group rows' worth on the CPU (kTargetRows in
    csrc/cpu/paged_prefill.cpp), 64 (32 for head_dim 256) on CUDA (kRows in paged_prefill.cu)."""
    if device.type == "cpu":
        return max(1, 64 // group)
    return 64 if d <= 128 else 32


def prefill_case(cached, new, page_size, hkv, group, d, dtype, device, gen):
    """Sequence b holds cached[b] + new[b] tokens in shuffled pages; q has its new[b] tokens."""
    lens = [c + n for c, n in zip(cached, new)]
    k_cache, v_cache, block_table, seq_lens = make_paged(lens, page_size, hkv, d, dtype, device, gen)
    q = torch.randn(sum(new), hkv * group, d, generator=gen).to(device, dtype)
    cu_seqlens = torch.tensor([0] + torch.tensor(new).cumsum(0).tolist(), dtype=torch.int32, device=device)
    return q, k_cache, v_cache, block_table, seq_lens, cu_seqlens


def check_prefill(q, k_cache, v_cache, block_table, seq_lens, cu_seqlens, dtype, scale=None, query_tiled=True):
    poison(q)
    out = paged_prefill_attention(q, k_cache, v_cache, block_table, seq_lens, cu_seqlens, scale=scale,
                                  query_tiled=query_tiled)
    assert out.shape == q.shape and out.dtype == dtype
    assert torch.isfinite(out).all(), "some output elements were not written"
    ref = paged_prefill_attention_reference(q, k_cache, v_cache, block_table, seq_lens, cu_seqlens, scale=scale)
    torch.testing.assert_close(out.cpu().double(), ref, atol=TOL[dtype], rtol=0)
    return out


def run_inputs(cached, new, device):
    """paged_attention_run's kv_lens / query_seq for a prefill of new[b] tokens after cached[b]."""
    kv_lens = torch.cat([torch.arange(c + 1, c + n + 1) for c, n in zip(cached, new)]).int()
    query_seq = torch.repeat_interleave(torch.arange(len(new)), torch.tensor(new)).int()
    return kv_lens.to(device), query_seq.to(device)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("group", [1, 2, 4, 7])
def test_run_lengths_around_the_query_tile(device, gen, dtype, group):
    # One sequence per run length: a single query, two, a tile less one, a tile, a tile plus
    # one, two tiles and a partial one; each from position 0 (the first query sees one key).
    tile = query_tile(device, group, 128)
    new = sorted({1, 2, max(1, tile - 1), tile, tile + 1, 2 * tile + 3})
    check_prefill(*prefill_case([0] * len(new), new, 16, 2, group, 128, dtype, device, gen), dtype)


@pytest.mark.parametrize("d", [64, 80, 96, 128, 256])
@pytest.mark.parametrize("page_size", [1, 16])
def test_head_dims_and_page_sizes_with_cached_prefixes(device, gen, d, page_size):
    # Cached prefixes put the first query's kv_len past 1 and off the 64-key tile grid.
    cached, new = [0, 37, 64, 5], [70, 65, 5, 130]
    check_prefill(*prefill_case(cached, new, page_size, 2, 4, d, torch.float32, device, gen), torch.float32)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_mixed_lengths_and_shared_prompt_pages(device, gen, dtype):
    # Sequence 0 prefills a 100-token prompt; 1 and 2 are samples of it that share its first
    # six pages (96 tokens) and prefill the rest of their own; 3 keeps a 250-token prefix.
    cached, new = [0, 96, 96, 250], [100, 40, 7, 77]
    q, k_cache, v_cache, block_table, seq_lens, cu = prefill_case(cached, new, 16, 2, 6, 64, dtype, device, gen)
    block_table[1:3, :6] = block_table[0, :6]
    check_prefill(q, k_cache, v_cache, block_table, seq_lens, cu, dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("cached", [510, 2000])
def test_short_tail_after_a_long_prefix_is_split(device, gen, dtype, cached):
    # Three new tokens after a long prefix: too few queries to fill the workers, so the
    # planner splits their keys (in chunks of 512 tokens or more) and the tiles write (o, lse)
    # partials that are merged. After 510 cached tokens the queries see 511, 512 and 513 keys:
    # only the last has a second split, which the others must leave alone.
    q, k_cache, v_cache, block_table, seq_lens, cu = prefill_case([cached], [3], 16, 2, 4, 128, dtype, device, gen)
    check_prefill(q, k_cache, v_cache, block_table, seq_lens, cu, dtype)
    kv_lens, query_seq = run_inputs([cached], [3], device)
    out = paged_attention_run(q, k_cache, v_cache, block_table, kv_lens, query_seq, max_kv_len=cached + 3,
                              total_kv_len=int(kv_lens.sum()))
    ref = paged_prefill_attention_reference(q, k_cache, v_cache, block_table, seq_lens, cu)
    torch.testing.assert_close(out.cpu().double(), ref, atol=TOL[dtype], rtol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("layout", ["packed", "shuffled", "reversed", "gaps"])
def test_query_layouts_through_attention_run(device, gen, dtype, layout):
    # The engine packs runs (packed); any other order of the same queries, or runs with a
    # kv_len missing, must give each query its own attention all the same.
    cached, new = [0, 30, 0], [90, 70, 41]
    lens = [c + n for c, n in zip(cached, new)]
    k_cache, v_cache, block_table, _ = make_paged(lens, 16, 2, 128, dtype, device, gen)
    kv_lens, query_seq = run_inputs(cached, new, device)
    order = {"packed": torch.arange(len(kv_lens)),
             "shuffled": torch.randperm(len(kv_lens), generator=gen),
             "reversed": torch.arange(len(kv_lens) - 1, -1, -1),
             "gaps": torch.arange(len(kv_lens))[torch.arange(len(kv_lens)) % 5 != 3]}[layout].to(device)
    kv_lens, query_seq = kv_lens[order].contiguous(), query_seq[order].contiguous()
    q = torch.randn(len(kv_lens), 2 * 7, 128, generator=gen).to(device, dtype)
    out = paged_attention_run(q, k_cache, v_cache, block_table, kv_lens, query_seq,
                              max_kv_len=max(lens), total_kv_len=int(kv_lens.sum()))
    # One decode-style row per query: its sequence's block-table row, its kv_len.
    ref = paged_decode_attention_reference(q, k_cache, v_cache, block_table[query_seq.long()], kv_lens)
    torch.testing.assert_close(out.cpu().double(), ref, atol=TOL[dtype], rtol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_huge_logits_with_exact_ties(device, gen, dtype):
    # q and k are small integers times 2^10, so every logit (about 1e6 apart) is exact in fp32
    # and bf16 inputs, and ties are exact: the softmax is one-hot or an exact average over the
    # tied keys, with nothing to overflow or to lose to rounding.
    cached, new = [0, 100], [150, 60]
    q, k_cache, v_cache, block_table, seq_lens, cu = prefill_case(cached, new, 16, 2, 4, 64, dtype, device, gen)
    q = (torch.randint(-3, 4, q.shape, generator=gen) * 1024.0).to(device, dtype)
    k_cache = (torch.randint(-3, 4, k_cache.shape, generator=gen) * 1024.0).to(device, dtype)
    check_prefill(q, k_cache, v_cache, block_table, seq_lens, cu, dtype, scale=1.0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_large_magnitude_values(device, gen, dtype):
    # V near 1e30: the weighted sums stay finite and relatively exact.
    q, k_cache, v_cache, block_table, seq_lens, cu = prefill_case([20], [130], 16, 2, 2, 128, dtype, device, gen)
    v_cache = (v_cache.float() * 1e30).to(dtype)
    out = paged_prefill_attention(q, k_cache, v_cache, block_table, seq_lens, cu)
    assert torch.isfinite(out).all()
    ref = paged_prefill_attention_reference(q, k_cache, v_cache, block_table, seq_lens, cu)
    torch.testing.assert_close(out.cpu().double() / 1e30, ref / 1e30, atol=TOL[dtype], rtol=0)


@pytest.mark.skipif(not (siri.has_cuda_kernels() and torch.cuda.is_available()),
                    reason="float16 kernels are CUDA-only (needs a CUDA build and a visible device)")
def test_float16_cuda(gen):
    device = torch.device("cuda")
    cached, new = [0, 30], [130, 64]
    check_prefill(*prefill_case(cached, new, 16, 2, 6, 128, torch.float16, device, gen), torch.float16)


def test_the_tiled_path_is_taken(device, gen):
    """query_tiled=False selects the per-query kernel: both are right, and they sum in
    different orders, so identical fp32 outputs would mean one path ran twice."""
    cached, new = [0, 40], [200, 90]
    case = prefill_case(cached, new, 16, 2, 6, 128, torch.float32, device, gen)
    tiled = check_prefill(*case, torch.float32)
    per_query = check_prefill(*case, torch.float32, query_tiled=False)
    assert not torch.equal(tiled, per_query), "query_tiled=False changed nothing: the tiled kernel did not run"
    torch.testing.assert_close(check_prefill(*case, torch.float32, query_tiled=True), tiled, atol=0, rtol=0)
    # paged_attention_run takes the same choice, per call.
    q, k_cache, v_cache, block_table, seq_lens, _ = case
    kv_lens, query_seq = run_inputs(cached, new, device)
    facts = dict(max_kv_len=int(kv_lens.max()), total_kv_len=int(kv_lens.sum()))
    run_tiled = paged_attention_run(q, k_cache, v_cache, block_table, kv_lens, query_seq, **facts)
    run_per_query = paged_attention_run(q, k_cache, v_cache, block_table, kv_lens, query_seq, **facts,
                                        query_tiled=False)
    torch.testing.assert_close(run_tiled, tiled, atol=0, rtol=0)
    torch.testing.assert_close(run_per_query, per_query, atol=0, rtol=0)
