"""Fused GRPO / DAPO policy loss: ``siri.ops.grpo_loss``.

``logits -> loss`` without a log-softmax over the vocabulary: the forward keeps two floats per
row (max logit and log-normaliser), and the backward recomputes the softmax and writes ``dlogits``,
by default into the logits' own storage, so peak memory stays about one copy of the logits.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from siri import _ext  # noqa: F401  (registers torch.ops.siri)


@dataclass
class GrpoLossStats:
    """Statistics of one ``grpo_loss`` call, over the unmasked tokens (0-d float tensors,
    no host sync). Fractions are of this call's unmasked tokens."""

    clip_frac_low: torch.Tensor    # A < 0 and ratio < 1 - clip_low: the lower clip is active
    clip_frac_high: torch.Tensor   # A > 0 and ratio > 1 + clip_high: the upper clip is active
    clip_frac_dual: torch.Tensor   # A < 0 and the dual clip (clip_c) is active
    approx_kl: torch.Tensor        # mean(old_logprobs - logp)
    ratio_mean: torch.Tensor       # mean(exp(logp - old_logprobs))
    num_tokens: torch.Tensor       # unmasked tokens in this call
    entropy: torch.Tensor | None   # mean entropy, when asked for
    logp: torch.Tensor             # per-token logp (float32/float64), detached


def grpo_loss(logits: torch.Tensor, targets: torch.Tensor, old_logprobs: torch.Tensor,
              advantages: torch.Tensor, mask: torch.Tensor, *, clip_low: float = 0.2,
              clip_high: float = 0.28, clip_c: float | None = None, temperature: float = 1.0,
              ref_logprobs: torch.Tensor | None = None, kl_coef: float = 0.0,
              num_tokens: float | torch.Tensor | None = None, inplace_backward: bool = True,
              return_entropy: bool = False, check_targets: bool = True) -> tuple[torch.Tensor, GrpoLossStats]:
    """GRPO / DAPO clipped policy-gradient loss from logits, token-mean normalised.

    Per token, with ``logp = log_softmax(logits / temperature)[target]``:
    ``ratio = exp(clamp(logp - old, -20, 20))``,
    ``pg = max(-A * ratio, -A * clamp(ratio, 1 - clip_low, 1 + clip_high))``; with ``clip_c``
    (dual clip) and ``A < 0``, ``pg = min(pg, -A * clip_c)``; with ``kl_coef > 0``,
    ``pg += kl_coef * k3(ref, logp)`` (verl's clamped k3 estimator).
    ``loss = sum(mask * pg) / num_tokens``.

    Args:
        logits: ``[N, V]`` or ``[B, T, V]``, float32 / bfloat16 (float64 for gradcheck),
            contiguous in the last dimension. Row-strided views (``logits[:, :-1]``) are fine.
        targets: int64, ``logits.shape[:-1]``; in ``[0, V)`` wherever ``mask`` is True.
        old_logprobs: float32, ``logits.shape[:-1]``: logprobs of the policy that sampled.
        advantages: float32, ``logits.shape[:-1]``: each token carries its sequence's advantage.
        mask: bool, ``logits.shape[:-1]``: True on response tokens that count.
        clip_low, clip_high: the asymmetric PPO clip range (DAPO's clip-higher: 0.2 / 0.28).
        clip_c: dual-clip constant (> 1), or None for off.
        temperature: the sampling temperature; logits are divided by it.
        ref_logprobs, kl_coef: k3 KL penalty against a reference policy (off when 0).
        num_tokens: the normaliser. Default ``mask.sum()``; the trainer passes the token count
            of the whole step (all micro-batches and ranks), which gives DAPO's token-mean.
        check_targets: as in :func:`token_logprobs`: False skips the target range check (the
            forward's and the backward's device-to-host read) for targets valid by construction.
        inplace_backward: write ``dlogits`` into the logits' storage (saves a logits-sized
            buffer). Only use when nothing else needs the logits after this loss. Ignored
            for leaf tensors, whose ``.grad`` must not alias their data.
        return_entropy: also compute the mean entropy (in the same pass).

    Returns:
        ``(loss, stats)``: a 0-d tensor (float32, float64 for float64 logits) differentiable
        with respect to ``logits``, and a :class:`GrpoLossStats`. An all-masked batch gives a
        loss of 0, and so does ``num_tokens=0``.
    """
    acc = torch.float64 if logits.dtype == torch.float64 else torch.float32
    if num_tokens is None:
        denominator = mask.sum().to(acc)
    elif isinstance(num_tokens, torch.Tensor):
        denominator = num_tokens.to(device=logits.device, dtype=acc)
    else:
        if not num_tokens >= 0:
            raise ValueError(f"num_tokens must be >= 0, got {num_tokens}")
        denominator = torch.tensor(float(num_tokens), dtype=acc, device=logits.device)
    if kl_coef > 0 and ref_logprobs is None:
        raise ValueError("kl_coef > 0 needs ref_logprobs")

    def as_acc(t):
        return t.to(acc) if t is not None else None

    # A leaf's gradient must not alias its own storage: write in place only into
    # intermediate logits (the usual case: the output of the LM head).
    inplace = bool(inplace_backward) and logits.grad_fn is not None
    loss, logp, per_token, entropy = _GrpoLoss.apply(
        logits, targets, as_acc(old_logprobs), as_acc(advantages), mask, as_acc(ref_logprobs),
        float(clip_low), float(clip_high), float(clip_c or 0.0), float(temperature),
        float(kl_coef), denominator, inplace, bool(return_entropy), bool(check_targets))
    return loss, _stats(logp, per_token, entropy, as_acc(old_logprobs), mask)


