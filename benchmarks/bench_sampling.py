"""siri.ops.sample_tokens vs the torch decode step it replaces, at B=64, V=151936 (Qwen2's
vocabulary), fp32 and bf16 logits, one process, timed alternately.

Baselines (all compute the same outputs: token, unfiltered logprob, stop bookkeeping):
  torch_hf:   Hugging Face's way: scores / T, TopKLogitsWarper, TopPLogitsWarper (ascending
              sort, softmax, cumsum, scatter), softmax, torch.multinomial, log_softmax gather,
              then the EOS / cap bookkeeping as separate tensor ops. The main baseline: what
              a Hugging Face generate() step does.
  torch_race: the same, but drawing with vLLM's exponential race (probs / Exp(1), argmax)
              instead of torch.multinomial, which is faster on the CPU. Reported for honesty.
Optional baseline (CUDA only, when installed; otherwise the reason is printed and recorded):
  flashinfer: flashinfer.sampling's fused sorting-free samplers on the same logits with the
              same temperature, top-k and top-p: sampling_from_logits (temperature only),
              top_p_sampling_from_probs after flashinfer's softmax (top-p only), and
              top_k_top_p_sampling_from_logits (both). It draws the token only: no logprob of
              the draw and no stop bookkeeping, so it does less work than siri.

Bandwidth: each row reports siri's (and flashinfer's) fraction of the memory-copy bandwidth
measured at the start of the run. The bytes counted are the compulsory traffic, the B x V
logits read once (4 bytes per element in fp32, 2 in bf16); the per-row inputs and outputs are
a few hundred bytes. Filtering with top-k / top-p makes extra passes over the row, so those
configurations cannot reach 1 on this measure.
"""
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

from siri.ops import sample_tokens  # noqa: E402

BATCH, VOCAB = 64, 151936
LOGIT_SCALE = 3.0  # logits ~ N(0, 3^2): top-p 0.95 keeps about 13k of the 152k tokens per row
CONFIGS = {  # name: (temperature, top_k, top_p)
    "temperature": (1.0, 0, 1.0),
    "top_p": (1.0, 0, 0.95),
    "top_k_top_p": (1.0, 50, 0.95),
}


def filtered_scores(logits, temperature, top_k, top_p):
    """scores / T with Hugging Face's TopK and TopP warpers applied (per-row top_p)."""
    scores = logits.float() / temperature[:, None]
    if top_k > 0:
        kth = torch.topk(scores, top_k, dim=-1).values[..., -1:]
        scores = scores.masked_fill(scores < kth, -float("inf"))
    if bool((top_p < 1).any()):
        sorted_scores, sorted_indices = torch.sort(scores, descending=False)
        cumulative = sorted_scores.softmax(dim=-1).cumsum(dim=-1)
        remove = cumulative <= (1 - top_p[:, None])
        remove[..., -1:] = False
        scores = scores.masked_fill(remove.scatter(1, sorted_indices, remove), -float("inf"))
    return scores


def stop_bookkeeping(tokens, logprobs, lengths, max_lengths, finished, eos_ids, pad_id):
    """The engine-side stop update, as separate tensor ops."""
    tokens = torch.where(finished, pad_id, tokens)
    logprobs = torch.where(finished, 0.0, logprobs)
    running = ~finished
    new_lengths = torch.where(running, lengths + 1, lengths)
    eos = torch.isin(tokens, eos_ids) & running
    capped = (new_lengths >= max_lengths) & running & ~eos
    reason = torch.where(eos, 1, torch.where(capped, 2, 0)).to(torch.int8)
    return tokens, logprobs, finished | eos | capped, new_lengths, reason


def torch_step(args, draw):
    a = args
    temperature = a["temperature"]
    logprobs_all = torch.log_softmax(a["logits"].float() / temperature[:, None], dim=-1)
    scores = filtered_scores(a["logits"], temperature, int(a["top_k"][0]), a["top_p"])
    probs = torch.softmax(scores, dim=-1)
    tokens = draw(probs)
    logprobs = logprobs_all.gather(1, tokens[:, None]).squeeze(1)
    return stop_bookkeeping(tokens, logprobs, a["lengths"], a["max_lengths"], a["finished"],
                            a["eos_ids"], a["pad_id"])


def draw_multinomial(probs):
    return torch.multinomial(probs, 1).squeeze(1)


def draw_race(probs):
    return (probs / torch.empty_like(probs).exponential_()).argmax(dim=-1)


def flashinfer_step(flashinfer, a, temperature, top_k, top_p):
    """A callable drawing one token per row with flashinfer's sampler for this configuration
    (the logits divided by the temperature first, as flashinfer's logits samplers take none)."""
    sampling = flashinfer.sampling
    logits, top_k_rows, top_p_rows = a["logits"], a["top_k"], a["top_p"]
    scaled = (lambda: logits) if temperature == 1.0 else (lambda: logits.float() / temperature)
    if top_k > 0:
        return lambda: sampling.top_k_top_p_sampling_from_logits(scaled(), top_k_rows, top_p_rows)
    if top_p < 1.0:
        return lambda: sampling.top_p_sampling_from_probs(
            sampling.softmax(logits, temperature=a["temperature"]), top_p_rows)
    return lambda: sampling.sampling_from_logits(scaled())


