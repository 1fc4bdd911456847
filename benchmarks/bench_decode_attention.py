"""siri.ops.paged_decode_attention vs torch SDPA on the same KV gathered into a padded
contiguous [B, H, Lmax, D] tensor (the Hugging Face style baseline: a length mask and
enable_gqa), and vs flashinfer's BatchDecodeWithPagedKVCacheWrapper on the same paged cache
when flashinfer is installed (CUDA only; otherwise the reason is printed and recorded).

Cases: 32 sequences of 4096 tokens, 32 mixed lengths, and a skewed batch of one long sequence
among 63 short ones (32768 among 63 x 512 on CUDA, 8192 among 63 x 256 on the CPU), which the
split planner cuts into chunks so one block does not walk the long sequence alone.

Reports the achieved KV read bandwidth as a fraction of the memory-copy bandwidth measured in
the same run (once at the start, and per case by a copy of the KV's size timed interleaved with
the kernels, which sees the same load from other jobs). The bytes counted are the compulsory
K and V reads (2 x tokens x KV heads x head dim x element size); q, the block table and the
output are under 1% of them. Also the speedup over SDPA with the gather excluded and included."""
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

from siri.ops import paged_decode_attention  # noqa: E402

PAGE_SIZE = 16
# (long, short) lengths of the skewed case, one long sequence among 63 short ones, indexed by
# "is CUDA": a 32K-token sequence on the GPU, a quarter of it on the CPU to keep the run short
SKEWED_LENGTHS = {True: (32768, 512), False: (8192, 256)}


