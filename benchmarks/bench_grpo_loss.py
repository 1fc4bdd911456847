"""siri.ops.grpo_loss (fused, dlogits in place) vs the torch eager GRPO/DAPO composition.

Baselines, both with autograd, both computing the same loss (clip 0.2/0.28, token-mean):
  eager      log_softmax -> gather -> ratio -> clip -> masked mean (verl / TRL's plain path)
  selective  TRL's memory-saving selective_log_softmax (gather - logsumexp; row loop for bf16)
Measured: fwd+bwd time (median of interleaved repeats, median ratio) and the extra peak
memory beyond the inputs (the logits and per-token tensors exist before measuring starts).
"""
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

from siri.ops import grpo_loss  # noqa: E402

CLIP_LOW, CLIP_HIGH = 0.2, 0.28


def policy_loss(logp, old, adv, mask):
    ratio = torch.exp(torch.clamp(logp - old, -20.0, 20.0))
    pg = torch.maximum(-adv * ratio, -adv * torch.clamp(ratio, 1 - CLIP_LOW, 1 + CLIP_HIGH))
    return (pg * mask).sum() / mask.sum().clamp(min=1)


def eager_logp(logits, targets):
    logsm = torch.log_softmax(logits.float(), dim=-1)
    return logsm.gather(-1, targets.unsqueeze(-1)).squeeze(-1)


def selective_logp(logits, targets):
    if logits.dtype in (torch.float32, torch.float64):
        picked = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
        return picked - torch.stack([torch.logsumexp(row, dim=-1) for row in logits])
    return torch.stack([torch.log_softmax(row, -1).gather(-1, t.unsqueeze(-1)).squeeze(-1)
                        for row, t in zip(logits, targets)]).float()


def make_inputs(n, vocab, dtype, device):
    g = torch.Generator().manual_seed(0)
    leaf = (torch.randn(n, vocab, generator=g) * 2).to(dtype).to(device).requires_grad_()
    targets = torch.randint(0, vocab, (n,), generator=g).to(device)
    with torch.no_grad():
        old = eager_logp(leaf, targets) + torch.randn(n, generator=g).to(device) * 0.1
    adv = torch.randn(n, generator=g).to(device)
    mask = (torch.rand(n, generator=g) < 0.9).to(device)
    return leaf, targets, old, adv, mask


def prepare(kind, leaf):
    """The logits as the loss receives them: for siri an intermediate (as LM-head output is,
    so the in-place backward applies); for the baselines a tensor requiring grad."""
    return leaf * 1 if kind.startswith("siri") else leaf.detach().requires_grad_()


def step(kind, logits, targets, old, adv, mask):
    """Forward + backward down to the logits; returns dloss/dlogits."""
    if kind.startswith("siri"):
        loss, _ = grpo_loss(logits, targets, old, adv, mask, clip_low=CLIP_LOW, clip_high=CLIP_HIGH,
                            inplace_backward=kind == "siri")
    else:
        logp = (eager_logp if kind == "eager" else selective_logp)(logits, targets)
        loss = policy_loss(logp, old, adv, mask.float())
    (grad,) = torch.autograd.grad(loss, logits)
    return grad


KINDS = ("siri", "siri_out_of_place", "eager", "selective")


def measure(leaf, targets, old, adv, mask, device, repeats):
    """Per-kind extra peak memory (bytes) and fwd+bwd seconds per repeat, interleaved."""
    memory, times = {}, {kind: [] for kind in KINDS}
    for kind in KINDS:
        logits = prepare(kind, leaf)
        step(kind, logits, targets, old, adv, mask)  # warm-up
        logits = prepare(kind, leaf)
        with common.PeakMemory(device) as peak:
            step(kind, logits, targets, old, adv, mask)
        memory[kind] = peak.extra
    for _ in range(repeats):
        for kind in KINDS:
            logits = prepare(kind, leaf)
            times[kind].append(common.time_once(lambda: step(kind, logits, targets, old, adv, mask), device))
    return memory, times


def main() -> None:
    p = common.parser(__doc__)
    p.add_argument("--n", type=int, default=4096)
    p.add_argument("--vocab", type=int, default=32768)
    args = p.parse_args()
    device = torch.device(args.device) if args.device else common.default_device()
    common.cpu_allocations_return_to_os()
    repeats = max(3, args.repeats // 2)
    rows = []
    for dtype in (torch.float32, torch.bfloat16):
        leaf, targets, old, adv, mask = make_inputs(args.n, args.vocab, dtype, device)
        logits_bytes = leaf.numel() * leaf.element_size()
        memory, times = measure(leaf, targets, old, adv, mask, device, repeats)
        row = dict(dtype=str(dtype).replace("torch.", ""), n=args.n, vocab=args.vocab,
                   logits_MiB=logits_bytes / 2**20,
                   **{f"{k}_ms": common.median(v) * 1e3 for k, v in times.items()},
                   speedup_vs_eager=common.median_ratio(times["eager"], times["siri"]),
                   speedup_vs_selective=common.median_ratio(times["selective"], times["siri"]),
                   **{f"{k}_extra_peak_MiB": v / 2**20 for k, v in memory.items()})
        row["memory_ratio_vs_eager"] = memory["siri"] / memory["eager"]
        row["memory_ratio_vs_selective"] = memory["siri"] / memory["selective"]
        rows.append(row)
        print(f"{row['dtype']:>8}  N={args.n} V={args.vocab} (logits {row['logits_MiB']:.0f} MiB)\n"
              f"   fwd+bwd  siri {row['siri_ms']:8.1f} ms | eager {row['eager_ms']:8.1f} ms "
              f"(x{row['speedup_vs_eager']:.2f}) | selective {row['selective_ms']:8.1f} ms "
              f"(x{row['speedup_vs_selective']:.2f}) | siri out-of-place {row['siri_out_of_place_ms']:.1f} ms\n"
              f"   extra peak memory  siri {row['siri_extra_peak_MiB']:7.2f} MiB | eager "
              f"{row['eager_extra_peak_MiB']:7.1f} MiB (ratio {row['memory_ratio_vs_eager']:.3f}) | "
              f"selective {row['selective_extra_peak_MiB']:7.1f} MiB (ratio {row['memory_ratio_vs_selective']:.3f}) | "
              f"siri out-of-place {row['siri_out_of_place_extra_peak_MiB']:.1f} MiB")
        del leaf
    common.write_results(args.out, "grpo_loss", dict(device=str(device), rows=rows))


if __name__ == "__main__":
    main()
