"""Prefill attention over a paged KV cache: siri's query-tiled kernel against its per-query
path (query_tiled=False: one query per new token, each streaming its causal prefix, reading
every K/V page once per query rather than once per tile of queries) and torch SDPA (causal, on the same K/V gathered into
contiguous [H, T, D] tensors beforehand, the gather not timed), timed interleaved in one run.

Cases, in the 1.5B model's layout (Hq=12, Hkv=2, D=128, page size 16), fp32 and bf16:
  prefill 4096  one 4,096-token prompt through paged_prefill_attention;
  engine 4 seqs four prompts (2,048, 1,024, 768 and 256 tokens) packed as the engine's
                prefill_batch packs them, through paged_attention_run with query_seq and the
                host facts (SDPA: one causal call per sequence).
Reported per case: the median time of each over --repeats and the per-repeat speedup of the
tiled kernel over each other (median [min, max]). --check-goal exits with status 1 unless the
tiled kernel is at least 3x the per-query path on the 4,096-token prefill in every dtype (a
goal stated for the CPU kernels; on a GPU the speedups are reported for comparison).
"""
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

from siri.ops import paged_attention_run, paged_prefill_attention  # noqa: E402

PAGE_SIZE, HQ, HKV, D = 16, 12, 2, 128
GOAL = 3.0


