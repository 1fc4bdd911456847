"""CUDA-graph decode: the decode forward captured once per batch-size bucket and replayed
every step, so a step launches one graph instead of ~18 kernels per layer from Python.

A step of B sequences runs the smallest bucket >= B; rows [B, bucket) are padding (slot -1:
no cache write; kv_len 1 over a valid page; their logits are ignored). The graph reads the
batch state's persistent device tensors, so a replay only needs the state's per-step upload.
The attention is planned for the graph's capacity (``max_kv_len`` = the block table's width in
tokens), an upper bound of every step's lengths, so one plan serves every replay.

On the CPU there are no graphs: ``capture=False`` runs the same padded, bucketed forward
eagerly, which is what the CPU tests check (outputs equal to the unpadded decode).
"""
from __future__ import annotations

import torch

from siri._ext import _C
from siri.engine.batch_state import DecodeBatchState
from siri.engine.model_runner import Batch, ModelRunner
from siri.model_shape import ModelShape


def batch_buckets(max_rows: int) -> list[int]:
    """1, 2, 4, 8, then multiples of 16 up to ``max_rows`` (vLLM's spacing, about 20 graphs
    for 256 rows; padding wastes at most 15 rows on large batches)."""
    buckets = [b for b in (1, 2, 4, 8) if b < max_rows]
    buckets += list(range(16, max_rows, 16))
    return buckets + [max_rows]


#: Bound of one attention call's split partials (``kAttentionPartialBytes`` in
#: csrc/include/siri/paged_attention.h, which the kernels' split planner obeys).
ATTENTION_PARTIAL_BYTES: int = _C.ATTENTION_PARTIAL_BYTES


def graph_memory_bytes(shape: ModelShape, element_bytes: int, max_rows: int) -> int:
    """Upper estimate of the graphs' private memory: the activations of one decode forward at
    the largest bucket (one layer's worth live at a time, plus the logits and their fp32
    copy), doubled for the allocator's rounding, plus one layer's attention split partials
    (the graphs are planned for the block table's full width, so they split). The engine takes
    it out of the KV pool's budget; ``siri train --dry-run`` lists it."""
    q_dim = shape.num_heads * shape.head_dim
    width = 4 * shape.hidden_size + 2 * q_dim + 2 * shape.kv_dim + 3 * shape.intermediate_size
    logits = shape.vocab_size * (element_bytes + 4)
    return 2 * max_rows * (width * element_bytes + logits) + ATTENTION_PARTIAL_BYTES


class DecodeGraphs:
    """Decode forwards over ``state``'s device tensors for each bucket up to ``max_rows``."""

    def __init__(self, runner: ModelRunner, k_caches: list[torch.Tensor], v_caches: list[torch.Tensor],
                 state: DecodeBatchState, max_rows: int, capture: bool):
        self.runner, self.k_caches, self.v_caches, self.state = runner, k_caches, v_caches, state
        self.buckets = batch_buckets(min(max_rows, state.max_rows))
        self.capture = capture
        self._graphs: dict[int, torch.cuda.CUDAGraph] = {}
        self._logits: dict[int, torch.Tensor] = {}
        if capture:
            self._capture_all()

    def bucket(self, rows: int) -> int:
        return next(b for b in self.buckets if b >= rows)

    def _batch(self, bucket: int) -> Batch:
        view = self.state.device_views(bucket)
        capacity = self.state.max_pages * self.state.page_size
        return Batch(view["input_ids"], view["positions"], view["slot_mapping"], view["block_table"],
                     view["kv_lens"], None, capacity, bucket * capacity, None)

    def _capture_all(self) -> None:
        self.state.pad_rows(0, self.state.max_rows)  # warm-up and capture write nothing to the cache
        pool = torch.cuda.graph_pool_handle()
        for bucket in reversed(self.buckets):  # largest first: the others reuse its memory
            batch = self._batch(bucket)
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(2):
                    self.runner.forward(batch, self.k_caches, self.v_caches)
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=pool):
                self._logits[bucket] = self.runner.forward(batch, self.k_caches, self.v_caches)
            self._graphs[bucket] = graph

    def forward(self, rows: int) -> torch.Tensor:
        """``[rows, V]`` logits of the batch state's first ``rows`` rows, whose step was
        prepared with ``pad_to=self.bucket(rows)``."""
        bucket = self.bucket(rows)
        if self.capture:
            self._graphs[bucket].replay()
            return self._logits[bucket][:rows]
        return self.runner.forward(self._batch(bucket), self.k_caches, self.v_caches)[:rows]
