"""siri.ops.paged_attention_run (the engine's sync-free attention): the same results as the
validating decode/prefill ops and the float64 reference, with the split plan taken from host
facts (exact or an upper bound, as a CUDA graph uses), and clear errors on the CPU."""
import pytest
import torch

from siri.ops import (paged_attention_run, paged_decode_attention_reference, paged_prefill_attention,
                      paged_prefill_attention_reference)
from test_paged_attention import TOL, make_paged


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
