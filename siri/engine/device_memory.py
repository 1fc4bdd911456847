"""The one place the engine asks a device how much memory it has free.

The KV pool's default size is ``gpu_memory_fraction x free - CUDA-graph memory``
(:meth:`siri.engine.LLMEngine.pool_pages`). Only the query itself is device-specific, so it
lives here, behind :func:`free_bytes`, and tests replace this function to run the sizing
arithmetic on the CPU exactly as a GPU run executes it.
"""
from __future__ import annotations

import torch

#: The KV pool's default size on the CPU, where no free-memory query is made.
CPU_DEFAULT_POOL_BYTES = 2 << 30


def free_bytes(device: torch.device) -> int | None:
    """Bytes the KV pool may draw on, or None where there is no query (the CPU: the pool then
    takes :data:`CPU_DEFAULT_POOL_BYTES`).

    On CUDA: the device's free memory plus the blocks torch's caching allocator has reserved
    but not handed out (they are free for the pool too)."""
    if device.type == "cuda":  # gpu-only: tests/test_engine_cuda.py::test_default_pool_with_graphs_matches_eager
        free, _ = torch.cuda.mem_get_info(device)
        return free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    return None
