"""The KV page pool: a fixed set of pages, each holding `page_size` tokens of every layer's
K and V, handed out by reference count so completions can share their prompt's pages."""
from __future__ import annotations

import ctypes
import ctypes.util

import torch


class PagePool:
    """Owns the KV caches and the free list of their pages.

    Each layer has ``k[layer]`` and ``v[layer]`` of shape ``[num_pages, page_size, Hkv, D]``
    (siri's NHD layout); one page id addresses the same page in every layer. They are views of
    one allocation, ``[num_layers, 2, num_pages, page_size, Hkv, D]``, so dropping the pool
    returns its memory in one piece (see :func:`release_freed_memory`).
    """

    def __init__(self, num_pages: int, page_size: int, num_layers: int, num_kv_heads: int,
                 head_dim: int, dtype: torch.dtype, device: torch.device):
        if num_pages < 1:
            raise ValueError(f"the KV cache needs at least one page, got num_pages={num_pages}")
        self.storage = torch.zeros((num_layers, 2, num_pages, page_size, num_kv_heads, head_dim), dtype=dtype,
                                   device=device)
        self.k = [self.storage[layer, 0] for layer in range(num_layers)]
        self.v = [self.storage[layer, 1] for layer in range(num_layers)]
        self.num_pages = num_pages
        self.page_size = page_size
        self._refcount = [0] * num_pages
        self._free = list(range(num_pages - 1, -1, -1))  # pop() hands out low ids first

    @staticmethod
    def bytes_per_page(page_size: int, num_layers: int, num_kv_heads: int, head_dim: int,
                       dtype: torch.dtype) -> int:
        return 2 * num_layers * page_size * num_kv_heads * head_dim * torch.empty((), dtype=dtype).element_size()

    @property
    def nbytes(self) -> int:
        return self.storage.numel() * self.storage.element_size()

    @property
    def num_free(self) -> int:
        return len(self._free)

    def allocate(self) -> int | None:
        """A fresh page with reference count 1, or None when the pool is exhausted."""
        if not self._free:
            return None
        page = self._free.pop()
        self._refcount[page] = 1
        return page

    def share(self, page: int) -> int:
        self._refcount[page] += 1
        return page

    def release(self, pages: list[int]) -> None:
        for page in pages:
            self._refcount[page] -= 1
            if self._refcount[page] == 0:
                self._free.append(page)

    def copy_page(self, src: int, dst: int) -> None:
        """Copy-on-write: the partly filled last page of a shared prompt, per completion."""
        self.storage[:, :, dst].copy_(self.storage[:, :, src])


def release_freed_memory(device: torch.device) -> None:
    """Hand memory freed by dropped tensors back to the system: CUDA's caching allocator
    empties its cache; on the CPU glibc trims its heaps (``malloc_trim``), since a freed
    block below its mmap threshold would otherwise stay in the process's resident set."""
    if device.type == "cuda":
        torch.cuda.empty_cache()
    elif device.type == "cpu":
        name = ctypes.util.find_library("c")
        if name:
            try:
                ctypes.CDLL(name).malloc_trim(0)
            except (OSError, AttributeError):   # not glibc
                pass