def _stats(logp, clip_state, entropy, old_logprobs, mask) -> GrpoLossStats:
    count = mask.sum()
    denom = count.clamp(min=1).to(logp.dtype)

    def masked_mean(x):
        return torch.where(mask, x, torch.zeros_like(x)).sum() / denom

    def frac(state):
        return (clip_state == state).logical_and(mask).sum().to(logp.dtype) / denom

    log_ratio = (logp - old_logprobs).clamp(-20, 20)
    return GrpoLossStats(
        clip_frac_low=frac(1), clip_frac_high=frac(2), clip_frac_dual=frac(3),
        approx_kl=masked_mean(old_logprobs - logp), ratio_mean=masked_mean(log_ratio.exp()),
        num_tokens=count, entropy=masked_mean(entropy) if entropy is not None else None,
        logp=logp)


@torch.library.register_fake("siri::grpo_token_loss")
def _grpo_token_loss_fake(logp, old_logprobs, advantages, mask, ref_logprobs, clip_low, clip_high,
                          clip_c, kl_coef):
    return torch.empty_like(logp), torch.empty_like(logp), torch.empty_like(logp, dtype=torch.int8)


class _GrpoLoss(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits, targets, old, adv, mask, ref, clip_low, clip_high, clip_c,
                temperature, kl_coef, denominator, inplace_backward, return_entropy, check_targets):
        logp, softmax_stats, entropy = torch.ops.siri.token_logprobs(logits, targets, mask, temperature,
                                                                     return_entropy, check_targets)
        per_token, dloss_dlogp, clip_state = torch.ops.siri.grpo_token_loss(
            logp, old, adv, mask, ref, clip_low, clip_high, clip_c, kl_coef)
        # a zero normaliser (nothing to average over) gives loss 0 and gradient 0
        inv_denominator = torch.where(denominator > 0, 1.0 / denominator, torch.zeros_like(denominator))
        loss = per_token.sum() * inv_denominator
        ctx.save_for_backward(logits, targets, softmax_stats, dloss_dlogp, inv_denominator)
        ctx.temperature, ctx.check_targets = temperature, check_targets
        ctx.inplace = inplace_backward
        ctx.mark_non_differentiable(logp, clip_state)
        return loss, logp, clip_state, (entropy if return_entropy else None)

    @staticmethod
    def backward(ctx, grad_loss, _grad_logp, _grad_state, _grad_entropy):
        logits, targets, softmax_stats, dloss_dlogp, inv_denominator = ctx.saved_tensors
        row_scale = (dloss_dlogp * (grad_loss * inv_denominator)).contiguous()
        if ctx.inplace:
            torch.ops.siri.logits_grad_(logits, targets, softmax_stats, row_scale, ctx.temperature,
                                        ctx.check_targets)
            grad = logits
        else:
            grad = torch.ops.siri.logits_grad(logits, targets, softmax_stats, row_scale, ctx.temperature,
                                              ctx.check_targets)
        return (grad,) + (None,) * 14


def grpo_loss_reference(logits, targets, old_logprobs, advantages, mask, *, clip_low=0.2,
                        clip_high=0.28, clip_c=None, temperature=1.0, ref_logprobs=None,
                        kl_coef=0.0, num_tokens=None):
    """Float64 eager reference (log_softmax -> gather -> ratio -> clip -> masked sum), written
    the way verl's ``compute_policy_loss`` + token-mean ``agg_loss`` compose it (for tests)."""
    logsm = torch.log_softmax(logits.double() / temperature, dim=-1)
    safe_targets = torch.where(mask, targets, torch.zeros_like(targets))
    logp = logsm.gather(-1, safe_targets.unsqueeze(-1)).squeeze(-1)
    adv, old = advantages.double(), old_logprobs.double()
    ratio = torch.exp(torch.clamp(logp - old, -20.0, 20.0))
    pg1 = -adv * ratio
    pg2 = -adv * torch.clamp(ratio, 1 - clip_low, 1 + clip_high)
    pg = torch.maximum(pg1, pg2)
    if clip_c is not None:
        pg = torch.where(adv < 0, torch.minimum(pg, -adv * clip_c), pg)
    if kl_coef > 0:
        kl = torch.clamp(ref_logprobs.double() - logp, -20.0, 20.0)
        pg = pg + kl_coef * torch.clamp(torch.exp(kl) - kl - 1, -10.0, 10.0)
    total = torch.where(mask, pg, torch.zeros_like(pg)).sum()
    denom = mask.sum().double() if num_tokens is None else torch.as_tensor(float(num_tokens)).double()
    return total / denom if denom > 0 else total * 0
