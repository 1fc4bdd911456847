"""Attention over a paged KV cache: ``siri.ops.paged_decode_attention``,
``siri.ops.paged_prefill_attention``, ``siri.ops.paged_attention_run`` and ``siri.ops.append_kv``,
plus the split plans ``paged_attention_run`` makes (:func:`attention_split_plan`,
:func:`graph_max_splits`) for the engine's CUDA-graph replays.

The cache is a pool of pages, ``k_cache``/``v_cache`` of shape ``[num_pages, page_size, Hkv, D]``
(NHD). Sequence ``b`` owns the pages listed in ``block_table[b]`` (int32), in order: its token
``t`` lives in page ``block_table[b, t // page_size]`` at offset ``t % page_size``. A token is
written to the cache through its slot, ``page * page_size + offset`` (int64, ``-1`` = skip).
"""
from __future__ import annotations

import math
from typing import Optional

import torch

from siri._ext import _C  # loading it registers torch.ops.siri


def paged_decode_attention(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                           block_table: torch.Tensor, seq_lens: torch.Tensor, *,
                           scale: Optional[float] = None, cpu_bf16_dot: bool = True) -> torch.Tensor:
    """One decode step of attention for a batch of sequences over their pages.

    Args:
        q: ``[B, Hq, D]`` query of the current token of each sequence; float32 or bfloat16
            (float16 too on CUDA), contiguous.
        k_cache, v_cache: ``[num_pages, page_size, Hkv, D]``, the dtype of ``q``, contiguous.
            ``Hq`` must be a multiple of ``Hkv`` (grouped-query attention: query head ``h``
            reads KV head ``h // (Hq // Hkv)``). ``D`` is one of 64, 80, 96, 128, 256
            (``siri._C.SUPPORTED_HEAD_DIMS``).
        block_table: ``[B, max_pages]`` int32; the first ``ceil(seq_lens[b] / page_size)``
            entries of row ``b`` must be block ids in ``[0, num_pages)``, the rest are ignored.
        seq_lens: ``[B]`` int32, each in ``[1, max_pages * page_size]``: tokens in the cache
            for that sequence, the current one included (append it first with :func:`append_kv`).
        scale: softmax scale, default ``1 / sqrt(D)``.
        cpu_bf16_dot: on the CPU, bf16 caches use bf16 dot products (AVX512-BF16, fp32
            accumulation) when the build targets a CPU that has them
            (``siri.build_info()["simd"] == "AVX512+BF16"``); False forces the fp32 arithmetic
            (bf16 rows widened once per tile) that every other CPU runs. Ignored on CUDA.

    Returns:
        ``[B, Hq, D]`` in the dtype of ``q``: ``out[b, h] = softmax(q[b, h] . K_b^T * scale) . V_b``
        over the first ``seq_lens[b]`` tokens of sequence ``b``. Accumulation is float32.

    Raises:
        ValueError: mismatched shapes, non-contiguous tensors, a block id outside the cache,
            ``seq_lens`` outside ``[1, capacity]``. TypeError: unsupported or mismatched dtypes.
    """
    return torch.ops.siri.paged_decode_attention(q, k_cache, v_cache, block_table, seq_lens,
                                                 _float_or_none(scale), bool(cpu_bf16_dot))


def paged_prefill_attention(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                            block_table: torch.Tensor, seq_lens: torch.Tensor,
                            cu_seqlens: torch.Tensor, *,
                            scale: Optional[float] = None, query_tiled: bool = True,
                            cpu_bf16_dot: bool = True) -> torch.Tensor:
    """Causal attention of each sequence's new tokens against its pages (varlen prefill).

    Sequence ``b``'s new tokens are ``q[cu_seqlens[b]:cu_seqlens[b+1]]``; they are the last
    ``n_b = cu_seqlens[b+1] - cu_seqlens[b]`` of its ``seq_lens[b]`` cached tokens, so their K/V
    must already be in the cache (:func:`append_kv`). Its ``j``-th new token attends to the
    first ``seq_lens[b] - n_b + j + 1`` tokens. Earlier tokens may live in pages shared with
    other sequences (a prompt prefilled once for its G samples) or be a prefix whose KV was kept
    (recompute after preemption: only the tail is new).

    Args:
        q: ``[T, Hq, D]``, all sequences' new tokens packed; dtype as in
            :func:`paged_decode_attention`.
        k_cache, v_cache, block_table: as in :func:`paged_decode_attention`.
        seq_lens: ``[B]`` int32, each in ``[n_b, max_pages * page_size]``.
        cu_seqlens: ``[B + 1]`` int32, non-decreasing, from 0 to ``T``.
        scale: softmax scale, default ``1 / sqrt(D)``.
        query_tiled: attend a sequence's new tokens a tile of queries at a time (below); False
            selects the per-query path, for comparison.
        cpu_bf16_dot: as in :func:`paged_decode_attention`.

    Returns:
        ``[T, Hq, D]`` in the dtype of ``q``.

    A sequence's new tokens are attended a tile of queries at a time (CPU: 64 query rows, a
    row being one token's query head; CUDA: 64 tokens, 32 for head_dim 256), each K/V tile read
    once per query tile. ``query_tiled=False`` selects the per-query path instead, which
    streams every query's visible keys on its own (O(sum of visible lengths) reads); on CUDA
    that path also serves calls whose plan splits the keys (a few new tokens after a long
    prefix).
    """
    return torch.ops.siri.paged_prefill_attention(q, k_cache, v_cache, block_table, seq_lens,
                                                  cu_seqlens, _float_or_none(scale), bool(query_tiled),
                                                  bool(cpu_bf16_dot))


