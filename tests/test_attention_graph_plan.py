"""Split planning for CUDA-graph replays of paged_attention_run (planned for the batch being
replayed, not the graph's capacity) and the kernels' per-query split clamp (a kv_len above the
planned max_kv_len stays within the planned splits), on the host: siri.ops.paged_attention's
attention_split_plan / graph_max_splits (the planner the op runs) and the test probe
_siri_probes.attention_query_splits of the shared header's query_split (what the CUDA decode
and merge kernels compute for each query). The op's results under these plans are checked in test_paged_attention_run.py."""
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import _siri_probes as probes
from siri import _C
from siri.ops.paged_attention import attention_split_plan, graph_max_splits

H200_SMS = 132
SKEW = [32768] + [512] * 63  # the planner's skew case: one 32K row among 63 short ones
MIN_CHUNK = {"cuda": 256, "cpu": 512}


def round16(x):
    return -(-x // 16) * 16


def query_splits(kv_lens, capacity, chunk, max_splits, run_time):
    """[(keys read, chunk, splits)] per query, as the CUDA kernels split them."""
    return [tuple(s) for s in probes.attention_query_splits(kv_lens, capacity, chunk, max_splits, run_time)]


def longest_item(splits):
    """The most tokens one work item reads: the batch's critical path."""
    return max(min(keys, chunk) for keys, chunk, _ in splits)


# ---- the CUDA kernels clamp what they cannot check -----------------------------------------

def test_a_kv_len_above_max_kv_len_stays_within_the_planned_splits():
    """The op trusts kv_lens on CUDA. A plan for max_kv_len = 4,096 on 132 SMs, then a row of
    20,000 tokens (within a 32K block table): ceil(20000 / chunk) splits would pass max_splits,
    drop tokens and read another query's partials in the merge. The chunk grows instead."""
    chunk, max_splits = attention_split_plan(4096 * 8, 4096, 8, 12, 2, 128, device="cuda", units=H200_SMS)
    assert max_splits > 1 and math.ceil(20000 / chunk) > max_splits
    [(keys, used, splits)] = query_splits([20000], 32768, chunk, max_splits, run_time=False)
    assert keys == 20000 and splits <= max_splits and used * splits >= 20000
    assert used % 16 == 0


def test_an_unsplit_plan_never_splits():
    """max_splits == 1 has no partial buffers (a null partial_o): any kv_len takes one split,
    which writes the output directly."""
    for kv_len in (1, 100, 101, 5000, 10 ** 6):
        [(_, _, splits)] = query_splits([kv_len], 10 ** 6, 100, 1, run_time=False)
        assert splits == 1


def test_keys_never_pass_the_block_table_capacity():
    """A kv_len above max_pages * page_size would read past the query's block-table row."""
    assert query_splits([5000, 4096, -3, 0], 4096, 512, 8, run_time=False) == [
        (4096, 512, 8), (4096, 512, 8), (0, 512, 1), (0, 512, 1)]


@pytest.mark.parametrize("value, runs_as", [(-5, 16), (0, 16), (1, 16), (15, 16), (16, 16), (17, 32), (1000, 1008)])
def test_a_run_time_chunk_is_rounded_up_to_16(value, runs_as):
    [(_, used, splits)] = query_splits([10 ** 5], 10 ** 5, value, 10 ** 5, run_time=True)
    assert used == runs_as and splits == math.ceil(10 ** 5 / runs_as)


@settings(max_examples=400, deadline=None)
@given(kv_len=st.integers(-10, 300000), capacity=st.integers(1, 200000), chunk=st.integers(-100, 2 ** 31 - 1),
       max_splits=st.integers(1, 400), run_time=st.booleans())
def test_query_split_invariants(kv_len, capacity, chunk, max_splits, run_time):
    """Whatever the kernel reads: keys within [0, capacity], 1 to max_splits splits covering
    them exactly, and the given chunk kept whenever it fits."""
    if not run_time:
        chunk = max(chunk, 1)  # a planned chunk is >= 1
    [(keys, used, splits)] = query_splits([kv_len], capacity, chunk, max_splits, run_time)
    assert keys == min(max(kv_len, 0), capacity)
    assert 1 <= splits <= max_splits
    given_chunk = max(16, round16(chunk)) if run_time else chunk
    if math.ceil(keys / given_chunk) <= max_splits:
        assert used == given_chunk
    else:
        assert used == round16(math.ceil(keys / max_splits))
    if keys > 0:
        assert (splits - 1) * used < keys <= splits * used


# ---- graph replays plan for the batch, not the capacity -------------------------------------

@pytest.mark.parametrize("hq,hkv", [(12, 2), (28, 4)])  # Qwen2.5 1.5B / 7B
@pytest.mark.parametrize("capacity", [32768 + 512, 40960, 65536])
def test_a_graph_replay_of_the_skewed_batch_has_the_eager_critical_path(hq, hkv, capacity):
    """The graph is captured with max_kv_len = capacity for a 64-row bucket; before the replay
    the engine writes the eager plan's chunk. Every query then gets the eager chunk and split
    count (the eager splits fit graph_max_splits), so the longest work item, the critical path,
    is the eager one, where planning from the capacity (the old graph path) gave 2,048-token
    items: 2-4x longer."""
    rows = len(SKEW)
    chunk, splits = attention_split_plan(sum(SKEW), max(SKEW), rows, hq, hkv, 128, device="cuda", units=H200_SMS)
    assert splits > 1
    graph_splits = graph_max_splits(capacity, rows, hq, hkv, 128, device="cuda", units=H200_SMS)
    assert splits <= graph_splits
    eager = query_splits(SKEW, capacity, chunk, splits, run_time=False)
    replay = query_splits(SKEW, capacity, chunk, graph_splits, run_time=True)
    assert replay == eager
    assert all(used == chunk for _, used, _ in replay)
    old_chunk, _ = attention_split_plan(rows * capacity, capacity, rows, hq, hkv, 128, device="cuda",
                                        units=H200_SMS)
    old = query_splits(SKEW, capacity, old_chunk, math.ceil(capacity / old_chunk), run_time=False)
    assert longest_item(old) >= 2 * longest_item(eager)


@settings(max_examples=300, deadline=None)
@given(kv_lens=st.lists(st.integers(1, 70000), min_size=1, max_size=300), slack=st.integers(0, 50000),
       hkv=st.sampled_from([1, 2, 4, 8]), group=st.integers(1, 16), d=st.sampled_from([64, 128, 256]),
       device=st.sampled_from(["cuda", "cpu"]), units=st.integers(1, 200), prefill=st.booleans())
def test_every_eager_plan_fits_the_graph_buffers(kv_lens, slack, hkv, group, d, device, units, prefill):
    """For any batch of a bucket's rows within the capacity, on any device size: the eager plan's
    max_splits <= graph_max_splits, so a replay given the eager chunk splits each query as eager;
    and the graph's partial buffers stay within the bound the memory estimate counts."""
    rows, hq, capacity = len(kv_lens), hkv * group, max(kv_lens) + slack
    chunk, splits = attention_split_plan(sum(kv_lens), max(kv_lens), rows, hq, hkv, d, device=device, units=units,
                                         prefill=prefill)
    graph_splits = graph_max_splits(capacity, rows, hq, hkv, d, device=device, units=units, prefill=prefill)
    assert splits <= graph_splits <= max(1, math.ceil(capacity / MIN_CHUNK[device]))
    assert graph_splits == 1 or rows * graph_splits * hq * (d + 1) * 4 <= _C.ATTENTION_PARTIAL_BYTES
    replay = query_splits(kv_lens, capacity, chunk, graph_splits, run_time=True)
    eager = query_splits(kv_lens, capacity, chunk, splits, run_time=False)
    # An unsplit plan's chunk is the longest kv_len, which the run-time read rounds up to 16:
    # the same single split per query. A splitting plan's chunk is already a multiple of 16.
    assert [(keys, n) for keys, _, n in replay] == [(keys, n) for keys, _, n in eager]
    if splits > 1:
        assert replay == eager


@pytest.mark.parametrize("device, units", [("cuda", H200_SMS), ("cuda", 16), ("cpu", 2), ("cpu", 64)])
def test_the_plan_is_the_one_the_op_makes(device, units):
    """attention_split_plan runs the op's planner: the same plan as the planner probe."""
    for kv_lens in (SKEW, [1024] * 264, [200, 7, 255], [16384] * 256):
        probe = probes.attention_plan(kv_lens, 12, 2, 128, device, units, False)
        plan = attention_split_plan(sum(kv_lens), max(kv_lens), len(kv_lens), 12, 2, 128, device=device, units=units)
        assert plan == (probe["chunk_tokens"], probe["max_splits"])


def test_units_default_to_the_cpu_thread_count():
    units = torch.get_num_threads()
    assert (attention_split_plan(sum(SKEW), 32768, 64, 12, 2, 128, device="cpu")
            == attention_split_plan(sum(SKEW), 32768, 64, 12, 2, 128, device=torch.device("cpu"), units=units))
    assert (graph_max_splits(32768, 64, 12, 2, 128, device="cpu")
            == graph_max_splits(32768, 64, 12, 2, 128, device="cpu", units=units))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device visible")
def test_default_units_on_cuda():
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    assert (attention_split_plan(sum(SKEW), 32768, 64, 12, 2, 128, device="cuda:0")
            == attention_split_plan(sum(SKEW), 32768, 64, 12, 2, 128, device="cuda", units=sms))
    assert graph_max_splits(40960, 64, 12, 2, 128, device="cuda") == graph_max_splits(
        40960, 64, 12, 2, 128, device="cuda", units=sms)


def test_an_empty_batch_is_unsplit():
    assert attention_split_plan(0, 1, 0, 12, 2, 128, device="cpu", units=2) == (1, 1)
    assert graph_max_splits(4096, 0, 12, 2, 128, device="cpu", units=2) == 1


@pytest.mark.parametrize("call, match", [
    (lambda: attention_split_plan(10, 10, 1, 12, 2, 128, device="meta"), "device must be a CPU or CUDA device"),
    (lambda: attention_split_plan(10, 10, 1, 12, 2, 128, device="cpu", units=0), "units must be >= 1, got 0"),
    (lambda: attention_split_plan(10, 10, 1, 12, 5, 128, device="cpu"), "num_q_heads must be a positive multiple"),
    (lambda: attention_split_plan(10, 0, 1, 12, 2, 128, device="cpu"), "max_kv_len must be >= 1, got 0"),
    (lambda: attention_split_plan(-1, 10, 1, 12, 2, 128, device="cpu"), "total_kv_len must be >= 0, got -1"),
    (lambda: attention_split_plan(10, 10, -1, 12, 2, 128, device="cpu"), "num_queries must be >= 0, got -1"),
    (lambda: attention_split_plan(10, 10, 1, 12, 0, 128, device="cpu"), "num_kv_heads must be >= 1, got 0"),
    (lambda: graph_max_splits(0, 4, 12, 2, 128, device="cpu"), "capacity must be >= 1, got 0"),
    (lambda: graph_max_splits(10, 4, 12, 2, 0, device="cpu"), "head_dim must be >= 1, got 0"),
])
def test_bad_arguments_are_clear_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is visible")
def test_cuda_without_a_device_needs_units():
    with pytest.raises(ValueError, match="units must be given"):
        graph_max_splits(4096, 4, 12, 2, 128, device="cuda")
