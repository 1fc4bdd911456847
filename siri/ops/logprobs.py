"""Selective log-softmax over the vocabulary: ``siri.ops.token_logprobs``.

One pass over the logits computes each row's max and log-normaliser (online max and
sum-exp) and the target's logprob, without materialising a ``[N, V]`` log-softmax. The
gradient recomputes the softmax from those two saved floats per row.
"""
from __future__ import annotations

import torch

from siri import _ext  # noqa: F401  (registers torch.ops.siri)


def token_logprobs(logits: torch.Tensor, targets: torch.Tensor, temperature: float = 1.0,
                   return_entropy: bool = False, mask: torch.Tensor | None = None, check_targets: bool = True):
    """Log-probability of each target token under ``softmax(logits / temperature)``.

    Args:
        logits: ``[N, V]`` or ``[B, T, V]``, float32, bfloat16 or float64, contiguous in the
            last dimension (row-strided views such as ``logits[:, :-1]`` are read in place).
        targets: int64, ``logits.shape[:-1]``, each in ``[0, V)`` (except on masked rows).
        temperature: > 0; the logits are divided by it.
        return_entropy: also return the entropy of each row's distribution.
        mask: optional bool, ``logits.shape[:-1]``; rows where it is False are skipped (their
            outputs are 0 and their targets are not read), so padding costs nothing.
        check_targets: check that every read target is in ``[0, V)`` (ValueError if not). On
            CUDA this is the op's one device-to-host read, forward and backward; a caller whose
            targets are valid by construction (the trainer's: the engine sampled them) passes
            False. Unchecked, an out-of-range target gives NaN and no gradient, never a bad read.

    Returns:
        ``logp`` (float32, or float64 for float64 logits), shape ``logits.shape[:-1]``; with
        ``return_entropy`` a tuple ``(logp, entropy)``. ``logp`` is differentiable with respect
        to ``logits``; the entropy is not.

    Example:
        >>> logits = torch.randn(4, 32000)
        >>> siri.ops.token_logprobs(logits, torch.randint(0, 32000, (4,)))
    """
    logp, _, entropy = torch.ops.siri.token_logprobs(logits, targets, mask, float(temperature),
                                                     bool(return_entropy), bool(check_targets))
    return (logp, entropy) if return_entropy else logp


def _rows(logits: torch.Tensor):
    return logits.shape[:-1]


@torch.library.register_fake("siri::token_logprobs")
def _token_logprobs_fake(logits, targets, mask, temperature, return_entropy, check_targets=True):
    acc = torch.float64 if logits.dtype == torch.float64 else torch.float32
    logp = logits.new_empty(_rows(logits), dtype=acc)
    stats = logits.new_empty((*_rows(logits), 2), dtype=acc)
    entropy = logits.new_empty(_rows(logits) if return_entropy else (0,), dtype=acc)
    return logp, stats, entropy


@torch.library.register_fake("siri::logits_grad")
def _logits_grad_fake(logits, targets, softmax_stats, row_scale, temperature, check_targets=True):
    return torch.empty_like(logits, memory_format=torch.contiguous_format)


@torch.library.register_fake("siri::logits_grad_")
def _logits_grad_inplace_fake(logits, targets, softmax_stats, row_scale, temperature, check_targets=True):
    return None


def _token_logprobs_setup(ctx, inputs, output):
    logits, targets, mask, temperature = inputs[:4]
    check_targets = inputs[5] if len(inputs) > 5 else True
    _, softmax_stats, _ = output
    ctx.save_for_backward(logits, targets, softmax_stats, mask)
    ctx.temperature, ctx.check_targets = temperature, check_targets


def _token_logprobs_backward(ctx, grad_logp, grad_stats, grad_entropy):
    logits, targets, softmax_stats, mask = ctx.saved_tensors
    row_scale = grad_logp.to(softmax_stats.dtype)
    if mask is not None:
        # a masked row's logp is the constant 0: no gradient, and its target is never read
        row_scale = torch.where(mask, row_scale, torch.zeros_like(row_scale))
    row_scale = row_scale.contiguous()
    grad = torch.ops.siri.logits_grad(logits, targets, softmax_stats, row_scale, ctx.temperature,
                                      ctx.check_targets)
    return grad, None, None, None, None, None


torch.library.register_autograd("siri::token_logprobs", _token_logprobs_backward,
                                setup_context=_token_logprobs_setup)


def token_logprobs_reference(logits: torch.Tensor, targets: torch.Tensor, temperature: float = 1.0):
    """Float64 reference: ``(logp, entropy)`` from a materialised log-softmax (for tests)."""
    logsm = torch.log_softmax(logits.double() / temperature, dim=-1)
    logp = logsm.gather(-1, targets.clamp(0, logits.shape[-1] - 1).unsqueeze(-1)).squeeze(-1)
    entropy = -(logsm.exp() * logsm.nan_to_num(neginf=0.0)).sum(-1)
    return logp, entropy