def paged_attention_run(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                        block_table: torch.Tensor, kv_lens: torch.Tensor, query_seq: Optional[torch.Tensor],
                        *, max_kv_len: int, total_kv_len: int, scale: Optional[float] = None,
                        chunk_tokens: Optional[torch.Tensor] = None, query_tiled: bool = True,
                        cpu_bf16_dot: bool = True) -> torch.Tensor:
    """Paged attention for a caller that built the batch: the engine's sync-free path.

    Like flashinfer's plan/run split: the caller knows its batch on the host, so it passes the
    two facts the split planner needs (the longest and the total ``kv_len``) and the op reads
    no device memory to plan or to validate. It can then run in every layer of a decode step
    with no device-to-host copy, and be captured in a CUDA graph (plan for the graph's
    capacity: ``max_kv_len`` is an upper bound, any actual ``kv_lens`` below it is fine).

    Args:
        q: ``[N, Hq, D]``, one query per row; dtype and layout as in :func:`paged_decode_attention`.
        k_cache, v_cache, block_table: as in :func:`paged_decode_attention`.
        kv_lens: ``[N]`` int32: query ``i`` attends to the first ``kv_lens[i]`` tokens of its
            sequence's pages (for a prefill token: its causal prefix, itself included).
        query_seq: ``[N]`` int32, the ``block_table`` row of each query, or None for one query
            per row (decode). Consecutive queries on one row whose ``kv_lens`` rise by one (a
            prefill's tokens, as the engine packs them) are attended together by the
            query-tiled kernel (see :func:`paged_prefill_attention`); any other order is
            correct too.
        max_kv_len: an upper bound of ``kv_lens`` in ``[1, max_pages * page_size]``.
        total_kv_len: the sum of ``kv_lens`` (or an upper bound; it only sizes the splits).
            Unused with ``chunk_tokens``.
        scale: softmax scale, default ``1 / sqrt(D)``.
        chunk_tokens: ``[1]`` int32 on ``k_cache``'s device, or None. For a CUDA graph captured
            once for a capacity: the split length is read from this tensor when the kernels run
            (on CUDA with no host read), so the engine writes the real batch's chunk
            (:func:`attention_split_plan`) before each replay. The partial buffers and the grid
            are then sized by :func:`graph_max_splits` for ``max_kv_len`` as the capacity. Each
            query uses ``ceil(kv_len / chunk)`` splits; where that passes ``max_splits`` its
            chunk grows to ``ceil(kv_len / max_splits)``, rounded up to a multiple of 16. A
            value that is not a multiple of 16 is rounded up to one, and a value below 16 reads
            as 16 (on CUDA also 0 and negative values; on the CPU a value < 1 is an error). On
            the CPU all queries of the call share one chunk, the value raised so the longest
            query fits. The result is the same as without ``chunk_tokens`` (to fp32 rounding).
        query_tiled: False sends every query to the per-query kernel, runs included (see
            :func:`paged_prefill_attention`). Decided per call: a CUDA graph keeps the choice
            it was captured with.
        cpu_bf16_dot: as in :func:`paged_decode_attention`.

    Returns:
        ``[N, Hq, D]`` in the dtype of ``q``.

    Trust: on CUDA, ``kv_lens``, ``query_seq`` and the block ids are not read back for checking
    (that is the point); they must satisfy the rules above, as the engine's host-side batch
    state guarantees. On the CPU they are host memory and are checked, at no cost. Shapes,
    dtypes and devices are always checked. The CUDA kernels stay memory-safe for any
    ``kv_lens`` (not for bad ``query_seq`` or block ids): a query never reads keys past its
    block-table row (``kv_len`` is clamped to ``max_pages * page_size``) and never uses more
    than ``max_splits`` splits (its chunk grows, as above), so a ``kv_len`` above
    ``max_kv_len`` gives a wrong row, not an invalid access; one below 1 gives NaN.
    """
    return torch.ops.siri.paged_attention_run(q, k_cache, v_cache, block_table, kv_lens, query_seq,
                                              int(max_kv_len), int(total_kv_len), _float_or_none(scale),
                                              chunk_tokens, bool(query_tiled), bool(cpu_bf16_dot))


