"""Logits of the response positions only: the training and logprob passes never compute
(or keep) the LM head's output for prompt or padding positions.

The backbone runs over the padded micro-batch as usual; the hidden states at the positions
that predict response tokens are gathered into ``[N, H]`` rows just before the LM head, so
the head produces ``[N, V]``: a fresh, contiguous, non-leaf tensor. That is exactly what the
fused loss's in-place backward needs (``dlogits`` is written into the logits' own storage),
so the peak holds one ``[N, V]`` buffer, not the ``[B, T, V]`` logits plus a sliced copy.

The gather is a forward pre-hook on the model's output embedding, so the model's own forward
runs unchanged, FSDP2's root hooks included.
"""
from __future__ import annotations

import torch


def response_logits(model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                    response_mask: torch.Tensor) -> torch.Tensor:
    """``[N, V]`` logits (the LM head's dtype) of the positions ``t`` with
    ``response_mask[b, t]`` True, in row-major order; position ``t`` predicts token ``t + 1``.

    Args:
        model: a Hugging Face causal LM (``get_output_embeddings()`` is its LM head).
        input_ids, attention_mask: ``[B, T]`` int64.
        response_mask: ``[B, T-1]`` bool.
    """
    if response_mask.shape != (input_ids.shape[0], input_ids.shape[1] - 1):
        raise ValueError(f"response_mask must have shape [B, T-1] = {[input_ids.shape[0], input_ids.shape[1] - 1]}, "
                         f"got {list(response_mask.shape)}")

    def gather_response_rows(_module, args):
        hidden = args[0]                                   # [B, T, H]
        return (hidden[:, :-1][response_mask],)            # [N, H]

    handle = model.get_output_embeddings().register_forward_pre_hook(gather_response_rows)
    try:
        return model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits
    finally:
        handle.remove()