def make_case(seq_lens, hq, hkv, d, dtype, device, gen):
    """A shuffled paged cache holding exactly the sequences' tokens."""
    pages_per_seq = [(n + PAGE_SIZE - 1) // PAGE_SIZE for n in seq_lens]
    max_pages, num_pages = max(pages_per_seq), sum(pages_per_seq)
    k_cache = torch.randn(num_pages, PAGE_SIZE, hkv, d, generator=gen).to(device, dtype)
    v_cache = torch.randn(num_pages, PAGE_SIZE, hkv, d, generator=gen).to(device, dtype)
    perm = torch.randperm(num_pages, generator=gen).int()
    block_table = torch.zeros(len(seq_lens), max_pages, dtype=torch.int32)
    start = 0
    for b, n in enumerate(pages_per_seq):
        block_table[b, :n] = perm[start:start + n]
        start += n
    q = torch.randn(len(seq_lens), hq, d, generator=gen).to(device, dtype)
    lens = torch.tensor(seq_lens, dtype=torch.int32)
    return q, k_cache, v_cache, block_table.to(device), lens.to(device)


def gather_padded(cache, block_table):
    """[B, Hkv, max_pages * page_size, D] contiguous copy of each sequence's pages."""
    b, max_pages = block_table.shape
    pages = cache[block_table.long()]  # [B, max_pages, page_size, Hkv, D]
    return pages.reshape(b, max_pages * cache.shape[1], *cache.shape[2:]).transpose(1, 2).contiguous()


def sdpa_padded(q, k, v, mask):
    return F.scaled_dot_product_attention(q.unsqueeze(2), k, v, attn_mask=mask, enable_gqa=True).squeeze(2)


def flashinfer_decode(flashinfer, q, k_cache, v_cache, block_table, lens):
    """flashinfer's BatchDecodeWithPagedKVCacheWrapper planned for the same cache (CUDA only).
    Returns a callable running one decode step."""
    page_size = k_cache.shape[1]
    pages = ((lens + page_size - 1) // page_size).int()
    indptr = torch.cat([pages.new_zeros(1), pages.cumsum(0)]).int()
    used = torch.arange(block_table.shape[1], device=q.device)[None, :] < pages[:, None]
    wrapper = flashinfer.BatchDecodeWithPagedKVCacheWrapper(
        torch.empty(128 << 20, dtype=torch.uint8, device=q.device), "NHD")
    wrapper.plan(indptr, block_table[used].int(), (lens - 1) % page_size + 1, q.shape[1],
                 k_cache.shape[2], q.shape[2], page_size, data_type=q.dtype)
    return lambda: wrapper.run(q, (k_cache, v_cache))


def run_case(name, seq_lens, dtype, device, bandwidth, repeats, gen, flashinfer, hq=16, hkv=2, d=128):
    q, k_cache, v_cache, block_table, lens = make_case(seq_lens, hq, hkv, d, dtype, device, gen)
    lmax = block_table.shape[1] * PAGE_SIZE
    mask = (torch.arange(lmax, device=device)[None, :] < lens[:, None].long())[:, None, None, :]
    k_pad, v_pad = gather_padded(k_cache, block_table), gather_padded(v_cache, block_table)
    out = paged_decode_attention(q, k_cache, v_cache, block_table, lens)
    torch.testing.assert_close(out.float(), sdpa_padded(q, k_pad, v_pad, mask).float(),
                               atol=2e-2 if dtype == torch.bfloat16 else 1e-4, rtol=0)
    candidates = {
        "siri": lambda: paged_decode_attention(q, k_cache, v_cache, block_table, lens),
        "sdpa": lambda: sdpa_padded(q, k_pad, v_pad, mask),
        "gather+sdpa": lambda: sdpa_padded(q, gather_padded(k_cache, block_table),
                                           gather_padded(v_cache, block_table), mask),
    }
    # A copy of as many bytes as the KV read, timed interleaved with the kernels: on a shared
    # machine it sees the same load from other jobs as they do.
    kv_bytes = 2 * sum(seq_lens) * hkv * d * k_cache.element_size()
    copy_src = torch.empty(kv_bytes // 4, dtype=torch.float32, device=device).uniform_()
    copy_dst = torch.empty_like(copy_src)
    candidates["copy"] = lambda: copy_dst.copy_(copy_src)
    flashinfer_error = None
    if flashinfer is not None:
        try:
            fi = flashinfer_decode(flashinfer, q, k_cache, v_cache, block_table, lens)
            torch.testing.assert_close(fi().float(), out.float(), atol=2e-2, rtol=0)
            candidates["flashinfer"] = fi
        except Exception as exc:  # a baseline that cannot run this case is reported, not fatal
            flashinfer_error = common.baseline_failure("flashinfer", exc)
    times = common.compare(candidates, device, repeats=repeats)
    siri_s = common.median(times["siri"])
    interleaved_bandwidth = 2 * kv_bytes / common.median(times["copy"])
    row = dict(case=name, dtype=str(dtype).removeprefix("torch."), batch=len(seq_lens),
               total_tokens=sum(seq_lens), max_len=max(seq_lens), hq=hq, hkv=hkv, head_dim=d,
               page_size=PAGE_SIZE, siri_ms=siri_s * 1e3,
               sdpa_ms=common.median(times["sdpa"]) * 1e3,
               gather_sdpa_ms=common.median(times["gather+sdpa"]) * 1e3,
               speedup_vs_sdpa=common.median_ratio(times["sdpa"], times["siri"]),
               speedup_vs_gather_sdpa=common.median_ratio(times["gather+sdpa"], times["siri"]),
               kv_read_GBps=kv_bytes / siri_s / 1e9,
               bandwidth_fraction=common.bandwidth_fraction(kv_bytes, siri_s, bandwidth),
               interleaved_copy_GBps=interleaved_bandwidth / 1e9,
               interleaved_bandwidth_fraction=common.bandwidth_fraction(kv_bytes, siri_s, interleaved_bandwidth))
    if "flashinfer" in times:
        flashinfer_s = common.median(times["flashinfer"])
        row["flashinfer_ms"] = flashinfer_s * 1e3
        row["flashinfer_bandwidth_fraction"] = common.bandwidth_fraction(kv_bytes, flashinfer_s, bandwidth)
        row["siri_over_flashinfer"] = common.ratio_spread(times["siri"], times["flashinfer"])
        spread = row["siri_over_flashinfer"]
        print(f"  flashinfer {row['flashinfer_ms']:.3f} ms ({100 * row['flashinfer_bandwidth_fraction']:.0f}% of "
              f"copy bandwidth): siri takes x{spread['median']:.2f} [{spread['min']:.2f}, {spread['max']:.2f}] its time")
    elif flashinfer_error:
        row["flashinfer_error"] = flashinfer_error
    print(f"{name:<22} {row['dtype']:<9} siri {row['siri_ms']:8.2f} ms  sdpa {row['sdpa_ms']:8.2f} ms  "
          f"gather+sdpa {row['gather_sdpa_ms']:8.2f} ms  x{row['speedup_vs_sdpa']:.2f} (gather excluded)  "
          f"x{row['speedup_vs_gather_sdpa']:.2f} (included)  KV read {row['kv_read_GBps']:.1f} GB/s = "
          f"{100 * row['bandwidth_fraction']:.0f}% of copy bandwidth "
          f"({100 * row['interleaved_bandwidth_fraction']:.0f}% of the interleaved copy's "
          f"{row['interleaved_copy_GBps']:.1f} GB/s)")
    return row


def main() -> None:
    p = common.parser(__doc__)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    device = torch.device(args.device) if args.device else common.default_device()
    gen = torch.Generator().manual_seed(args.seed)
    bandwidth = common.copy_bandwidth(device)
    print(f"device {device}, {torch.get_num_threads()} threads; memory-copy bandwidth "
          f"{bandwidth / 1e9:.1f} GB/s (read + write)")
    flashinfer, flashinfer_status = common.optional_baseline("flashinfer", device)
    mixed = torch.randint(128, 8193, (32,), generator=gen).tolist()
    long_len, short_len = SKEWED_LENGTHS[device.type == "cuda"]
    cases = {"B32 L4096": [4096] * 32, "mixed 128..8192": mixed,
             f"skewed {long_len}+63x{short_len}": [long_len] + [short_len] * 63}
    rows = [run_case(name, seq_lens, dtype, device, bandwidth, args.repeats, gen, flashinfer)
            for dtype in (torch.float32, torch.bfloat16) for name, seq_lens in cases.items()]
    common.write_results(args.out, "decode_attention", dict(
        device=str(device), copy_bandwidth_GBps=bandwidth / 1e9, baselines={"flashinfer": flashinfer_status},
        rows=rows))


if __name__ == "__main__":
    main()
