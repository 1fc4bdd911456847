"""siri.ops.grpo_loss vs the torch eager GRPO/DAPO composition, on every path the loss is called.

siri paths:
  siri               logits are an intermediate (the LM head's output): dlogits written in place
  siri_out_of_place  the same intermediate with inplace_backward=False: dlogits in a new tensor
  siri_leaf          logits are a leaf (requires_grad=True): always out of place
Baselines, both with autograd, both computing the same loss (clip 0.2/0.28, token-mean):
  eager      log_softmax -> gather -> ratio -> clip -> masked mean (verl / TRL's plain path)
  selective  TRL's memory-saving selective_log_softmax (gather - logsumexp; row loop for bf16)
Measured: fwd+bwd time (interleaved repeats; median time, and min/median/max of the per-repeat
ratios), the extra peak memory beyond the inputs (the logits and per-token tensors exist
before measuring starts), and each siri path's fraction of the memory-copy bandwidth measured
at the start of the run. The bytes counted are the loss's compulsory traffic: the logits read
once and dlogits written once (2 x N x V x element size; the per-token vectors are 1/V of it).
siri's forward and its backward each read the logits, so 2/3 is its ceiling on this measure.

A second table times the per-token log-probs alone (siri.ops.token_logprobs), fwd+bwd with a
per-token upstream gradient (as a policy-gradient loss gives), against the eager log_softmax
+ gather and, on CUDA when liger_kernel is installed, Liger's fused cross entropy
(LigerCrossEntropyLoss(reduction="none"): -CE is the target's log-prob; it writes the gradient
into the logits during the forward). Same bytes and bandwidth fraction as above.

A third table times the path the trainer runs: hidden [N, H] -> LM head [V, H] -> loss,
fwd+bwd down to the hidden states and the head's weight (siri in place vs eager, and, on CUDA
when liger_kernel is installed, Liger's chunked LigerFusedLinearGRPOLoss with loss_type "dapo",
no KL, the same clip range, torch.compile on as Liger ships it), so the loss's share of a real
step is visible. Its sequences are --seq-len tokens with one advantage each. Baselines that
are missing or cannot run are skipped with the reason printed and recorded in the JSON.
"""
import functools
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

from siri.ops import grpo_loss, token_logprobs  # noqa: E402

CLIP_LOW, CLIP_HIGH = 0.2, 0.28
SIRI_KINDS = {"siri": True, "siri_out_of_place": False, "siri_leaf": True}  # kind -> inplace_backward
KINDS = (*SIRI_KINDS, "eager", "selective")
LOGPROB_KINDS = ("siri", "eager", "liger")
HEAD_KINDS = ("siri", "eager", "liger")


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
            times[kind].append(common.time_once(functools.partial(step, kind, logits, targets, old, adv, mask), device))
    return memory, times


def logprobs_step(kind, logits, targets, upstream, liger_ce):
    """Forward + backward of the per-token log-probs with the per-token upstream gradient
    `upstream`; returns dlogits."""
    if kind == "siri":
        logp = token_logprobs(logits, targets)
    elif kind == "eager":
        logp = eager_logp(logits, targets)
    else:
        logp = -liger_ce(logits, targets)
    (grad,) = torch.autograd.grad(logp, logits, grad_outputs=upstream.to(logp.dtype))
    return grad


def measure_logprobs(leaf, targets, device, repeats, with_liger):
    """fwd+bwd seconds per repeat of each log-probs kind (liger when asked for and it runs),
    interleaved; every kind gets fresh intermediate logits (Liger overwrites its input with the
    gradient). Also the error of a Liger that cannot run or disagrees with siri."""
    upstream = torch.randn(leaf.shape[0], generator=torch.Generator().manual_seed(2)).to(device)
    kinds, liger_ce, liger_error = ["siri", "eager"], None, None
    if with_liger:
        try:
            from liger_kernel.transformers import LigerCrossEntropyLoss

            liger_ce = LigerCrossEntropyLoss(reduction="none")
            with torch.no_grad():
                expected = token_logprobs(leaf, targets)
            torch.testing.assert_close(-liger_ce(leaf.detach() * 1, targets).float(), expected, rtol=1e-2, atol=1e-3)
            kinds.append("liger")
        except Exception as exc:  # a baseline that cannot run this case is reported, not fatal
            liger_error = common.baseline_failure("liger cross entropy", exc)
    for kind in kinds:  # warm-up (Triton compiles Liger's kernel here)
        logprobs_step(kind, leaf * 1, targets, upstream, liger_ce)
    times = {kind: [] for kind in kinds}
    for _ in range(repeats):
        for kind in kinds:
            logits = leaf * 1
            times[kind].append(common.time_once(
                functools.partial(logprobs_step, kind, logits, targets, upstream, liger_ce), device))
    return times, liger_error


