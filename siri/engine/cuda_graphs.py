"""CUDA-graph decode: the decode forward captured once per batch-size bucket and replayed
every step, so a step launches one graph instead of ~18 kernels per layer from Python.

A step of B sequences runs the smallest bucket >= B; rows [B, bucket) are padding (slot -1:
no cache write; kv_len 1 over a valid page; their logits are ignored). The graph reads the
batch state's persistent device tensors, so a replay only needs the state's per-step upload.
The attention is captured for the block table's capacity (``max_kv_len`` = its width in
tokens, an upper bound of every step's lengths); the split length it uses is the batch
state's ``chunk_tokens`` device scalar, which each step writes from the real batch, so a
replay splits a skewed batch as the eager call would.

Everything here is device-agnostic except :class:`CudaGraphCapture`'s three calls (capture on
a side stream, ``torch.cuda.graph``, ``replay``). On the CPU, :class:`EagerCapture` stands in:
"capture" runs the forward once and keeps its output tensor, "replay" runs it again into that
same tensor. So the CPU suite executes the bucketing, the padding, the warm-up, the stored
per-bucket outputs and replay's slicing exactly as a GPU run does.

Graphs live as long as the KV pool and the batch state they read: :class:`DecodeGraphs`
captures the buckets a ``generate`` needs that it has not captured yet, and a later call
reuses them.
"""
from __future__ import annotations

from typing import Any, Callable, Protocol

import torch

from siri._ext import _C
from siri.engine.batch_state import DecodeBatchState
from siri.engine.model_runner import Batch, ModelRunner
from siri.models.shape import ModelShape
from siri.ops.paged_attention import attention_split_plan, graph_max_splits


def batch_buckets(max_rows: int) -> list[int]:
    """1, 2, 4, 8, then multiples of 16 up to ``max_rows`` (vLLM's spacing, about 20 graphs
    for 256 rows; padding wastes at most 15 rows on large batches)."""
    buckets = [b for b in (1, 2, 4, 8) if b < max_rows]
    buckets += list(range(16, max_rows, 16))
    return buckets + [max_rows]


def buckets_for(rows: int, max_rows: int) -> list[int]:
    """The buckets a batch of up to ``rows`` rows uses, from the grid up to ``max_rows``: every
    grid bucket below ``rows`` and the first one that holds it (so a later call of a similar
    size finds its bucket already captured)."""
    grid = batch_buckets(max_rows)
    top = next(b for b in grid if b >= min(rows, max_rows))
    return [b for b in grid if b <= top]


#: Bound of one attention call's split partials (``kAttentionPartialBytes`` in
#: csrc/include/siri/paged_attention.h, which the kernels' split planner obeys).
ATTENTION_PARTIAL_BYTES: int = _C.ATTENTION_PARTIAL_BYTES


def graph_logits_bytes(vocab_size: int, element_bytes: int, max_rows: int) -> int:
    """The logits the graphs hold, in the model's dtype: the one ``[max_rows, V]`` output every
    bucket's graph writes into, plus the LM head's own ``[max_rows, V]`` result inside the
    largest graph (the graphs share one memory pool, and a graph's temporaries are free
    again when it ends, so the smaller buckets reuse it). Keeping each bucket's result
    instead cost the sum over the buckets: 32x as much at 1,024 rows."""
    return 2 * max_rows * vocab_size * element_bytes


def graph_memory_bytes(shape: ModelShape, element_bytes: int, max_rows: int) -> int:
    """Upper estimate of the graphs' memory for buckets up to ``max_rows``: their logits
    (:func:`graph_logits_bytes`), plus the activations of one decode
    forward at the largest bucket (one layer's worth live at a time; doubled for the
    allocator's rounding), plus one attention call's split partials (the graphs are captured
    for the block table's full width, so they may split). The engine takes it out of the KV
    pool's budget; ``siri train --dry-run`` lists it."""
    q_dim = shape.num_heads * shape.head_dim
    width = 4 * shape.hidden_size + 2 * q_dim + 2 * shape.kv_dim + 3 * shape.intermediate_size
    activations = 2 * max_rows * width * element_bytes
    return graph_logits_bytes(shape.vocab_size, element_bytes, max_rows) + activations + ATTENTION_PARTIAL_BYTES


