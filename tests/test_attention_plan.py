"""The paged-attention split planner (csrc/include/siri/paged_attention.h), run on the host
through the test probe _siri_probes.attention_plan for any device size: the plan the CUDA
binding makes on an H200 (132 SMs) is checked here without a GPU. The kernels' results under
these plans are checked against float64 references in test_paged_attention.py."""
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import _siri_probes as probes
from siri.engine.cuda_graphs import ATTENTION_PARTIAL_BYTES

H200_SMS = 132
CUDA_MAX_CHUNK = 2048  # cuda_split_limits: the longest chunk one block serves


def plan(kv_lens, hq, hkv, d=128, device="cuda", units=H200_SMS, prefill=False):
    return probes.attention_plan(kv_lens, hq, hkv, d, device, units, prefill)


def average_work(kv_lens, hq, hkv, units=H200_SMS):
    """Tokens per parallel unit (2 blocks per SM) if the batch's work were spread evenly."""
    group = hq // hkv
    per_block = plan([1], hq, hkv)["heads_per_block"]
    blocks_per_query = hkv * math.ceil(group / per_block)
    return sum(kv_lens) * blocks_per_query / (2 * units)


@pytest.mark.parametrize("hq,hkv", [(12, 2), (28, 4), (32, 8)])  # Qwen2.5 1.5B / 7B, Llama-3 8B
def test_one_long_sequence_among_short_ones_is_split(hq, hkv):
    """The skewed case: one 32K-token sequence among 63 short ones. The long one is split into
    chunks of about a unit's average work, so no block runs 32K tokens serially while the rest
    of the GPU idles; with 8 KV heads (64 x 8 = 512 blocks > 2 x 132) the old planner did not
    split at all."""
    kv_lens = [32768] + [512] * 63
    p = plan(kv_lens, hq, hkv)
    assert p["max_splits"] >= 16
    assert p["chunk_tokens"] <= CUDA_MAX_CHUNK
    assert p["longest_item_tokens"] <= max(256, average_work(kv_lens, hq, hkv)) + 16
    assert p["max_splits"] == math.ceil(32768 / p["chunk_tokens"])


def test_a_batch_that_fills_the_gpu_evenly_is_not_split():
    kv_lens = [1024] * 264  # 264 queries x 2 KV heads: 4 blocks per SM, equal work
    assert plan(kv_lens, 12, 2)["max_splits"] == 1


def test_short_batches_are_not_split():
    assert plan([200, 7, 255], 12, 2)["max_splits"] == 1  # below the 256-token minimum chunk


def test_long_contexts_are_split_to_bounded_chunks_even_when_the_batch_is_large():
    """256 x 16K: enough blocks without splits, but capped chunks keep any one block's serial
    work (and the wave tail) at 2048 tokens; the partials cost 1/300 of the K/V reads."""
    p = plan([16384] * 256, 12, 2)
    assert p["chunk_tokens"] == CUDA_MAX_CHUNK and p["max_splits"] == 8


@pytest.mark.parametrize("hq,hkv,d,splits", [(12, 2, 128, True), (28, 4, 128, True), (64, 8, 256, False)])
def test_partial_buffers_stay_within_their_bound(hq, hkv, d, splits):
    """1,024 queries with one 32K sequence: a per-unit chunk would give ~70 splits x 1,024
    dense partial rows (GBs); the chunk grows until the buffers fit the bound, and where even
    two splits do not fit (64 heads x 256 dims x 1,024 rows = 67 MB per split) none is made."""
    kv_lens = [32768] + [1] * 1023
    p = plan(kv_lens, hq, hkv, d)
    partial_bytes = len(kv_lens) * p["max_splits"] * hq * (d + 1) * 4
    assert (p["max_splits"] > 1) == splits
    if splits:
        assert partial_bytes <= p["max_partial_bytes"]


def test_cuda_graph_plan_from_capacity_is_bounded():
    """The engine's graphs plan for the block table's full width (every row at capacity)."""
    for bucket in (1, 8, 64, 256):
        p = plan([16384] * bucket, 12, 2)
        assert p["chunk_tokens"] <= CUDA_MAX_CHUNK
        assert bucket * p["max_splits"] * 12 * 129 * 4 <= p["max_partial_bytes"]


def test_the_python_memory_estimate_uses_the_planner_bound():
    assert plan([1], 12, 2)["max_partial_bytes"] == ATTENTION_PARTIAL_BYTES


@pytest.mark.parametrize("group,expected", [(1, 1), (2, 2), (3, 4), (4, 4), (5, 8), (7, 8), (8, 8), (12, 8)])
def test_cuda_heads_per_block_follows_the_group_size(group, expected):
    assert plan([1], group, 1)["heads_per_block"] == expected


def test_cpu_plan_splits_the_long_sequence_for_two_threads():
    p = plan([32768] + [512] * 63, 12, 2, device="cpu", units=2)
    assert p["max_splits"] > 1 and p["chunk_tokens"] >= 512


def test_bad_probe_arguments_are_clear_errors():
    with pytest.raises(ValueError, match="device must be"):
        plan([1], 12, 2, device="tpu")
    with pytest.raises(ValueError, match="multiple of num_kv_heads"):
        plan([1], 12, 5)
    with pytest.raises(ValueError, match="kv_lens must be >= 1"):
        plan([0], 12, 2)


@settings(max_examples=300, deadline=None)
@given(kv_lens=st.lists(st.integers(1, 70000), min_size=1, max_size=300),
       hkv=st.sampled_from([1, 2, 4, 8]), group=st.integers(1, 16), d=st.sampled_from([64, 128, 256]),
       device=st.sampled_from(["cuda", "cpu"]), units=st.integers(1, 200))
def test_plan_invariants(kv_lens, hkv, group, d, device, units):
    """Every plan covers the longest query with max_splits chunks, splits only into chunks
    that are multiples of 16 and at least the minimum, and keeps split partials in bound."""
    p = plan(kv_lens, hkv * group, hkv, d, device, units)
    longest, chunk, splits = max(kv_lens), p["chunk_tokens"], p["max_splits"]
    assert splits == math.ceil(longest / chunk)
    if splits == 1:
        assert chunk == longest
    else:
        assert chunk % 16 == 0 and chunk >= (256 if device == "cuda" else 512)
        assert len(kv_lens) * splits * hkv * group * (d + 1) * 4 <= p["max_partial_bytes"]


def test_cuda_prefill_is_split_only_when_it_has_too_few_queries():
    """A 2,500-token prompt (one query per token) stays unsplit, so the tiled prefill kernel
    serves it; a 3-token tail after a 30K prefix has too few queries and is split."""
    prompt = list(range(1, 2501))
    assert plan(prompt, 12, 2, device="cuda", prefill=True)["max_splits"] == 1
    assert plan(prompt, 12, 2, device="cuda")["max_splits"] > 1  # the decode bound would split it
    assert plan([30000, 30001, 30002], 12, 2, device="cuda", prefill=True)["max_splits"] > 1
