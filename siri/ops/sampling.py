"""Fused token sampling with early-stop bookkeeping: ``siri.ops.sample_tokens``."""
from __future__ import annotations

from typing import NamedTuple

import torch

from siri import _ext  # noqa: F401  (registers torch.ops.siri)


class SampleOutput(NamedTuple):
    """What one decode step produced, each ``[B]`` on the device of the logits."""

    tokens: torch.Tensor         # int64; pad_id for rows that were already finished
    logprobs: torch.Tensor       # float32; 0 for rows that were already finished
    finished: torch.Tensor       # bool
    lengths: torch.Tensor        # int32
    finish_reason: torch.Tensor  # int8: 0 running (or already finished), 1 stop (EOS), 2 length


FINISH_RUNNING, FINISH_STOP, FINISH_LENGTH = 0, 1, 2


def sample_tokens(logits: torch.Tensor, *, temperature: torch.Tensor, top_k: torch.Tensor,
                  top_p: torch.Tensor, seeds: torch.Tensor, positions: torch.Tensor,
                  lengths: torch.Tensor, max_lengths: torch.Tensor, finished: torch.Tensor,
                  eos_ids: torch.Tensor, pad_id: int, check_values: bool = True) -> SampleOutput:
    """One decode step: draw a token per row, its logprob, and the stop decision, in one op.

    The distribution is Hugging Face's / vLLM's: ``softmax(logits / T)``, keep the top-k
    tokens and renormalise, keep the smallest set of most likely tokens whose mass reaches
    ``top_p`` and renormalise. Ties are deterministic: top-k keeps every token whose logit
    equals the k-th largest (as HF and vLLM do); top-p ranks equal logits by increasing token
    index, so at the cut the lowest indices are kept. No sort is done: the cuts are found by
    radix selection and the draw is a Gumbel-max (exponential race) over the kept tokens.

    Randomness is Philox4x32-10 keyed by ``(seeds[b], positions[b])`` and the token index only,
    so a row's draw is the same run after run, whatever other rows share the batch, and on the
    CPU and CUDA kernels alike.

    Args:
        logits: ``[B, V]`` float32 or bfloat16 (bf16 is widened to fp32 on load); contiguous
            along V (a row stride, e.g. ``logits[:, -1, :]``, is fine). ``V < 2**22``.
        temperature: ``[B]`` float32, finite, ``>= 0``. 0 is greedy: the lowest index among
            the maximal logits, top-k/top-p ignored.
        top_k: ``[B]`` int32, ``>= 0``; 0 (or ``>= V``) is off.
        top_p: ``[B]`` float32 in ``(0, 1]``; 1 is off.
        seeds: ``[B]`` int64, the sequence's seed (all 64 bits are used).
        positions: ``[B]`` int64, the decode position; a new position gives fresh noise.
        lengths: ``[B]`` int32, tokens generated so far.
        max_lengths: ``[B]`` int32, ``>= 1``, the sequence's cap (the current SIRI phase cap).
        finished: ``[B]`` bool, rows that already stopped.
        eos_ids: ``[K]`` int32, each in ``[0, V)``; any of them stops a row (K may be 0).
        pad_id: token written for rows that were already finished, in ``[0, V)``.
        check_values: check the per-row values (caps, top-k/top-p/temperature ranges, eos
            ids). On CUDA this is the op's one device-to-host read; the engine validates its
            sampling parameters on the host and passes False, so a decode step never waits on
            the device. Shapes, dtypes and devices are always checked.
        Every tensor must be on the device of ``logits``.

    Returns:
        :class:`SampleOutput` ``(tokens, logprobs, finished, lengths, finish_reason)``, new
        tensors (inputs are not modified). For a running row: ``tokens`` int64 is the draw,
        ``logprobs`` float32 is its log-probability under the *unfiltered*
        ``softmax(logits / T)`` (at T = 0: under ``softmax(logits)``), ``lengths`` is
        ``lengths + 1``, ``finished`` is ``token in eos_ids or lengths + 1 >= max_lengths``,
        and ``finish_reason`` int8 is 1 (stop) on EOS (also when it lands exactly on the cap),
        2 (length) on the cap without EOS, else 0. A row that was already finished gets
        ``pad_id``, logprob 0, unchanged length, ``finished`` True and ``finish_reason`` 0:
        the reason is reported once, on the step the row stops.

    Raises:
        ValueError: batch sizes that differ, a cap below 1, ``top_k < 0``, ``top_p`` outside
            (0, 1], a negative or non-finite temperature, an eos id or pad_id outside
            ``[0, V)``, tensors on different devices, or logits not contiguous along V.
        TypeError: a wrong dtype.

    Logits should be finite or -inf (masked tokens); NaN counts as -inf. A row whose largest
    logit is not finite is treated as greedy with logprob NaN. Tokens less likely than
    ``e**-87`` times the most likely token are never drawn.

    Example:
        >>> B, V = 2, 8
        >>> out = siri.ops.sample_tokens(
        ...     torch.randn(B, V), temperature=torch.full((B,), 0.6), top_k=torch.zeros(B, dtype=torch.int32),
        ...     top_p=torch.full((B,), 0.95), seeds=torch.tensor([1, 2]), positions=torch.tensor([5, 5]),
        ...     lengths=torch.tensor([3, 7], dtype=torch.int32), max_lengths=torch.tensor([8, 8], dtype=torch.int32),
        ...     finished=torch.tensor([False, False]), eos_ids=torch.tensor([0], dtype=torch.int32), pad_id=0)
        >>> out.lengths            # row 1 reached its cap of 8: finished, reason 2 (1 if it drew EOS)
        tensor([4, 8], dtype=torch.int32)
    """
    if not isinstance(logits, torch.Tensor):
        raise TypeError(f"logits must be a torch.Tensor, got {type(logits).__name__}")
    return SampleOutput(*torch.ops.siri.sample_tokens(
        logits, temperature, top_k, top_p, seeds, positions, lengths, max_lengths, finished,
        eos_ids, int(pad_id), bool(check_values)))


