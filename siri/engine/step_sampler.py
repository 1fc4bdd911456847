"""The engine's sampling step: ``sample_tokens`` over the batch's persistent parameters, and
the draws brought back to the host with one wait per step.

The parameters were validated on the host (:meth:`SamplingParams.validate`), so the op runs
with ``check_values=False`` and reads nothing back itself. The tokens, logprobs and finish
reasons come back through pinned buffers and non-blocking copies, then one wait on an event:
the step's only synchronisation, which the scheduler needs anyway (who finished).
"""
from __future__ import annotations

import numpy as np
import torch

from siri.engine.params import SamplingParams
from siri.engine.sequence import Sequence
from siri.ops.sampling import sample_tokens


def _numpy(tensors) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    tokens, logprobs, finish_reasons = (t.numpy() for t in tensors)
    return tokens, logprobs, finish_reasons


class StepSampler:
    """Sampling for one ``generate`` call: temperature, top-k and top-p are the same for
    every row, so they are ``[max_rows]`` tensors filled once and sliced per step."""

    def __init__(self, params: SamplingParams, max_rows: int, device: torch.device):
        self.device = device
        self._temperature = torch.full((max_rows,), float(params.temperature), device=device)
        self._top_k = torch.full((max_rows,), int(params.top_k), dtype=torch.int32, device=device)
        self._top_p = torch.full((max_rows,), float(params.top_p), device=device)
        self._finished = torch.zeros(max_rows, dtype=torch.bool, device=device)
        self._eos = torch.tensor(params.stop_token_ids or [], dtype=torch.int32, device=device)

    def launch_step(self, logits: torch.Tensor, step: dict):
        """Launches the draws for the decode batch (no wait): ``logits`` ``[B, V]``, ``step``
        from :meth:`DecodeBatchState.prepare_step` (its first B rows are used). Returns the
        op's :class:`SampleOutput`, still on the device; :meth:`to_host` brings it back."""
        b = logits.shape[0]
        return self._sample(logits, b, step["seeds"][:b], step["draws"][:b], step["generated"][:b],
                            step["max_lengths"][:b])

    def sample_new(self, logits: torch.Tensor, seqs: list[Sequence]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """First draws of new completions (after their prompt's prefill), one row each."""
        def column(values, dtype):
            return torch.tensor(values, dtype=dtype).to(self.device, non_blocking=True)

        generated = [len(s.output_ids) for s in seqs]
        out = self._sample(logits, len(seqs), column([s.seed for s in seqs], torch.long),
                           column(generated, torch.long), column(generated, torch.int32),
                           column([s.max_tokens for s in seqs], torch.int32))
        return self.to_host(out)

    def _sample(self, logits, b, seeds, draws, generated, max_lengths):
        if logits.dtype not in (torch.float32, torch.bfloat16):
            logits = logits.float()
        return sample_tokens(logits, temperature=self._temperature[:b], top_k=self._top_k[:b],
                             top_p=self._top_p[:b], seeds=seeds, positions=draws, lengths=generated,
                             max_lengths=max_lengths, finished=self._finished[:b], eos_ids=self._eos, pad_id=0,
                             check_values=False)

    def to_host(self, out) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Host arrays (tokens int64, logprobs float32, finish reasons int8), each ``[B]``:
        pinned buffers, non-blocking copies, one wait on an event (CUDA)."""
        results = (out.tokens, out.logprobs, out.finish_reason)
        if self.device.type == "cuda":  # gpu-only: tests/test_engine_cuda.py::test_a_decode_step_never_waits_on_the_device
            host = [torch.empty(t.shape, dtype=t.dtype, pin_memory=True) for t in results]
            for dst, src in zip(host, results):
                dst.copy_(src, non_blocking=True)
            done = torch.cuda.Event()
            done.record()
            done.synchronize()
            return _numpy(host)
        return _numpy(results)
