"""siri.ops.grpo_loss vs the torch eager GRPO/DAPO composition, on every path the loss is called.

siri paths:
  siri               logits are an intermediate (the LM head's output): dlogits written in place
  siri_out_of_place  the same intermediate with inplace_backward=False: dlogits in a new tensor
  siri_leaf          logits are a leaf (requires_grad=True): always out of place
Baselines, both with autograd, both computing the same loss (clip 0.2/0.28, token-mean):
  eager      log_softmax -> gather -> ratio -> clip -> masked mean (verl / TRL's plain path)
  selective  TRL's memory-saving selective_log_softmax (gather - logsumexp; row loop for bf16)
Measured: fwd+bwd time (interleaved repeats; median time, and min/median/max of the per-repeat
ratios) and the extra peak memory beyond the inputs (the logits and per-token tensors exist
before measuring starts).

A second table times the path the trainer runs: hidden [N, H] -> LM head [V, H] -> loss,
fwd+bwd down to the hidden states and the head's weight (siri in place vs eager), so the
loss's share of a real step is visible.
"""
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

from siri.ops import grpo_loss  # noqa: E402

CLIP_LOW, CLIP_HIGH = 0.2, 0.28
SIRI_KINDS = {"siri": True, "siri_out_of_place": False, "siri_leaf": True}  # kind -> inplace_backward
KINDS = (*SIRI_KINDS, "eager", "selective")


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
    """The logits as each kind receives them: an intermediate (as the LM head's output is) for
    siri and siri_out_of_place, a tensor requiring grad for the others."""
    return leaf * 1 if kind in ("siri", "siri_out_of_place") else leaf.detach().requires_grad_()


def loss_of(kind, logits, targets, old, adv, mask):
    if kind in SIRI_KINDS:
        loss, _ = grpo_loss(logits, targets, old, adv, mask, clip_low=CLIP_LOW, clip_high=CLIP_HIGH,
                            inplace_backward=SIRI_KINDS[kind])
        return loss
    logp = (eager_logp if kind == "eager" else selective_logp)(logits, targets)
    return policy_loss(logp, old, adv, mask.float())


def step(kind, logits, targets, old, adv, mask):
    """Forward + backward down to the logits; returns dloss/dlogits."""
    (grad,) = torch.autograd.grad(loss_of(kind, logits, targets, old, adv, mask), logits)
    return grad


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


def measure_lm_head(n, vocab, hidden_size, dtype, device, repeats):
    """fwd+bwd seconds per repeat of hidden -> LM head -> loss, down to hidden and the weight."""
    g = torch.Generator().manual_seed(1)
    hidden = (torch.randn(n, hidden_size, generator=g)).to(dtype).to(device).requires_grad_()
    weight = (torch.randn(vocab, hidden_size, generator=g) / hidden_size**0.5).to(dtype).to(device)
    weight.requires_grad_()
    _, targets, old, adv, mask = make_inputs(n, 8, dtype, device)
    targets = torch.randint(0, vocab, (n,), generator=g).to(device)

    def run(kind):
        loss = loss_of(kind, hidden @ weight.T, targets, old, adv, mask)
        return torch.autograd.grad(loss, (hidden, weight))

    return common.compare({kind: (lambda k=kind: run(k)) for kind in ("siri", "eager")}, device,
                          repeats=repeats, warmup=1)


def main() -> None:
    p = common.parser(__doc__)
    p.add_argument("--n", type=int, default=4096)
    p.add_argument("--vocab", type=int, default=32768)
    p.add_argument("--hidden", type=int, default=256, help="hidden size of the LM-head table")
    args = p.parse_args()
    device = torch.device(args.device) if args.device else common.default_device()
    common.cpu_allocations_return_to_os()
    repeats = max(3, args.repeats // 2)
    rows, head_rows = [], []
    for dtype in (torch.float32, torch.bfloat16):
        leaf, targets, old, adv, mask = make_inputs(args.n, args.vocab, dtype, device)
        logits_bytes = leaf.numel() * leaf.element_size()
        memory, times = measure(leaf, targets, old, adv, mask, device, repeats)
        del leaf
        row = dict(dtype=str(dtype).replace("torch.", ""), n=args.n, vocab=args.vocab, repeats=repeats,
                   logits_MiB=logits_bytes / 2**20,
                   **{f"{k}_ms": common.median(v) * 1e3 for k, v in times.items()},
                   **{f"{k}_vs_eager": common.ratio_spread(times["eager"], times[k]) for k in SIRI_KINDS},
                   siri_vs_selective=common.ratio_spread(times["selective"], times["siri"]),
                   **{f"{k}_extra_peak_MiB": v / 2**20 for k, v in memory.items()})
        rows.append(row)
        print(f"{row['dtype']:>8}  N={args.n} V={args.vocab} (logits {row['logits_MiB']:.0f} MiB), "
              f"{repeats} repeats; speedup vs eager as median [min, max] over repeats")
        for kind in KINDS:
            spread = row.get(f"{kind}_vs_eager")
            vs = f"x{spread['median']:6.2f} [{spread['min']:.2f}, {spread['max']:.2f}]" if spread else ""
            print(f"   {kind:<18} {row[f'{kind}_ms']:8.1f} ms  {vs:<24} "
                  f"extra peak {row[f'{kind}_extra_peak_MiB']:7.1f} MiB")
        head = measure_lm_head(args.n, args.vocab, args.hidden, dtype, device, repeats)
        head_row = dict(dtype=row["dtype"], n=args.n, vocab=args.vocab, hidden=args.hidden,
                        **{f"{k}_ms": common.median(v) * 1e3 for k, v in head.items()},
                        siri_vs_eager=common.ratio_spread(head["eager"], head["siri"]))
        head_rows.append(head_row)
        spread = head_row["siri_vs_eager"]
        print(f"   LM head H={args.hidden} + loss, fwd+bwd to hidden and weight: siri {head_row['siri_ms']:.1f} ms"
              f" | eager {head_row['eager_ms']:.1f} ms  x{spread['median']:.2f} "
              f"[{spread['min']:.2f}, {spread['max']:.2f}]")
    common.write_results(args.out, "grpo_loss", dict(device=str(device), rows=rows, lm_head_rows=head_rows))


if __name__ == "__main__":
    main()
