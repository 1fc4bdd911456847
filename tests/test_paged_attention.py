"""siri.ops.paged_decode_attention, paged_prefill_attention and append_kv against float64
references, on every backend: shuffled page tables, mixed lengths, GQA, every head_dim."""
import math

import pytest
import torch
import torch.nn.functional as F

import siri
from siri.ops import (append_kv, paged_decode_attention, paged_decode_attention_reference,
                      paged_prefill_attention, paged_prefill_attention_reference)

TOL = {torch.float32: 1e-4, torch.bfloat16: 2e-2, torch.float16: 2e-3}
UNUSED = 1 << 30  # block-table entries past a sequence's pages: must be ignored


def make_paged(seq_lens, page_size, hkv, d, dtype, device, gen, spare_pages=3):
    """Random caches holding the sequences' tokens in shuffled pages, plus spare pages, and a
    block table whose unused entries are out of range."""
    pages_per_seq = [math.ceil(n / page_size) for n in seq_lens]
    num_pages = sum(pages_per_seq) + spare_pages
    k_cache = torch.randn(num_pages, page_size, hkv, d, generator=gen).to(device, dtype)
    v_cache = torch.randn(num_pages, page_size, hkv, d, generator=gen).to(device, dtype)
    perm = torch.randperm(num_pages, generator=gen).int()
    block_table = torch.full((len(seq_lens), max(pages_per_seq) + 1), UNUSED, dtype=torch.int32)
    start = 0
    for b, n in enumerate(pages_per_seq):
        block_table[b, :n] = perm[start:start + n]
        start += n
    return k_cache, v_cache, block_table.to(device), torch.tensor(seq_lens, dtype=torch.int32, device=device)


def poison(like):
    """Frees a NaN-filled block of the output's size right before the op allocates its output,
    so memory the kernel fails to write is likely to hold NaN (allocators reuse the block)."""
    torch.full_like(like, float("nan"))