@torch.library.register_fake("siri::sample_tokens")
def _sample_tokens_fake(logits, temperature, top_k, top_p, seeds, positions, lengths, max_lengths,
                        finished, eos_ids, pad_id, check_values=True):
    torch._check(logits.dim() == 2, lambda: "logits must be 2-D")
    batch = logits.shape[0]
    return tuple(logits.new_empty((batch,), dtype=dtype) for dtype in
                 (torch.int64, torch.float32, torch.bool, torch.int32, torch.int8))


def sampling_probs_reference(logits: torch.Tensor, temperature: torch.Tensor, top_k: torch.Tensor,
                             top_p: torch.Tensor) -> torch.Tensor:
    """The exact distribution :func:`sample_tokens` draws from, ``[B, V]`` float64 (for tests).

    Computed the way HF's warpers do, with a full sort, in float64 and with the documented
    tie rules; a greedy row (T = 0) is one-hot at its first maximal logit.
    """
    x = logits.double().cpu()
    batch, vocab = x.shape
    out = torch.zeros_like(x)
    for b in range(batch):
        t, k, p = float(temperature[b]), int(top_k[b]), float(top_p[b])
        if t == 0.0:
            out[b, int(torch.argmax(x[b]))] = 1.0
            continue
        probs = torch.softmax(x[b] / t, dim=0)
        keep = torch.ones(vocab, dtype=torch.bool)
        if 0 < k < vocab:
            keep &= x[b] >= torch.topk(x[b], k).values[-1]
        if p < 1.0:
            kept = torch.where(keep, probs, torch.zeros_like(probs))
            order = torch.sort(x[b], descending=True, stable=True).indices  # equal logits: by index
            sorted_mass = kept[order]
            before = torch.cumsum(sorted_mass, 0) - sorted_mass
            in_nucleus = torch.zeros(vocab, dtype=torch.bool)
            in_nucleus[order] = before < p * sorted_mass.sum()
            keep &= in_nucleus
        filtered = torch.where(keep, probs, torch.zeros_like(probs))
        out[b] = filtered / filtered.sum()
    return out.to(logits.device)


def sample_tokens_reference(logits: torch.Tensor, *, temperature: torch.Tensor, top_k: torch.Tensor,
                            top_p: torch.Tensor, lengths: torch.Tensor, max_lengths: torch.Tensor,
                            finished: torch.Tensor, eos_ids: torch.Tensor, pad_id: int,
                            tokens: torch.Tensor | None = None,
                            generator: torch.Generator | None = None) -> SampleOutput:
    """Plain-PyTorch float64 reference of :func:`sample_tokens` (for tests).

    Draws with ``torch.multinomial`` from :func:`sampling_probs_reference`, or, when ``tokens``
    is given, takes those draws for the running rows (to check a kernel's logprobs and stop
    bookkeeping for its own draws). The Philox noise itself is not reproduced here.
    """
    device = logits.device
    x = logits.double().cpu()
    if tokens is None:
        tokens = torch.multinomial(sampling_probs_reference(x, temperature, top_k, top_p), 1,
                                   generator=generator).squeeze(1)
    tokens = tokens.cpu().long()
    was_finished = finished.cpu()
    t = temperature.double().cpu()
    scale = torch.where(t > 0, t, torch.ones_like(t))
    logprobs = torch.log_softmax(x / scale[:, None], dim=1).gather(1, tokens[:, None]).squeeze(1)
    new_lengths = lengths.cpu() + 1
    eos = torch.isin(tokens, eos_ids.cpu().long())
    capped = new_lengths >= max_lengths.cpu()
    reason = torch.where(eos, FINISH_STOP, torch.where(capped, FINISH_LENGTH, FINISH_RUNNING))
    out = SampleOutput(
        tokens=torch.where(was_finished, pad_id, tokens),
        logprobs=torch.where(was_finished, 0.0, logprobs).float(),
        finished=was_finished | eos | capped,
        lengths=torch.where(was_finished, lengths.cpu(), new_lengths).int(),
        finish_reason=torch.where(was_finished, FINISH_RUNNING, reason).to(torch.int8))
    return SampleOutput(*(o.to(device) for o in out))