def replay_chunk_tokens(total_kv_len: int, max_kv_len: int, rows: int, *, bucket: int, capacity: int,
                        num_q_heads: int, num_kv_heads: int, head_dim: int, device, units: int | None = None) -> int:
    """The attention split length a graph replay of ``rows`` real rows (padded to ``bucket``,
    captured for ``capacity`` tokens) writes to its ``chunk_tokens`` scalar: the chunk the eager
    call would plan for the same batch (``rows`` queries, these host facts), so a skewed batch
    is split alike. Where the eager plan's splits exceed what the captured partial buffer holds
    (``graph_max_splits`` for ``bucket`` rows) the chunk grows until the longest fits, as the
    kernel would clamp it anyway."""
    heads = (num_q_heads, num_kv_heads, head_dim)
    chunk, splits = attention_split_plan(total_kv_len, max_kv_len, max(rows, 1), *heads, device=device, units=units)
    room = graph_max_splits(capacity, bucket, *heads, device=device, units=units)
    if splits > room:
        fitting = -(-max_kv_len // room)         # the shortest chunk whose splits fit the room
        chunk = -(-fitting // 16) * 16            # chunks are multiples of 16 tokens
    return chunk


class GraphCapture(Protocol):
    """How a forward is captured and replayed on one kind of device."""

    def warm_up(self, forward: Callable[[], torch.Tensor]) -> None:
        """Run ``forward`` before capture (CUDA: lazy initialisation and autotuning happen
        outside the graph)."""

    def capture(self, forward: Callable[[], torch.Tensor]) -> tuple[Any, torch.Tensor]:
        """Record ``forward``; returns a handle and the output tensor that replays refill."""

    def replay(self, handle: Any, output: torch.Tensor) -> None:
        """Run the recorded forward again; it writes its result into ``output`` (the tensor it
        returned at capture)."""


class EagerCapture:
    """The CPU's stand-in for CUDA graphs: the recorded "graph" is the forward itself, and a
    replay runs it again (it writes into the output it returned at capture)."""

    def warm_up(self, forward: Callable[[], torch.Tensor]) -> None:
        forward()

    def capture(self, forward: Callable[[], torch.Tensor]) -> tuple[Any, torch.Tensor]:
        return forward, forward()

    def replay(self, handle: Any, output: torch.Tensor) -> None:
        handle()


class CudaGraphCapture:  # gpu-only: tests/test_engine_cuda.py::test_graphs_are_reused_across_generate_calls
    """``torch.cuda.graph`` capture into one memory pool shared by all buckets (captured
    largest first, so the smaller ones reuse its memory)."""

    def __init__(self) -> None:
        self._pool = torch.cuda.graph_pool_handle()

    def warm_up(self, forward: Callable[[], torch.Tensor]) -> None:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(2):
                forward()
        torch.cuda.current_stream().wait_stream(side)

    def capture(self, forward: Callable[[], torch.Tensor]) -> tuple[Any, torch.Tensor]:
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self._pool):
            output = forward()
        return graph, output

    def replay(self, handle: Any, output: torch.Tensor) -> None:
        handle.replay()


def graph_capture_for(device: torch.device) -> GraphCapture:
    """CUDA graphs on a CUDA device; the eager stand-in elsewhere."""
    return CudaGraphCapture() if device.type == "cuda" else EagerCapture()


class DecodeGraphs:
    """Decode forwards over ``state``'s device tensors, one per bucket, captured on demand by
    :meth:`ensure` and kept: they stay valid while the KV caches and ``state`` live.

    Attributes:
        buckets: the captured batch sizes, ascending.
        captures: how many forwards were captured in all (a counter for tests and logs).
    """

    def __init__(self, runner: ModelRunner, k_caches: list[torch.Tensor], v_caches: list[torch.Tensor],
                 state: DecodeBatchState, capture: GraphCapture | None = None):
        self.runner, self.k_caches, self.v_caches, self.state = runner, k_caches, v_caches, state
        self._capture = capture if capture is not None else graph_capture_for(runner.device)
        self._graphs: dict[int, Any] = {}
        self._output: torch.Tensor | None = None      # [state.max_rows, V]: every bucket's logits
        self.buckets: list[int] = []
        self.captures = 0
        self._heads = dict(num_q_heads=runner.num_heads, num_kv_heads=runner.num_kv_heads, head_dim=runner.head_dim)

    def ensure(self, max_rows: int) -> int:
        """Capture the buckets a batch of up to ``max_rows`` rows uses (:func:`buckets_for`, on
        the grid up to the state's rows) that are not captured yet; returns how many were
        captured. Call it while the batch is empty: the state's rows are
        padded for the capture."""
        if self.state.size:
            raise RuntimeError("CUDA graphs can only be captured while the decode batch is empty")
        missing = [b for b in buckets_for(max_rows, self.state.max_rows) if b not in self._graphs]
        if not missing:
            return 0
        self.state.pad_rows(0, self.state.max_rows)  # warm-up and capture write nothing to the cache
        if self._output is None:  # allocated outside the graphs' pool, so no graph's memory stays live
            self._output = torch.empty(self.state.max_rows, self.runner.vocab_size, dtype=self.runner.dtype,
                                       device=self.runner.device)
        for bucket in reversed(missing):  # largest first: the others reuse its memory
            batch, output = self._batch(bucket), self._output[:bucket]

            def forward(batch: Batch = batch, output: torch.Tensor = output) -> torch.Tensor:
                return output.copy_(self.runner.forward(batch, self.k_caches, self.v_caches))

            self._capture.warm_up(forward)
            self._graphs[bucket], _ = self._capture.capture(forward)
            self.captures += 1
        self.buckets = sorted(self._graphs)
        return len(missing)

    def bucket(self, rows: int) -> int:
        """The smallest captured bucket that holds ``rows`` rows."""
        for bucket in self.buckets:
            if bucket >= rows:
                return bucket
        raise RuntimeError(f"no CUDA graph captured for {rows} rows (largest bucket: "
                           f"{self.buckets[-1] if self.buckets else 0}); call ensure() first")

    def split_chunk(self, total_kv_len: int, max_kv_len: int, rows: int) -> int:
        """This step's attention split length (:func:`replay_chunk_tokens`), for
        :meth:`DecodeBatchState.prepare_step`."""
        return replay_chunk_tokens(total_kv_len, max_kv_len, rows, bucket=self.bucket(rows),
                                   capacity=self.state.max_pages * self.state.page_size,
                                   device=self.runner.device, **self._heads)

    def stored_logits_bytes(self) -> int:
        """Bytes of the output buffer the graphs share (half of :func:`graph_logits_bytes`)."""
        return 0 if self._output is None else self._output.numel() * self._output.element_size()

    def _batch(self, bucket: int) -> Batch:
        view = self.state.device_views(bucket)
        capacity = self.state.max_pages * self.state.page_size
        return Batch(view["input_ids"], view["positions"], view["slot_mapping"], view["block_table"],
                     view["kv_lens"], None, capacity, bucket * capacity, None, view["chunk_tokens"])

    def forward(self, rows: int) -> torch.Tensor:
        """``[rows, V]`` logits of the batch state's first ``rows`` rows, whose step was
        prepared with ``pad_to=self.bucket(rows)``. The tensor is the graphs' shared output:
        read it before the next replay."""
        bucket = self.bucket(rows)
        assert self._output is not None, "ensure() captured the bucket"
        self._capture.replay(self._graphs[bucket], self._output[:bucket])
        return self._output[:rows]