def _device_units(device, units):
    """(device kind, parallel units): a torch.device or "cpu"/"cuda"[:i]; units default to the
    CUDA device's SM count or torch.get_num_threads() on the CPU (what the op plans with)."""
    dev = torch.device(device)
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be a CPU or CUDA device, got {device!r}")
    if units is None:
        if dev.type == "cpu":
            units = torch.get_num_threads()
        else:
            if not torch.cuda.is_available():
                raise ValueError("units must be given for device 'cuda' when no CUDA device is visible")
            units = _cuda_sm_count(dev)  # gpu-only: tests/test_attention_graph_plan.py::test_default_units_on_cuda
    return dev.type, int(units)


def _cuda_sm_count(dev: torch.device) -> int:
    index = dev.index if dev.index is not None else torch.cuda.current_device()  # gpu-only: tests/test_attention_graph_plan.py::test_default_units_on_cuda
    return torch.cuda.get_device_properties(index).multi_processor_count  # gpu-only: tests/test_attention_graph_plan.py::test_default_units_on_cuda


def attention_split_plan(total_kv_len: int, max_kv_len: int, num_queries: int, num_q_heads: int,
                         num_kv_heads: int, head_dim: int, *, device, units: Optional[int] = None,
                         prefill: bool = False) -> tuple[int, int]:
    """The split plan :func:`paged_attention_run` makes without ``chunk_tokens``.

    For these host facts (the sum and the longest ``kv_len`` of ``num_queries`` queries of
    ``num_q_heads`` heads over ``num_kv_heads`` KV heads of ``head_dim``), on a device of kind
    ``device`` (a ``torch.device`` or ``"cpu"`` / ``"cuda"``): the same C++ planner the op runs.

    Args:
        units: the device's size: SMs on CUDA (default: that device's count), threads on the
            CPU (default: ``torch.get_num_threads()``). Given explicitly, any device size can be
            planned anywhere (a CPU test can ask for an H200's 132 SMs).
        prefill: the call passes ``query_seq`` (the CUDA limits differ: see the planner).

    Returns:
        ``(chunk_tokens, max_splits)``: queries longer than ``chunk_tokens`` are split into
        chunks of that many tokens, and the longest takes ``max_splits``. Writing this
        ``chunk_tokens`` into a graph's chunk tensor makes the replay split each query as the
        eager call would, as long as ``max_splits <= graph_max_splits(...)`` for the graph's
        rows (plan with ``num_queries`` = the graph's rows for that).
    """
    kind, units = _device_units(device, units)
    chunk, splits = _C.attention_split_plan(int(total_kv_len), int(max_kv_len), int(num_queries), int(num_q_heads),
                                            int(num_kv_heads), int(head_dim), kind, units, bool(prefill))
    return int(chunk), int(splits)


def graph_max_splits(capacity: int, num_queries: int, num_q_heads: int, num_kv_heads: int, head_dim: int, *,
                     device, units: Optional[int] = None, prefill: bool = False) -> int:
    """The ``max_splits`` :func:`paged_attention_run` allocates (partial buffers, and grid.z on
    CUDA) when called with ``chunk_tokens`` and ``max_kv_len=capacity`` for ``num_queries``
    rows: ``ceil(capacity / min_chunk)`` (the device's shortest chunk: 256 tokens on CUDA, 512
    on the CPU), at most as many splits as fit the partial bound (``siri._C.ATTENTION_PARTIAL_BYTES``)
    for ``num_queries`` rows, and at least 1. Every :func:`attention_split_plan` for the same
    ``num_queries``, a longest ``kv_len <= capacity`` and the same device has ``max_splits`` no
    larger, so a replay given its ``chunk_tokens`` splits every query exactly as eager does.
    ``device``, ``units`` and ``prefill`` as in :func:`attention_split_plan`."""
    kind, units = _device_units(device, units)
    return int(_C.graph_max_splits(int(capacity), int(num_queries), int(num_q_heads), int(num_kv_heads),
                                   int(head_dim), kind, units, bool(prefill)))