def make_args(dtype, temperature, top_k, top_p, device):
    gen = torch.Generator().manual_seed(0)
    ints = dict(dtype=torch.int32, device=device)
    return dict(
        logits=(torch.randn(BATCH, VOCAB, generator=gen) * LOGIT_SCALE).to(dtype).to(device),
        temperature=torch.full((BATCH,), temperature, device=device),
        top_k=torch.full((BATCH,), top_k, **ints), top_p=torch.full((BATCH,), top_p, device=device),
        seeds=torch.arange(BATCH, device=device), positions=torch.full((BATCH,), 17, device=device),
        lengths=torch.randint(0, 100, (BATCH,), generator=gen).to(**ints),
        max_lengths=torch.full((BATCH,), 100, **ints),
        finished=torch.zeros(BATCH, dtype=torch.bool, device=device),  # no rows to skip
        eos_ids=torch.tensor([151643, 151645], **ints), pad_id=151643)


def main() -> None:
    p = common.parser(__doc__)
    p.set_defaults(device="cpu")
    args = p.parse_args()
    device = torch.device(args.device)
    bandwidth = common.copy_bandwidth(device)
    print(f"device {device}, {torch.get_num_threads()} threads; B={BATCH}, V={VOCAB}, "
          f"logits ~ N(0, {LOGIT_SCALE}^2); memory-copy bandwidth {bandwidth / 1e9:.1f} GB/s (read + write)")
    flashinfer, flashinfer_status = common.optional_baseline("flashinfer", device)
    rows = []
    for dtype in (torch.float32, torch.bfloat16):
        for name, (temperature, top_k, top_p) in CONFIGS.items():
            a = make_args(dtype, temperature, top_k, top_p, device)
            candidates = {
                "siri": lambda a=a: sample_tokens(**a),
                "torch_hf": lambda a=a: torch_step(a, draw_multinomial),
                "torch_race": lambda a=a: torch_step(a, draw_race),
            }
            flashinfer_error = None
            if flashinfer is not None:
                try:
                    candidates["flashinfer"] = flashinfer_step(flashinfer, a, temperature, top_k, top_p)
                    candidates["flashinfer"]()  # fails here, not mid-timing, on a case it cannot run
                except Exception as exc:  # a baseline that cannot run this case is reported, not fatal
                    candidates.pop("flashinfer")
                    flashinfer_error = common.baseline_failure("flashinfer", exc)
            times = common.compare(candidates, device, repeats=args.repeats)
            logits_bytes = a["logits"].numel() * a["logits"].element_size()
            siri_s = common.median(times["siri"])
            row = dict(dtype=str(dtype).removeprefix("torch."), config=name, temperature=temperature,
                       top_k=top_k, top_p=top_p, logits_bytes=logits_bytes,
                       **{f"{k}_ms": common.median(v) * 1e3 for k, v in times.items()},
                       speedup_vs_torch_hf=common.median_ratio(times["torch_hf"], times["siri"]),
                       speedup_vs_torch_race=common.median_ratio(times["torch_race"], times["siri"]),
                       bandwidth_fraction=common.bandwidth_fraction(logits_bytes, siri_s, bandwidth))
            flashinfer_note = ""
            if "flashinfer" in times:
                row["flashinfer_bandwidth_fraction"] = common.bandwidth_fraction(
                    logits_bytes, common.median(times["flashinfer"]), bandwidth)
                row["siri_over_flashinfer"] = common.ratio_spread(times["siri"], times["flashinfer"])
                spread = row["siri_over_flashinfer"]
                flashinfer_note = (f"   flashinfer {row['flashinfer_ms']:7.3f} ms "
                                   f"({100 * row['flashinfer_bandwidth_fraction']:.1f}% of copy bw; siri takes "
                                   f"x{spread['median']:.2f} [{spread['min']:.2f}, {spread['max']:.2f}] its time)")
            elif flashinfer_error:
                row["flashinfer_error"] = flashinfer_error
            rows.append(row)
            print(f"{row['dtype']:>8} {name:<12} siri {row['siri_ms']:7.1f} ms "
                  f"({100 * row['bandwidth_fraction']:4.1f}% of copy bw)   torch_hf "
                  f"{row['torch_hf_ms']:7.1f} ms (x{row['speedup_vs_torch_hf']:.1f})   torch_race "
                  f"{row['torch_race_ms']:7.1f} ms (x{row['speedup_vs_torch_race']:.1f}){flashinfer_note}",
                  flush=True)
    common.write_results(args.out, "sampling", dict(
        device=str(device), batch=BATCH, vocab=VOCAB, logit_scale=LOGIT_SCALE,
        copy_bandwidth_GBps=bandwidth / 1e9, baselines={"flashinfer": flashinfer_status}, rows=rows))


if __name__ == "__main__":
    main()
