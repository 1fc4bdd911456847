"""Continuous batching over the page pool: which prompts to prefill, which sequences decode,
and whom to preempt when pages run out.

Policy (vLLM's, simplified): waiting work is admitted first-come first-served while pages
and sequence slots allow, keeping one free page for every running sequence that needs a new
page at its next token (so admission does not cause the next step's preemption); a decode
step gives every running sequence a slot for its next token, and when the pool is empty the
running sequence of lowest priority is preempted: its pages are freed and it is later
recomputed from its tokens, so results never change and never get cut. Priority is admission
order, except that a preempted sequence comes back with the highest priority: its recompute
is not wasted on an immediate second preemption while others run (no preemption thrash).
"""
from __future__ import annotations

import bisect
from collections import deque
from dataclasses import dataclass

from siri.engine.batch_state import DecodeBatchState
from siri.engine.page_pool import PagePool
from siri.engine.sequence import Sequence


@dataclass
class PrefillItem:
    """Tokens to prefill into ``sequences[0]``'s pages. A new prompt: all its completions,
    which then share the pages. A preempted sequence: just itself (``recompute``)."""

    sequences: list[Sequence]
    tokens: list[int]
    recompute: bool

    def pages_needed(self, page_size: int) -> int:
        full, partial = divmod(len(self.tokens), page_size)
        # the partly filled last page is copied for each completion (copy on write)
        return full + (len(self.sequences) if partial else 0)


def _priority(seq: Sequence) -> int:
    """Sort key of ``Scheduler.running``; set when the sequence is first admitted."""
    assert seq.priority is not None, "a running sequence has been admitted"
    return seq.priority


class Scheduler:
    """``running`` is kept in priority order (highest first; preemption takes the last);
    ``batch`` (the decode batch's persistent state) is told when a sequence starts or stops
    running."""

    def __init__(self, pool: PagePool, max_num_seqs: int, max_prefill_tokens: int, batch: DecodeBatchState):
        self.pool = pool
        self.max_num_seqs = max_num_seqs
        self.max_prefill_tokens = max_prefill_tokens
        self.batch = batch
        self.waiting: deque[PrefillItem] = deque()
        self.running: list[Sequence] = []
        self.num_preemptions = 0
        self._admitted = 0   # priority of the next newly admitted sequence (counts up)
        self._promoted = 0   # priority of the last preempted one (counts down, below all others)

    def add_prompt(self, sequences: list[Sequence]) -> None:
        self.waiting.append(PrefillItem(sequences, list(sequences[0].prompt_ids), recompute=False))

    @property
    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    def admit(self) -> list[PrefillItem]:
        """Waiting items that fit now, with the leader's pages allocated for their tokens."""
        admitted: list[PrefillItem] = []
        tokens = 0
        ps = self.pool.page_size
        headroom = sum(1 for s in self.running if s.num_cached == len(s.pages) * ps)
        while self.waiting:
            item = self.waiting[0]
            seats = len(self.running) + sum(len(i.sequences) for i in admitted) + len(item.sequences)
            fits = (item.pages_needed(ps) + headroom <= self.pool.num_free and seats <= self.max_num_seqs
                    and (not admitted or tokens + len(item.tokens) <= self.max_prefill_tokens))
            if not fits:
                if not admitted and not self.running and item.pages_needed(ps) > self.pool.num_free:
                    raise RuntimeError(
                        f"a prompt of {len(item.tokens)} tokens needs {item.pages_needed(ps)} KV pages but the "
                        f"pool has {self.pool.num_pages}; give the engine more pages (num_pages / kv_cache_bytes)")
                break
            self.waiting.popleft()
            for seq in item.sequences:
                if seq.priority is None:
                    seq.priority, self._admitted = self._admitted, self._admitted + 1
            leader = item.sequences[0]
            leader.pages = [self._allocate_counted() for _ in range(-(-len(item.tokens) // ps))]
            admitted.append(item)
            tokens += len(item.tokens)
        return admitted

    def start_running(self, item: PrefillItem) -> None:
        """After the leader's prefill: completions share its full pages, copy its partial last
        page, and join the decode batch."""
        leader = item.sequences[0]
        leader.num_cached = len(item.tokens)
        full = len(item.tokens) // self.pool.page_size
        for seq in item.sequences[1:]:
            seq.pages = [self.pool.share(p) for p in leader.pages[:full]]
            if full < len(leader.pages):
                page = self._allocate_counted()
                self.pool.copy_page(leader.pages[full], page)
                seq.pages.append(page)
            seq.num_cached = leader.num_cached
        for seq in item.sequences:
            if seq.finished:
                self.pool.release(seq.pages)
                seq.pages = []
                continue
            bisect.insort(self.running, seq, key=_priority)
            self.batch.add(seq)

    def reserve_decode(self) -> list[Sequence]:
        """Gives each running sequence a cache slot for its next token, preempting the
        lowest-priority sequences when the pool is exhausted. Returns the sequences to decode."""
        ps = self.pool.page_size
        index = 0
        while index < len(self.running):
            seq = self.running[index]
            if seq.num_cached < len(seq.pages) * ps:
                index += 1
                continue
            page = self.pool.allocate()
            while page is None:
                victim = self.running[-1]
                self._preempt(victim)
                if victim is seq:
                    break
                page = self.pool.allocate()
            if page is None:
                break  # seq itself was preempted (it was the last one)
            seq.pages.append(page)
            self.batch.sync_pages(seq)
            index += 1
        return list(self.running)

    def retire(self, seq: Sequence) -> None:
        """A running sequence finished: its pages and its batch row are freed."""
        self.pool.release(seq.pages)
        seq.pages = []
        self.running.remove(seq)
        self.batch.remove(seq)

    def _allocate_counted(self) -> int:
        """A page that admission already counted as free (``PrefillItem.pages_needed``)."""
        page = self.pool.allocate()
        if page is None:
            raise RuntimeError("KV page pool exhausted by pages that admission counted as free")
        return page

    def _preempt(self, seq: Sequence) -> None:
        self.running.remove(seq)
        self.batch.remove(seq)
        self._promoted -= 1
        seq.priority = self._promoted
        self.pool.release(seq.pages)
        seq.pages, seq.num_cached = [], 0
        self.waiting.appendleft(PrefillItem([seq], seq.tokens_to_recompute(), recompute=True))
        self.num_preemptions += 1