def append_kv(k: torch.Tensor, v: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
              slot_mapping: torch.Tensor) -> None:
    """Writes ``k[t]`` and ``v[t]`` into slot ``slot_mapping[t]`` of the caches, in place.

    Args:
        k, v: ``[T, Hkv, D]``, the dtype of the caches, contiguous.
        k_cache, v_cache: ``[num_pages, page_size, Hkv, D]``, modified in place.
        slot_mapping: ``[T]`` int64, ``page * page_size + offset`` in
            ``[0, num_pages * page_size)``, or ``-1`` to skip the token (padding). Two tokens
            with the same slot leave either one's values.
    """
    torch.ops.siri.append_kv(k, v, k_cache, v_cache, slot_mapping)


def _float_or_none(scale):
    return None if scale is None else float(scale)


@torch.library.register_fake("siri::paged_decode_attention")
def _paged_decode_attention_fake(q, k_cache, v_cache, block_table, seq_lens, scale=None, cpu_bf16_dot=True):
    torch._check(q.dim() == 3, lambda: "q must be 3-D")
    return torch.empty_like(q)


@torch.library.register_fake("siri::paged_prefill_attention")
def _paged_prefill_attention_fake(q, k_cache, v_cache, block_table, seq_lens, cu_seqlens,
                                  scale=None, query_tiled=True, cpu_bf16_dot=True):
    torch._check(q.dim() == 3, lambda: "q must be 3-D")
    return torch.empty_like(q)


@torch.library.register_fake("siri::paged_attention_run")
def _paged_attention_run_fake(q, k_cache, v_cache, block_table, kv_lens, query_seq, max_kv_len, total_kv_len,
                              scale=None, chunk_tokens=None, query_tiled=True, cpu_bf16_dot=True):
    torch._check(q.dim() == 3, lambda: "q must be 3-D")
    return torch.empty_like(q)


@torch.library.register_fake("siri::append_kv")
def _append_kv_fake(k, v, k_cache, v_cache, slot_mapping):
    return None


def _gather_positions(cache: torch.Tensor, pages: torch.Tensor, length: int) -> torch.Tensor:
    """``[length, Hkv, D]`` float64: the first ``length`` tokens of a sequence's pages."""
    page_size = cache.shape[1]
    t = torch.arange(length)
    return cache[pages.long()[t // page_size], t % page_size].double()


def _attend_reference(q, k, v, scale, causal_offset=None):
    """q ``[n, Hq, D]``, k/v ``[L, Hkv, D]`` float64 -> ``[n, Hq, D]``; query j sees keys
    ``< causal_offset + j + 1`` when causal_offset is given, else all."""
    group = q.shape[1] // k.shape[1]
    k = k.repeat_interleave(group, dim=1)
    v = v.repeat_interleave(group, dim=1)
    scores = torch.einsum("nhd,lhd->hnl", q, k) * scale
    if causal_offset is not None:
        visible = torch.arange(k.shape[0])[None, :] <= causal_offset + torch.arange(q.shape[0])[:, None]
        scores = scores.masked_fill(~visible, float("-inf"))
    return torch.einsum("hnl,lhd->nhd", scores.softmax(dim=-1), v)


def paged_decode_attention_reference(q, k_cache, v_cache, block_table, seq_lens, *, scale=None):
    """Float64 reference of :func:`paged_decode_attention` (CPU; for tests)."""
    q, k_cache, v_cache = q.cpu(), k_cache.cpu(), v_cache.cpu()
    scale = 1 / math.sqrt(q.shape[-1]) if scale is None else scale
    out = []
    for b, length in enumerate(seq_lens.tolist()):
        k = _gather_positions(k_cache, block_table[b].cpu(), length)
        v = _gather_positions(v_cache, block_table[b].cpu(), length)
        out.append(_attend_reference(q[b:b + 1].double(), k, v, scale))
    return torch.cat(out) if out else q.double()


def paged_prefill_attention_reference(q, k_cache, v_cache, block_table, seq_lens, cu_seqlens, *,
                                      scale=None):
    """Float64 reference of :func:`paged_prefill_attention` (CPU; for tests)."""
    q, k_cache, v_cache = q.cpu(), k_cache.cpu(), v_cache.cpu()
    scale = 1 / math.sqrt(q.shape[-1]) if scale is None else scale
    cu = cu_seqlens.tolist()
    out = []
    for b, length in enumerate(seq_lens.tolist()):
        k = _gather_positions(k_cache, block_table[b].cpu(), length)
        v = _gather_positions(v_cache, block_table[b].cpu(), length)
        n = cu[b + 1] - cu[b]
        out.append(_attend_reference(q[cu[b]:cu[b + 1]].double(), k, v, scale, length - n))
    return torch.cat(out) if out else q.double()
