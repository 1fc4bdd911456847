"""The decode batch's persistent state: block table, lengths, next inputs and sampling
parameters of every running sequence, kept in preallocated tensors and updated in place.

Rows ``[0, B)`` are the running sequences in decode order. A sequence gets a row when it joins
(its block-table row and sampling parameters are written once), grows its row by one entry
when it gets a page, and on leaving hands its row to the last row's sequence (one row moved),
so rows stay dense and a step's tensors are the first B rows. Everything a step needs is
derived from these arrays with vectorised numpy, so the host work of a step is O(B) and never
O(B x pages); on CUDA the changes reach the device as a few non-blocking copies from pinned
memory per step, never a synchronisation.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from siri.engine.sequence import Sequence


class DecodeBatchState:
    """Args:
        max_rows: the most sequences decoding at once.
        max_pages: the most pages one sequence can hold (its prompt plus cap, in pages).
        page_size: tokens per page.
        device: where the kernels read the state.
        separate_device_copy: keep device tensors apart from the host arrays and upload
            changes (default: on CUDA). On the CPU the kernels read the host arrays directly;
            tests turn this on there to check the upload logic.

    Device tensors (first B rows are the batch): ``block_table`` ``[max_rows, max_pages]``
    int32, ``seeds`` int64, ``max_lengths`` int32; ``step_i64`` ``[4, max_rows]`` int64 holds
    input ids, positions, slots and generated-token counts (the sampler's draw index);
    ``step_i32`` ``[2 * max_rows + 1]`` int32 holds kv lengths, generated-token counts and the
    step's attention split length (``chunk_tokens``, read by a CUDA graph's attention).
    """

    def __init__(self, max_rows: int, max_pages: int, page_size: int, device: torch.device,
                 separate_device_copy: bool | None = None):
        self.max_rows, self.max_pages, self.page_size = max_rows, max_pages, page_size
        self.device = device
        separate = device.type != "cpu" if separate_device_copy is None else separate_device_copy
        pin = device.type == "cuda"

        def host(shape, dtype):
            return torch.zeros(shape, dtype=dtype, pin_memory=pin)

        self._host = dict(block_table=host((max_rows, max_pages), torch.int32), seeds=host(max_rows, torch.int64),
                          max_lengths=host(max_rows, torch.int32), step_i64=host((4, max_rows), torch.int64),
                          step_i32=host(2 * max_rows + 1, torch.int32))
        self._dev = {name: t.to(device) if separate else t for name, t in self._host.items()}
        self._separate = separate
        np_ = {name: t.numpy() for name, t in self._host.items()}
        self._table, self._seeds, self._caps = np_["block_table"], np_["seeds"], np_["max_lengths"]
        self._ids, self._positions, self._slots, self._draws = np_["step_i64"]
        self._kv_lens, self._generated = np_["step_i32"][:2 * max_rows].reshape(2, max_rows)
        self._chunk_tokens = np_["step_i32"][2 * max_rows:]
        self._chunk_tokens[0] = max_pages * page_size    # until a step plans one: no split
        self._cached = np.zeros(max_rows, dtype=np.int64)  # tokens in the cache, per row
        self._pages_known = [0] * max_rows                  # block-table entries written, per row
        self.seqs: list[Sequence] = []                      # row -> sequence
        self._dirty_rows: set[int] = set()
        self._dirty_cells: list[tuple[int, int]] = []

    # -- membership ----------------------------------------------------------------------

    @property
    def size(self) -> int:
        return len(self.seqs)

    def add(self, seq: Sequence) -> None:
        """``seq`` joins the batch (after its prefill): its next input is its last output token."""
        if len(self.seqs) == self.max_rows:
            raise RuntimeError(f"the decode batch is full ({self.max_rows} rows)")
        if len(seq.pages) > self.max_pages:
            raise RuntimeError(f"a sequence holds {len(seq.pages)} pages, more than the {self.max_pages} planned")
        row = len(self.seqs)
        self.seqs.append(seq)
        seq.row = row
        self._table[row, :len(seq.pages)] = seq.pages
        self._pages_known[row] = len(seq.pages)
        self._seeds[row], self._caps[row] = seq.seed, seq.max_tokens
        self._cached[row] = seq.num_cached
        self._ids[row] = seq.output_ids[-1]
        self._generated[row] = self._draws[row] = len(seq.output_ids)
        self._dirty_rows.add(row)

    def clear(self) -> None:
        """Empty the batch (a new ``generate`` reuses the state; rows left by an interrupted
        call are dropped). The device tensors stay, so graphs captured over them stay valid."""
        for seq in self.seqs:
            seq.row = -1
        self.seqs = []
        self._pages_known = [0] * self.max_rows
        self._dirty_rows.clear()
        self._dirty_cells.clear()

    def remove(self, seq: Sequence) -> None:
        """``seq`` leaves (finished or preempted); the last row moves into its place."""
        row, last = seq.row, len(self.seqs) - 1
        moved = self.seqs.pop()
        if moved is not seq:
            self.seqs[row] = moved
            moved.row = row
            self._table[row, :self._pages_known[last]] = self._table[last, :self._pages_known[last]]
            self._pages_known[row] = self._pages_known[last]
            for array in (self._seeds, self._caps, self._cached, self._ids, self._generated, self._draws):
                array[row] = array[last]
            self._dirty_rows.add(row)
        seq.row = -1

    def sync_pages(self, seq: Sequence) -> None:
        """Record pages ``seq`` got since it joined or the last call (O(new pages)); the
        scheduler calls it when it gives a running sequence a page."""
        row, known = seq.row, self._pages_known[seq.row]
        for col in range(known, len(seq.pages)):
            self._table[row, col] = seq.pages[col]
            self._dirty_cells.append((row, col))
        self._pages_known[row] = len(seq.pages)

    # -- one decode step -----------------------------------------------------------------

    def prepare_step(self, pad_to: int | None = None,
                     split_chunk: Callable[[int, int, int], int] | None = None) -> dict:
        """Fills this step's positions, slots and lengths for rows ``[0, B)`` (and padding rows
        up to ``pad_to``, for a CUDA-graph bucket) and sends every change to the device.
        ``split_chunk(total_kv_len, max_kv_len, rows)``, when given, is the attention's split
        length for this batch (a CUDA graph's plan), written to the ``chunk_tokens`` scalar.
        Returns the device views of the first ``pad_to or B`` rows (:meth:`device_views`) and
        the host facts of the attention plan (``max_kv_len``, ``total_kv_len``)."""
        b, ps = len(self.seqs), self.page_size
        rows = max(b, pad_to or b)
        cached = self._cached[:b]
        self._positions[:b] = cached
        self._slots[:b] = self._table[np.arange(b), cached // ps].astype(np.int64) * ps + cached % ps
        self._kv_lens[:b] = cached + 1
        if rows > b:
            self.pad_rows(b, rows, upload=False)
        longest, total = (int(cached.max()) + 1, int(cached.sum()) + b) if b else (1, 0)
        if split_chunk is not None:
            self._chunk_tokens[0] = split_chunk(total, longest, b)
        self._upload()
        return dict(self.device_views(rows), max_kv_len=longest, total_kv_len=total)

    def pad_rows(self, start: int, end: int, upload: bool = True) -> None:
        """Rows ``[start, end)`` become padding: input 0 at position 0, no cache write (slot
        -1), attending to one token of the row's first page (a valid page id: the table starts
        zeroed and only ever holds pool pages)."""
        for array, value in ((self._ids, 0), (self._positions, 0), (self._slots, -1), (self._kv_lens, 1)):
            array[start:end] = value
        if upload:
            self._upload()

    def device_views(self, rows: int) -> dict:
        """The device tensors of the first ``rows`` rows, by name: input_ids, positions,
        slot_mapping, draws (int64); kv_lens, generated, max_lengths (int32); seeds (int64);
        block_table ``[rows, max_pages]`` int32; chunk_tokens ``[1]`` int32."""
        dev = self._dev
        i64, i32, m = dev["step_i64"], dev["step_i32"], self.max_rows
        return dict(input_ids=i64[0, :rows], positions=i64[1, :rows], slot_mapping=i64[2, :rows],
                    draws=i64[3, :rows], kv_lens=i32[:rows], generated=i32[m:m + rows],
                    chunk_tokens=i32[2 * m:],
                    block_table=dev["block_table"][:rows], seeds=dev["seeds"][:rows],
                    max_lengths=dev["max_lengths"][:rows])

    def finish_step(self, tokens: np.ndarray) -> None:
        """After sampling: each row cached one more token, and its draw is the next input."""
        b = len(self.seqs)
        self._cached[:b] += 1
        self._generated[:b] += 1
        self._draws[:b] += 1
        self._ids[:b] = tokens

    def check(self, num_pages: int) -> None:
        """Host-side validation of what the kernels will trust (O(B)): every row's length
        fits its table, and its pages are pool pages. Raises RuntimeError (an engine bug)."""
        b = len(self.seqs)
        if b == 0:
            return
        need = (self._cached[:b] + self.page_size) // self.page_size  # pages for cached + 1 tokens
        known = np.asarray(self._pages_known[:b])
        if (need > known).any():
            row = int(np.argmax(need > known))
            raise RuntimeError(f"decode row {row} needs {need[row]} pages but has {known[row]}")
        last = self._table[np.arange(b), need - 1]
        if (last < 0).any() or (last >= num_pages).any():
            raise RuntimeError("the block table holds a page outside the pool")

    def _upload(self) -> None:
        if not self._separate:
            self._dirty_rows.clear()
            self._dirty_cells.clear()
            return
        host, dev = self._host, self._dev
        if self._dirty_rows:
            rows = torch.tensor(sorted(self._dirty_rows), dtype=torch.long)
            rows_dev = rows.to(self.device, non_blocking=True)
            for name in ("block_table", "seeds", "max_lengths"):
                dev[name].index_copy_(0, rows_dev, host[name].index_select(0, rows).to(self.device, non_blocking=True))
            self._dirty_rows.clear()
        if self._dirty_cells:
            cells = torch.tensor(self._dirty_cells, dtype=torch.long)
            values = host["block_table"][cells[:, 0], cells[:, 1]]
            index = cells.to(self.device, non_blocking=True)
            dev["block_table"].index_put_((index[:, 0], index[:, 1]), values.to(self.device, non_blocking=True))
            self._dirty_cells.clear()
        for name in ("step_i64", "step_i32"):  # whole (contiguous) buffers: a few KiB
            dev[name].copy_(host[name], non_blocking=True)