def make_case(seq_lens, dtype, device, gen):
    """Each sequence's prompt in shuffled pages of one cache, its queries packed in order."""
    pages_per_seq = [(n + PAGE_SIZE - 1) // PAGE_SIZE for n in seq_lens]
    num_pages = sum(pages_per_seq)
    k_cache = torch.randn(num_pages, PAGE_SIZE, HKV, D, generator=gen).to(device, dtype)
    v_cache = torch.randn(num_pages, PAGE_SIZE, HKV, D, generator=gen).to(device, dtype)
    perm = torch.randperm(num_pages, generator=gen).int()
    block_table = torch.zeros(len(seq_lens), max(pages_per_seq), dtype=torch.int32)
    start = 0
    for b, n in enumerate(pages_per_seq):
        block_table[b, :n] = perm[start:start + n]
        start += n
    q = torch.randn(sum(seq_lens), HQ, D, generator=gen).to(device, dtype)
    return q, k_cache, v_cache, block_table.to(device)


def contiguous_kv(cache, pages, length):
    """[Hkv, length, D]: one sequence's first `length` tokens, gathered from its pages."""
    t = torch.arange(length, device=cache.device)
    return cache[pages.long()[t // PAGE_SIZE], t % PAGE_SIZE].transpose(0, 1).contiguous()


def run_case(name, seq_lens, dtype, device, repeats, gen):
    q, k_cache, v_cache, block_table = make_case(seq_lens, dtype, device, gen)
    lens = torch.tensor(seq_lens, dtype=torch.int32, device=device)
    ends = torch.tensor(seq_lens).cumsum(0).tolist()
    starts = [e - n for e, n in zip(ends, seq_lens)]
    if name.startswith("engine"):
        # As siri.engine.llm_engine.prefill_batch builds it: kv_len = position + 1 per token.
        kv_lens = torch.cat([torch.arange(1, n + 1) for n in seq_lens]).int().to(device)
        query_seq = torch.repeat_interleave(torch.arange(len(seq_lens)), torch.tensor(seq_lens)).int().to(device)
        total = sum(n * (n + 1) // 2 for n in seq_lens)

        def siri_call(query_tiled):
            return paged_attention_run(q, k_cache, v_cache, block_table, kv_lens, query_seq,
                                       max_kv_len=max(seq_lens), total_kv_len=total, query_tiled=query_tiled)
    else:
        cu_seqlens = torch.tensor([0] + ends, dtype=torch.int32, device=device)

        def siri_call(query_tiled):
            return paged_prefill_attention(q, k_cache, v_cache, block_table, lens, cu_seqlens, query_tiled=query_tiled)

    # SDPA per sequence on contiguous K/V: [Hq, n, D] queries, [Hkv, n, D] keys and values.
    q_heads = [q[s:e].transpose(0, 1) for s, e in zip(starts, ends)]
    kv = [(contiguous_kv(k_cache, block_table[b], n), contiguous_kv(v_cache, block_table[b], n))
          for b, n in enumerate(seq_lens)]

    def sdpa():
        return [F.scaled_dot_product_attention(qh, k, v, is_causal=True, enable_gqa=True)
                for qh, (k, v) in zip(q_heads, kv)]

    def tiled():
        return siri_call(True)

    def per_query():
        return siri_call(False)

    out_tiled, out_per_query = tiled(), per_query()
    out_sdpa = torch.cat([o.transpose(0, 1) for o in sdpa()])
    atol = 2e-2 if dtype == torch.bfloat16 else 1e-4
    torch.testing.assert_close(out_tiled.float(), out_sdpa.float(), atol=atol, rtol=0)
    torch.testing.assert_close(out_tiled.float(), out_per_query.float(), atol=atol, rtol=0)

    times = common.compare({"tiled": tiled, "per_query": per_query, "sdpa": sdpa}, device, repeats=repeats, warmup=1)
    vs_per_query = common.ratio_spread(times["per_query"], times["tiled"])
    vs_sdpa = common.ratio_spread(times["sdpa"], times["tiled"])
    row = dict(case=name, dtype=str(dtype).removeprefix("torch."), seq_lens=seq_lens, tokens=sum(seq_lens), hq=HQ,
               hkv=HKV, head_dim=D, page_size=PAGE_SIZE, tiled_ms=common.median(times["tiled"]) * 1e3,
               per_query_ms=common.median(times["per_query"]) * 1e3, sdpa_ms=common.median(times["sdpa"]) * 1e3,
               speedup_vs_per_query=vs_per_query, speedup_vs_sdpa=vs_sdpa, times=times)
    print(f"{name:<14} {row['dtype']:<9} tiled {row['tiled_ms']:9.1f} ms  per-query {row['per_query_ms']:9.1f} ms  "
          f"sdpa {row['sdpa_ms']:9.1f} ms  tiled vs per-query x{vs_per_query['median']:.2f} "
          f"[{vs_per_query['min']:.2f}, {vs_per_query['max']:.2f}]  vs sdpa x{vs_sdpa['median']:.2f} "
          f"[{vs_sdpa['min']:.2f}, {vs_sdpa['max']:.2f}]", flush=True)
    return row


def markdown(rows) -> str:
    lines = ["| case | dtype | tiled ms | per-query ms | SDPA ms | tiled vs per-query | tiled vs SDPA |",
             "|---|---|---:|---:|---:|---|---|"]
    for r in rows:
        a, b = r["speedup_vs_per_query"], r["speedup_vs_sdpa"]
        lines.append(f"| {r['case']} | {r['dtype']} | {r['tiled_ms']:.1f} | {r['per_query_ms']:.1f} | {r['sdpa_ms']:.1f} "
                     f"| x{a['median']:.2f} [{a['min']:.2f}, {a['max']:.2f}] "
                     f"| x{b['median']:.2f} [{b['min']:.2f}, {b['max']:.2f}] |")
    return "\n".join(lines)


def main() -> None:
    p = common.parser(__doc__)
    p.set_defaults(repeats=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--check-goal", action="store_true",
                   help=f"exit with status 1 unless tiled >= {GOAL:g}x the per-query path on the 4,096-token prefill")
    args = p.parse_args()
    device = torch.device(args.device) if args.device else common.default_device()
    gen = torch.Generator().manual_seed(args.seed)
    print(f"device {device}, {torch.get_num_threads()} threads, {args.repeats} interleaved repeats; "
          f"Hq={HQ} Hkv={HKV} D={D} page {PAGE_SIZE}")
    rows = []
    for dtype in (torch.float32, torch.bfloat16):
        rows.append(run_case("prefill 4096", [4096], dtype, device, args.repeats, gen))
        rows.append(run_case("engine 4 seqs", [2048, 1024, 768, 256], dtype, device, args.repeats, gen))
    print(markdown(rows))
    goal_rows = [r for r in rows if r["case"] == "prefill 4096"]
    goal_met = all(r["speedup_vs_per_query"]["median"] >= GOAL for r in goal_rows)
    print(f"goal: tiled >= x{GOAL:g} the per-query path on the 4,096-token prefill (median of per-repeat ratios): "
          f"{'met' if goal_met else 'NOT met'}")
    common.write_results(args.out, "prefill_attention", dict(device=str(device), goal_speedup=GOAL, goal_met=goal_met,
                                                             rows=rows))
    if args.check_goal and not goal_met:
        sys.exit(1)


if __name__ == "__main__":
    main()
