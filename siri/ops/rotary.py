"""Rotary position embedding fused with the paged-KV write: ``siri.ops.rotary_append_kv``.

One op per attention layer in place of about a dozen: Hugging Face's
``q * cos + rotate_half(q) * sin`` for the queries and keys, and :func:`append_kv` of the
rotated keys and the values.
"""
from __future__ import annotations

import torch

from siri import _ext  # noqa: F401  (registers torch.ops.siri)


def rotary_append_kv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                     k_cache: torch.Tensor, v_cache: torch.Tensor, slot_mapping: torch.Tensor) -> torch.Tensor:
    """Rotates ``q`` and ``k`` (rotate-half layout), writes rotated ``k`` and ``v`` to the cache.

    Args:
        q: ``[T, Hq * D]`` or ``[T, Hq, D]`` (the q projection's output as it comes), contiguous.
        k, v: ``[T, Hkv * D]`` or ``[T, Hkv, D]``, contiguous; ``Hkv`` and ``D`` are the cache's.
        cos, sin: ``[T, D]``, each token's rotary tables (what the model's ``rotary_emb``
            returns for the token's position, in the model's dtype), contiguous.
        k_cache, v_cache: ``[num_pages, page_size, Hkv, D]``, modified in place.
        slot_mapping: ``[T]`` int64, ``page * page_size + offset``; a slot outside
            ``[0, num_pages * page_size)`` (e.g. ``-1`` for padding) writes nothing.
        Every tensor has the caches' dtype (float32 or bfloat16; float16 too on CUDA) and device.

    Returns:
        ``[T, Hq, D]``: the rotated queries. With ``h = D / 2``, element ``i`` of a head is
        ``x[i] * cos[i] - x[i + h] * sin[i]`` for ``i < h`` and ``x[i] * cos[i] + x[i - h] * sin[i]``
        otherwise, each product and the sum rounded to the dtype as eager torch rounds them, so
        the result is bitwise Hugging Face's ``apply_rotary_pos_emb``.

    No value is read back for checking, so it never synchronises a CUDA stream.
    """
    return torch.ops.siri.rotary_append_kv(q, k, v, cos, sin, k_cache, v_cache, slot_mapping)


@torch.library.register_fake("siri::rotary_append_kv")
def _rotary_append_kv_fake(q, k, v, cos, sin, k_cache, v_cache, slot_mapping):
    head_dim = k_cache.shape[3]
    return q.new_empty((q.shape[0], q.numel() // max(q.shape[0], 1) // head_dim, head_dim))


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """Hugging Face's ``rotate_half``: ``[-x2, x1]`` for the halves ``x1, x2`` of the last dim."""
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def rotary_reference(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Eager ``x * cos + rotate_half(x) * sin`` for ``x`` ``[T, H, D]`` and ``cos``/``sin``
    ``[T, D]``, in ``x``'s dtype (what Hugging Face computes; the op's bitwise reference)."""
    cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
    return x * cos + rotate_half(x) * sin