def check_decode(seq_lens, group, d, dtype, device, gen, page_size=16, hkv=2, scale=None):
    k_cache, v_cache, block_table, lens = make_paged(seq_lens, page_size, hkv, d, dtype, device, gen)
    q = torch.randn(len(seq_lens), hkv * group, d, generator=gen).to(device, dtype)
    poison(q)
    out = paged_decode_attention(q, k_cache, v_cache, block_table, lens, scale=scale)
    assert out.shape == q.shape and out.dtype == dtype and out.device == q.device
    assert torch.isfinite(out).all(), "some output elements were not written"
    ref = paged_decode_attention_reference(q, k_cache, v_cache, block_table, lens, scale=scale)
    torch.testing.assert_close(out.cpu().double(), ref, atol=TOL[dtype], rtol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
# CUDA head blocks of 1, 2, 4 (3: one unused head), 8 (7: one unused; 12: a block of 8 and one
# of 4); 12 is also the CPU kernel's second block of 8 lanes
@pytest.mark.parametrize("group", [1, 2, 3, 4, 7, 8, 12])
def test_decode_gqa_groups_mixed_lengths(device, gen, dtype, group):
    batch = int(torch.randint(1, 17, (), generator=gen))
    seq_lens = torch.randint(1, 700, (batch,), generator=gen).tolist()
    check_decode(seq_lens, group, 128, dtype, device, gen)


@pytest.mark.parametrize("d", [64, 80, 96, 128, 256])
@pytest.mark.parametrize("page_size", [1, 16, 64])
def test_decode_head_dims_and_page_sizes(device, gen, d, page_size):
    seq_lens = [1, page_size, page_size + 1] + torch.randint(1, 300, (3,), generator=gen).tolist()
    check_decode(seq_lens, 4, d, torch.float32, device, gen, page_size=page_size)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_decode_long_and_short_sequences_split(device, gen, dtype):
    # Few sequences and long contexts: the planner splits them and merges (o, lse) partials.
    check_decode([8192, 1, 2999, 17], 8, 128, dtype, device, gen, page_size=64, hkv=1)
    check_decode([8192], 7, 64, dtype, device, gen, page_size=16, hkv=2)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_decode_skewed_batch_splits_the_long_sequence(device, gen, dtype):
    """One long sequence among many short ones: the planner splits it by total work (the old
    planner did not once queries x KV heads filled the device), the partials merge exactly."""
    short = torch.randint(1, 200, (47,), generator=gen).tolist()
    check_decode([6000] + short, 6, 128, dtype, device, gen, page_size=16, hkv=2)


def test_decode_large_batch(device, gen):
    seq_lens = torch.randint(1, 65, (256,), generator=gen).tolist()
    check_decode(seq_lens, 7, 64, torch.float32, device, gen, page_size=16, hkv=2)


def test_decode_group_larger_than_a_cuda_block(device, gen):
    check_decode([5, 300], 16, 64, torch.float32, device, gen, hkv=1)


def test_empty_batches(device):
    k_cache = torch.randn(4, 16, 2, 64, device=device)
    none = torch.zeros(0, dtype=torch.int32, device=device)
    q = torch.randn(0, 4, 64, device=device)
    assert paged_decode_attention(q, k_cache, k_cache, none.view(0, 3), none).shape == (0, 4, 64)
    assert paged_prefill_attention(q, k_cache, k_cache, none.view(0, 3), none,
                                   torch.zeros(1, dtype=torch.int32, device=device)).shape == (0, 4, 64)


def test_decode_scale(device, gen):
    check_decode([33, 90], 2, 64, torch.float32, device, gen, scale=0.3)


@pytest.mark.gpu
@pytest.mark.skipif(not (siri.has_cuda_kernels() and torch.cuda.is_available()),
                    reason="float16 kernels are CUDA-only (needs a CUDA build and a visible device)")
def test_decode_float16_cuda(gen):
    check_decode([1, 100, 1000], 4, 128, torch.float16, torch.device("cuda"), gen)


def test_prefill_matches_reference_with_shared_and_kept_prefixes(device, gen):
    hkv, group, d, page_size = 2, 4, 64, 16
    # seq 0: a 40-token prompt prefilled whole; seq 1 shares seq 0's pages and adds 5 tokens
    # after them (a sample of the same prompt); seq 2 recomputes its last 3 of 70 tokens; seq 3
    # has nothing new.
    k_cache, v_cache, block_table, _ = make_paged([40, 45, 70, 9], page_size, hkv, d, torch.float32,
                                                  device, gen)
    block_table[1, :2] = block_table[0, :2]
    seq_lens = torch.tensor([40, 45, 70, 9], dtype=torch.int32, device=device)
    new = [40, 5, 3, 0]
    cu_seqlens = torch.tensor([0] + torch.tensor(new).cumsum(0).tolist(), dtype=torch.int32, device=device)
    q = torch.randn(sum(new), hkv * group, d, generator=gen).to(device)
    poison(q)
    out = paged_prefill_attention(q, k_cache, v_cache, block_table, seq_lens, cu_seqlens)
    assert torch.isfinite(out).all()
    ref = paged_prefill_attention_reference(q, k_cache, v_cache, block_table, seq_lens, cu_seqlens)
    torch.testing.assert_close(out.cpu().double(), ref, atol=1e-4, rtol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_prefill_after_append_equals_causal_sdpa(device, gen, dtype):
    """The engine's prefill: append the prompt's K/V to its pages, then attend over them."""
    hkv, group, d, page_size, n = 2, 7, 80, 16, 50
    k_cache = torch.zeros(8, page_size, hkv, d, dtype=dtype, device=device)
    v_cache = torch.zeros_like(k_cache)
    pages = torch.tensor([5, 2, 7, 0], dtype=torch.int32)
    t = torch.arange(n)
    slots = (pages[t // page_size].long() * page_size + t % page_size).to(device)
    q, k, v = (torch.randn(n, h, d, generator=gen).to(device, dtype) for h in (hkv * group, hkv, hkv))
    append_kv(k, v, k_cache, v_cache, slots)
    out = paged_prefill_attention(q, k_cache, v_cache, pages[None].to(device),
                                  torch.tensor([n], dtype=torch.int32, device=device),
                                  torch.tensor([0, n], dtype=torch.int32, device=device))
    ref = F.scaled_dot_product_attention(*(x.double().cpu().transpose(0, 1) for x in (q, k, v)),
                                         is_causal=True, enable_gqa=True).transpose(0, 1)
    torch.testing.assert_close(out.cpu().double(), ref, atol=TOL[dtype], rtol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_append_kv_writes_exactly_the_addressed_slots(device, gen, dtype):
    num_pages, page_size, hkv, d, tokens = 6, 16, 2, 96, 40
    k_cache = torch.randn(num_pages, page_size, hkv, d, generator=gen).to(device, dtype)
    v_cache = torch.randn(num_pages, page_size, hkv, d, generator=gen).to(device, dtype)
    k_before, v_before = k_cache.clone(), v_cache.clone()
    slots = torch.randperm(num_pages * page_size, generator=gen)[:tokens]
    slots[::7] = -1
    k = torch.randn(tokens, hkv, d, generator=gen).to(device, dtype)
    v = torch.randn(tokens, hkv, d, generator=gen).to(device, dtype)
    append_kv(k, v, k_cache, v_cache, slots.to(device))
    keep = slots >= 0
    expected_k, expected_v = k_before.view(-1, hkv, d).clone(), v_before.view(-1, hkv, d).clone()
    expected_k[slots[keep]] = k[keep.to(device)]
    expected_v[slots[keep]] = v[keep.to(device)]
    assert torch.equal(k_cache.view(-1, hkv, d), expected_k)
    assert torch.equal(v_cache.view(-1, hkv, d), expected_v)
    assert not torch.equal(k_cache, k_before)


def test_append_kv_empty_and_all_skipped(device, gen):
    k_cache = torch.randn(2, 4, 1, 64, generator=gen).to(device)
    v_cache = torch.randn(2, 4, 1, 64, generator=gen).to(device)
    before = k_cache.clone()
    append_kv(k_cache[0], v_cache[0], k_cache, v_cache, torch.full((4,), -1, device=device))
    append_kv(k_cache[0, :0], v_cache[0, :0], k_cache, v_cache, torch.empty(0, dtype=torch.long, device=device))
    assert torch.equal(k_cache, before)


def _decode_args(device, **over):
    gen = torch.Generator().manual_seed(0)
    k_cache, v_cache, block_table, lens = make_paged([20, 5], 16, 2, 64, torch.float32, device, gen)
    args = dict(q=torch.randn(2, 4, 64, generator=gen).to(device), k_cache=k_cache, v_cache=v_cache,
                block_table=block_table, seq_lens=lens)
    args.update({k: (v(args) if callable(v) else v) for k, v in over.items()})
    return args


def _with(t, index, value):
    t = t.clone()
    t[index] = value
    return t


BAD_DECODE = [
    (dict(block_table=lambda a: _with(a["block_table"], (0, 1), a["k_cache"].shape[0])), ValueError, "block id outside"),
    (dict(block_table=lambda a: _with(a["block_table"], (1, 0), -1)), ValueError, "block id outside"),
    (dict(seq_lens=lambda a: _with(a["seq_lens"], 0, 16 * 3 + 1)), ValueError, "seq_lens must be <="),
    (dict(seq_lens=lambda a: _with(a["seq_lens"], 1, 0)), ValueError, "seq_lens must be >= 1"),
    (dict(q=lambda a: a["q"][:, :3].contiguous()), ValueError, "multiple of k_cache's number of KV heads"),
    (dict(q=lambda a: a["q"][:1]), ValueError, "q.shape\\[0\\] must equal block_table.shape\\[0\\]"),
    (dict(q=lambda a: a["q"][..., :32].contiguous()), ValueError, "q.shape\\[2\\] must equal head_dim"),
    (dict(q=lambda a: a["q"].transpose(0, 1).contiguous().transpose(0, 1)), ValueError, "q must be contiguous"),
    (dict(q=lambda a: a["q"].double()), TypeError, "q must have the dtype of k_cache"),
    (dict(v_cache=lambda a: a["v_cache"].bfloat16()), TypeError, "v_cache must have the dtype of k_cache"),
    (dict(v_cache=lambda a: a["v_cache"][:-1]), ValueError, "v_cache must have the shape of k_cache"),
    (dict(k_cache=lambda a: a["k_cache"][..., :48].contiguous(), v_cache=lambda a: a["v_cache"][..., :48].contiguous(),
          q=lambda a: a["q"][..., :48].contiguous()), ValueError, "head_dim .* must be one of"),
    (dict(k_cache=lambda a: a["k_cache"].double(), v_cache=lambda a: a["v_cache"].double(),
          q=lambda a: a["q"].double()), TypeError, "k_cache must have dtype float32 or bfloat16"),
    (dict(block_table=lambda a: a["block_table"].long()), TypeError, "block_table must have dtype Int"),
    (dict(seq_lens=lambda a: a["seq_lens"][:1]), ValueError, "seq_lens.shape\\[0\\] must equal block_table.shape\\[0\\]"),
    (dict(k_cache=lambda a: a["k_cache"][0]), ValueError, "k_cache must be 4-D"),
]


@pytest.mark.parametrize("over, exc, match", BAD_DECODE)
def test_decode_bad_input_raises(device, over, exc, match):
    with pytest.raises(exc, match=match):
        paged_decode_attention(**_decode_args(device, **over))


def test_half_on_cpu_is_a_type_error():
    args = _decode_args("cpu", **{k: (lambda a, k=k: a[k].half()) for k in ("q", "k_cache", "v_cache")})
    with pytest.raises(TypeError, match="float32 or bfloat16 on cpu"):
        paged_decode_attention(**args)


def test_unused_block_table_entries_are_ignored(device):
    args = _decode_args(device)
    assert args["block_table"][1, 1].item() == UNUSED  # seq 1 has 5 tokens: one page
    paged_decode_attention(**args)


def test_prefill_bad_input_raises(device):
    args = _decode_args(device)
    q = torch.randn(6, 4, 64, device=device)
    run = lambda cu, lens=args["seq_lens"]: paged_prefill_attention(  # noqa: E731
        q, args["k_cache"], args["v_cache"], args["block_table"], lens,
        torch.tensor(cu, dtype=torch.int32, device=device))
    with pytest.raises(ValueError, match="must start at 0 and end at q.shape\\[0\\]"):
        run([0, 1, 5])
    with pytest.raises(ValueError, match="non-decreasing"):
        run([0, 7, 6])
    with pytest.raises(ValueError, match="cu_seqlens.shape\\[0\\] must equal"):
        run([0, 6])
    with pytest.raises(ValueError, match="seq_lens must be >= the number of new tokens"):
        run([0, 0, 6])  # seq 1 holds 5 tokens, 6 cannot be new


@pytest.mark.parametrize("slots, exc, match", [
    ([0, 1, 2 * 16 * 8], ValueError, "slot_mapping entries must be -1"),
    ([0, -2, 1], ValueError, "slot_mapping entries must be -1"),
    (torch.tensor([0, 1, 2], dtype=torch.int32), TypeError, "slot_mapping must have dtype Long"),
    ([0, 1], ValueError, "slot_mapping.shape\\[0\\] must equal k.shape\\[0\\]"),
])
def test_append_kv_bad_slots_raise(device, slots, exc, match):
    k_cache = torch.zeros(16, 8, 2, 64, device=device)
    v_cache = torch.zeros_like(k_cache)
    k = torch.zeros(3, 2, 64, device=device)
    slots = torch.as_tensor(slots, dtype=torch.long if isinstance(slots, list) else None).to(device)
    with pytest.raises(exc, match=match):
        append_kv(k, k, k_cache, v_cache, slots)
    assert not k_cache.any()


def test_append_kv_bad_shapes_raise(device):
    k_cache = torch.zeros(4, 8, 2, 64, device=device)
    slots = torch.zeros(3, dtype=torch.long, device=device)
    with pytest.raises(ValueError, match="k.shape\\[1\\] must equal num_kv_heads"):
        append_kv(torch.zeros(3, 1, 64, device=device), torch.zeros(3, 1, 64, device=device), k_cache,
                  k_cache.clone(), slots)
    with pytest.raises(TypeError, match="v must have the dtype of k_cache"):
        append_kv(torch.zeros(3, 2, 64, device=device), torch.zeros(3, 2, 64, device=device).bfloat16(),
                  k_cache, k_cache.clone(), slots)


def test_opcheck(device, gen):
    k_cache, v_cache, block_table, lens = make_paged([3, 20], 4, 2, 64, torch.float32, device, gen)
    q = torch.randn(2, 4, 64, generator=gen).to(device)
    torch.library.opcheck(torch.ops.siri.paged_decode_attention.default,
                          (q, k_cache, v_cache, block_table, lens, None))
    cu = torch.tensor([0, 3, 5], dtype=torch.int32, device=device)
    torch.library.opcheck(torch.ops.siri.paged_prefill_attention.default,
                          (q.repeat(3, 1, 1)[:5], k_cache, v_cache, block_table, lens, cu, 0.5))
    slots = torch.tensor([1, -1, 7], device=device)
    torch.library.opcheck(torch.ops.siri.append_kv.default,
                          (q[:, :2].repeat(2, 1, 1)[:3].contiguous(), q[:, 2:].repeat(2, 1, 1)[:3].contiguous(),
                           k_cache, v_cache, slots))


def test_exported_at_package_level():
    assert siri.ops.paged_decode_attention is paged_decode_attention
    assert siri.ops.append_kv is append_kv
    assert siri.ops.paged_prefill_attention is paged_prefill_attention


def test_traces_under_torch_compile(gen):
    # Lengths that leave room in the last page for the appended token.
    k_cache, v_cache, block_table, lens = make_paged([3, 18], 4, 2, 64, torch.float32, "cpu", gen)
    q = torch.randn(2, 4, 64, generator=gen)
    k, v = torch.randn(2, 2, 64, generator=gen), torch.randn(2, 2, 64, generator=gen)
    slots = (block_table[torch.arange(2), (lens // 4).long()].long() * 4 + lens.long() % 4)

    def step(q, k, v, k_cache, v_cache):
        append_kv(k, v, k_cache, v_cache, slots)
        return paged_decode_attention(q, k_cache, v_cache, block_table, lens + 1) * 2

    eager = step(q, k, v, k_cache.clone(), v_cache.clone())
    compiled = torch.compile(step, backend="aot_eager", fullgraph=True)
    torch.testing.assert_close(compiled(q, k, v, k_cache, v_cache), eager)


def test_cpu_bf16_fp32_arithmetic_path_matches_reference():
    """On CPUs with AVX512-BF16 the CPU kernel uses bf16 dot products for bf16 caches; the fp32
    path every other CPU takes (cpu_bf16_dot=False forces it) must stay correct too."""
    gen = torch.Generator().manual_seed(0)
    for group, d, page_size, lens in [(8, 128, 16, [1, 37, 700]), (7, 80, 1, [90, 3]), (12, 256, 5, [600])]:
        k, v, bt, sl = make_paged(lens, page_size, 2, d, torch.bfloat16, "cpu", gen)
        q = torch.randn(len(lens), 2 * group, d, generator=gen).bfloat16()
        out = paged_decode_attention(q, k, v, bt, sl, cpu_bf16_dot=False)
        ref = paged_decode_attention_reference(q, k, v, bt, sl)
        torch.testing.assert_close(out.double(), ref, atol=2e-2, rtol=0)
        if siri.build_info()["simd"] != "AVX512+BF16":  # no bf16 dot products in this build: one path
            torch.testing.assert_close(paged_decode_attention(q, k, v, bt, sl), out, atol=0, rtol=0)