def measure_lm_head(n, seq_len, vocab, hidden_size, dtype, device, repeats, with_liger):
    """fwd+bwd seconds per repeat of hidden -> LM head -> loss, down to hidden and the weight,
    for n // seq_len sequences of seq_len tokens with one advantage each; and the error of a
    Liger that cannot run or disagrees with siri's loss."""
    g = torch.Generator().manual_seed(1)
    batch = n // seq_len
    hidden = (torch.randn(n, hidden_size, generator=g)).to(dtype).to(device).requires_grad_()
    weight = (torch.randn(vocab, hidden_size, generator=g) / hidden_size**0.5).to(dtype).to(device)
    weight.requires_grad_()
    targets = torch.randint(0, vocab, (n,), generator=g).to(device)
    with torch.no_grad():
        old = eager_logp(hidden @ weight.T, targets) + torch.randn(n, generator=g).to(device) * 0.1
    sequence_adv = torch.randn(batch, generator=g).to(device)
    adv = sequence_adv.repeat_interleave(seq_len)
    mask = (torch.rand(n, generator=g) < 0.9).to(device)

    def run(kind):
        if kind == "liger":
            loss = liger_grpo(hidden.view(batch, seq_len, -1), weight, targets.view(batch, seq_len),
                              mask.view(batch, seq_len).float(), sequence_adv,
                              old_per_token_logps=old.view(batch, seq_len))[0]
        else:
            loss = loss_of(kind, hidden @ weight.T, targets, old, adv, mask)
        return loss, torch.autograd.grad(loss, (hidden, weight))

    kinds, liger_grpo, liger_error = ["siri", "eager"], None, None
    if with_liger:
        try:
            from liger_kernel.chunked_loss import LigerFusedLinearGRPOLoss

            liger_grpo = LigerFusedLinearGRPOLoss(beta=0.0, use_ref_model=False, epsilon_low=CLIP_LOW,
                                                  epsilon_high=CLIP_HIGH, loss_type="dapo", compiled=True)
            # loose: Liger's chunked bf16 matmuls round the logits differently; this catches misuse
            torch.testing.assert_close(run("liger")[0].float(), run("siri")[0].float(), rtol=2e-2, atol=2e-3)
            kinds.append("liger")
        except Exception as exc:  # a baseline that cannot run this case is reported, not fatal
            liger_error = common.baseline_failure("liger fused linear GRPO", exc)
    times = common.compare({kind: (lambda k=kind: run(k)) for kind in kinds}, device, repeats=repeats, warmup=1)
    return times, liger_error


def spread_text(label, spread):
    """'label xMEDIAN [MIN, MAX]' of a ratio_spread."""
    return (f"{label} " if label else "") + f"x{spread['median']:.2f} [{spread['min']:.2f}, {spread['max']:.2f}]"


def main() -> None:
    p = common.parser(__doc__)
    p.add_argument("--n", type=int, default=4096)
    p.add_argument("--vocab", type=int, default=32768)
    p.add_argument("--hidden", type=int, default=256, help="hidden size of the LM-head table")
    p.add_argument("--seq-len", type=int, default=512,
                   help="tokens per sequence in the LM-head table (one advantage per sequence); must divide --n")
    args = p.parse_args()
    if args.n < 1 or args.seq_len < 1 or args.n % args.seq_len:
        p.error(f"--seq-len ({args.seq_len}) must be >= 1 and divide --n ({args.n})")
    device = torch.device(args.device) if args.device else common.default_device()
    common.cpu_allocations_return_to_os()
    bandwidth = common.copy_bandwidth(device)
    print(f"device {device}, {torch.get_num_threads()} threads; memory-copy bandwidth "
          f"{bandwidth / 1e9:.1f} GB/s (read + write)")
    liger, liger_status = common.optional_baseline("liger_kernel", device)
    repeats = max(3, args.repeats // 2)
    rows, logprob_rows, head_rows = [], [], []
    for dtype in (torch.float32, torch.bfloat16):
        leaf, targets, old, adv, mask = make_inputs(args.n, args.vocab, dtype, device)
        logits_bytes = leaf.numel() * leaf.element_size()
        loss_bytes = 2 * logits_bytes  # logits read once, dlogits written once
        memory, times = measure(leaf, targets, old, adv, mask, device, repeats)
        row = dict(dtype=str(dtype).replace("torch.", ""), n=args.n, vocab=args.vocab, repeats=repeats,
                   logits_MiB=logits_bytes / 2**20,
                   **{f"{k}_ms": common.median(v) * 1e3 for k, v in times.items()},
                   **{f"{k}_vs_eager": common.ratio_spread(times["eager"], times[k]) for k in SIRI_KINDS},
                   siri_vs_selective=common.ratio_spread(times["selective"], times["siri"]),
                   **{f"{k}_bandwidth_fraction": common.bandwidth_fraction(loss_bytes, common.median(times[k]),
                                                                           bandwidth) for k in SIRI_KINDS},
                   **{f"{k}_extra_peak_MiB": v / 2**20 for k, v in memory.items()})
        rows.append(row)
        print(f"{row['dtype']:>8}  N={args.n} V={args.vocab} (logits {row['logits_MiB']:.0f} MiB), "
              f"{repeats} repeats; speedup vs eager as median [min, max] over repeats")
        for kind in KINDS:
            spread = row.get(f"{kind}_vs_eager")
            vs = spread_text("", spread) if spread else ""
            fraction = row.get(f"{kind}_bandwidth_fraction")
            bw = f"{100 * fraction:5.1f}% of copy bw" if fraction is not None else ""
            print(f"   {kind:<18} {row[f'{kind}_ms']:8.1f} ms  {vs:<24} {bw:<18} "
                  f"extra peak {row[f'{kind}_extra_peak_MiB']:7.1f} MiB")

        logprob_times, liger_ce_error = measure_logprobs(leaf, targets, device, repeats, liger is not None)
        del leaf
        logprob_row = dict(dtype=row["dtype"], n=args.n, vocab=args.vocab,
                           **{f"{k}_ms": common.median(v) * 1e3 for k, v in logprob_times.items()},
                           **{f"{k}_bandwidth_fraction": common.bandwidth_fraction(
                               loss_bytes, common.median(v), bandwidth) for k, v in logprob_times.items()},
                           **{f"siri_vs_{k}": common.ratio_spread(v, logprob_times["siri"])
                              for k, v in logprob_times.items() if k != "siri"})
        if liger_ce_error:
            logprob_row["liger_error"] = liger_ce_error
        logprob_rows.append(logprob_row)
        print("   token_logprobs fwd+bwd: " + " | ".join(
            f"{k} {logprob_row[f'{k}_ms']:.1f} ms ({100 * logprob_row[f'{k}_bandwidth_fraction']:.1f}% of copy bw)"
            for k in LOGPROB_KINDS if f"{k}_ms" in logprob_row) + "   siri " + ", ".join(
            spread_text(f"vs {k}", logprob_row[f"siri_vs_{k}"]) for k in LOGPROB_KINDS if f"siri_vs_{k}" in logprob_row))

        head, liger_grpo_error = measure_lm_head(args.n, args.seq_len, args.vocab, args.hidden, dtype, device,
                                                 repeats, liger is not None)
        head_row = dict(dtype=row["dtype"], n=args.n, seq_len=args.seq_len, vocab=args.vocab, hidden=args.hidden,
                        **{f"{k}_ms": common.median(v) * 1e3 for k, v in head.items()},
                        **{f"siri_vs_{k}": common.ratio_spread(v, head["siri"]) for k, v in head.items() if k != "siri"})
        if liger_grpo_error:
            head_row["liger_error"] = liger_grpo_error
        head_rows.append(head_row)
        print(f"   LM head H={args.hidden} + loss, fwd+bwd to hidden and weight: " + " | ".join(
            f"{k} {head_row[f'{k}_ms']:.1f} ms" for k in HEAD_KINDS if f"{k}_ms" in head_row) + "   siri " + ", ".join(
            spread_text(f"vs {k}", head_row[f"siri_vs_{k}"]) for k in HEAD_KINDS if f"siri_vs_{k}" in head_row))
    common.write_results(args.out, "grpo_loss", dict(
        device=str(device), copy_bandwidth_GBps=bandwidth / 1e9, baselines={"liger_kernel": liger_status},
        rows=rows, logprob_rows=logprob_rows, lm_head_rows=head_rows))


if __name__ == "__main__":
    main()
