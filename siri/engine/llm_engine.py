"""LLMEngine: batched generation of G completions per prompt for GRPO rollouts, in the
trainer's process, over the trainer's own parameters."""
from __future__ import annotations

import time
import warnings

import numpy as np
import torch

from siri.engine import device_memory
from siri.engine.batch_state import DecodeBatchState
from siri.engine.cuda_graphs import DecodeGraphs, graph_memory_bytes
from siri.engine.model_runner import Batch, ModelRunner
from siri.engine.page_pool import PagePool, release_freed_memory
from siri.engine.params import CompletionOutput, SamplingParams
from siri.engine.scheduler import PrefillItem, Scheduler
from siri.engine.sequence import Sequence
from siri.engine.step_sampler import StepSampler
from siri.models.shape import ModelShape

_FINISH_REASONS = {1: "stop", 2: "length"}
_MASK64 = (1 << 64) - 1


def sequence_seed(seed: int, prompt_key: int, sample_index: int) -> int:
    """A well-mixed int64 seed per (seed, prompt, sample) (splitmix64), so a completion's
    draws depend only on what it is, not on where it sits in a batch or on which rank."""
    x = (seed * 0x9E3779B97F4A7C15 + prompt_key * 0xBF58476D1CE4E5B9 + sample_index * 0x94D049BB133111EB) & _MASK64
    for shift, mult in ((30, 0xBF58476D1CE4E5B9), (27, 0x94D049BB133111EB)):
        x = ((x ^ (x >> shift)) * mult) & _MASK64
    x ^= x >> 31
    return x - (1 << 64) if x >= 1 << 63 else x


class LLMEngine:
    """Paged-KV generation engine over a Hugging Face Qwen2 / Qwen3 / Llama causal LM.

    Args:
        model: the transformers model, any dtype the kernels support (fp32, bf16; fp16 on
            CUDA), on CPU or CUDA. Its parameters are used in place: after an optimizer step
            the next ``generate`` sees the new weights with no call to the engine.
        page_size: tokens per KV page.
        max_num_seqs: the most sequences decoding at once.
        num_pages / kv_cache_bytes: the size of the page pool (give at most one). Default:
            ``gpu_memory_fraction`` x the device memory free when the pool is allocated
            (:func:`siri.engine.device_memory.free_bytes`), less the CUDA graphs' memory when
            they are on; 2 GiB on the CPU.
        gpu_memory_fraction: see above (in (0, 1)).
        max_prefill_tokens: the most prompt tokens prefilled in one forward pass.
        cuda_graphs: replay the decode forward from CUDA graphs, one per batch-size bucket
            (see :mod:`siri.engine.cuda_graphs`). Default: on for a CUDA model, off on the CPU
            and for models whose RoPE reads device values (``rope_type: dynamic``). True on
            the CPU runs the same padded, bucketed decode through an eager stand-in (tests).
        max_seq_len: the longest prompt + completion the calls will ask for (the trainer:
            ``data.max_prompt_tokens`` + the schedule's largest cap). The decode batch state
            is sized for it once, so graphs captured by one ``generate`` are replayed by the
            next; default: sized by each call's own longest, rebuilt (graphs too) when a
            later call needs more.

    The KV pool is allocated by the first ``generate`` (sized then, so it sees the memory the
    caller's other state leaves free) and kept, with the batch state and the graphs that read
    it, until :meth:`release_kv_cache`; the trainer releases it after each step's rollouts so
    that its memory serves the update.
    """

    def __init__(self, model: torch.nn.Module, *, page_size: int = 16, max_num_seqs: int = 256,
                 num_pages: int | None = None, kv_cache_bytes: int | None = None,
                 gpu_memory_fraction: float = 0.8, max_prefill_tokens: int = 8192,
                 cuda_graphs: bool | None = None, max_seq_len: int | None = None):
        if page_size < 1 or max_num_seqs < 1 or max_prefill_tokens < 1:
            raise ValueError("page_size, max_num_seqs and max_prefill_tokens must be >= 1")
        if num_pages is not None and kv_cache_bytes is not None:
            raise ValueError("give num_pages or kv_cache_bytes, not both")
        if not 0 < gpu_memory_fraction < 1:
            raise ValueError(f"gpu_memory_fraction must be in (0, 1), got {gpu_memory_fraction}")
        if num_pages is not None and num_pages < 1:
            raise ValueError(f"the KV cache needs at least one page, got num_pages={num_pages}")
        if max_seq_len is not None and max_seq_len < 2:
            raise ValueError(f"max_seq_len must be >= 2 (a prompt token and a completion token), got {max_seq_len}")
        self.runner = ModelRunner(model)
        self.page_size = page_size
        self._num_pages, self._kv_cache_bytes, self._memory_fraction = num_pages, kv_cache_bytes, gpu_memory_fraction
        self.pool: PagePool | None = None
        self.max_num_seqs = max_num_seqs
        self.max_prefill_tokens = max_prefill_tokens
        self.cuda_graphs = self._use_graphs(cuda_graphs)
        self.max_seq_len = max_seq_len
        self._state: DecodeBatchState | None = None
        self._graphs: DecodeGraphs | None = None
        self.last_stats: dict = {}

    def pool_pages(self) -> int:
        """Pages the pool has (when allocated) or would get if allocated now."""
        if self.pool is not None:
            return self.pool.num_pages
        if self._num_pages is not None:
            return self._num_pages
        r = self.runner
        page_bytes = PagePool.bytes_per_page(self.page_size, r.num_layers, r.num_kv_heads, r.head_dim, r.dtype)
        cache_bytes = self._kv_cache_bytes
        if cache_bytes is None:
            cache_bytes = self.default_cache_bytes()
        if cache_bytes < page_bytes:
            raise ValueError(f"the KV pool's budget ({cache_bytes / 2**30:.2f} GiB) is less than one page "
                             f"({page_bytes} bytes); give kv_cache_bytes, or free device memory")
        return cache_bytes // page_bytes

    def graph_memory_bytes(self) -> int:
        """The CUDA graphs' memory estimate for ``max_num_seqs`` rows (0 with graphs off)."""
        if not self.cuda_graphs:
            return 0
        r = self.runner
        element = torch.empty((), dtype=r.dtype).element_size()
        return graph_memory_bytes(ModelShape.from_hf_config(r.model.config), element, self.max_num_seqs)

    def default_cache_bytes(self) -> int:
        """The default pool budget: ``gpu_memory_fraction`` x free device memory (2 GiB on the
        CPU), less the CUDA graphs' memory."""
        free = device_memory.free_bytes(self.runner.device)
        budget = device_memory.CPU_DEFAULT_POOL_BYTES if free is None else int(free * self._memory_fraction)
        return budget - self.graph_memory_bytes()

    def _use_graphs(self, requested: bool | None) -> bool:
        rope = self.runner.rope_type
        if not self.runner.rope_graph_capturable:
            if requested:
                raise ValueError(f"cuda_graphs=True: this model's RoPE (rope_type {rope!r}) reads a device value "
                                 f"in every forward, which a CUDA graph cannot capture; use cuda_graphs=False")
            if requested is None and self.runner.device.type == "cuda":
                warnings.warn(f"rope_type {rope!r} reads a device value in every forward: CUDA graphs are off "
                              f"for this model (decode runs eagerly)", stacklevel=3)
            return False
        return self.runner.device.type == "cuda" if requested is None else bool(requested)

    def allocate_kv_cache(self) -> PagePool:
        """Allocate the KV pool now (``generate`` does it when needed); returns it."""
        if self.pool is None:
            r = self.runner
            self.pool = PagePool(self.pool_pages(), self.page_size, r.num_layers, r.num_kv_heads, r.head_dim,
                                 r.dtype, r.device)
        return self.pool

    def release_kv_cache(self) -> None:
        """Free the KV pool and hand its memory back (CUDA: to the device; CPU: to the OS);
        the next ``generate`` allocates a fresh one."""
        if self.pool is not None:
            self.pool = self._graphs = self._state = None
            release_freed_memory(self.runner.device)

    def generate(self, prompt_token_ids: list[list[int]], params: SamplingParams, *,
                 progress: bool = False, prompt_keys: list[int] | None = None) -> list[list[CompletionOutput]]:
        """Sample ``params.n`` completions of every prompt.

        Args:
            prompt_token_ids: one list of token ids per prompt (each non-empty).
            params: the sampling settings; ``max_tokens`` may differ per prompt.
            progress: show a progress bar with tokens/s and running/waiting counts.
            prompt_keys: an int per prompt that keys its random draws (default: its index).
                Give global dataset indices to make draws independent of how prompts are split.

        Returns:
            ``outputs[i][j]``: completion ``j`` of prompt ``i``.
        """
        self._validate(prompt_token_ids, params, prompt_keys)
        pool = self.allocate_kv_cache()
        keys = prompt_keys if prompt_keys is not None else list(range(len(prompt_token_ids)))
        caps = params.caps(len(prompt_token_ids))
        longest = max(len(p) + cap for p, cap in zip(prompt_token_ids, caps))
        state, captures = self._prepare_batch_state(pool, longest,
                                                    rows=min(self.max_num_seqs, params.n * len(prompt_token_ids)))
        self._sampler = StepSampler(params, self.max_num_seqs, self.runner.device)
        scheduler = Scheduler(pool, self.max_num_seqs, self.max_prefill_tokens, state)
        groups = []
        for i, (prompt, cap) in enumerate(zip(prompt_token_ids, caps)):
            group = [Sequence(i, j, list(prompt), cap, sequence_seed(params.seed, keys[i], j))
                     for j in range(params.n)]
            groups.append(group)
            scheduler.add_prompt(group)
        start, generated, steps = time.perf_counter(), 0, 0
        with _Progress(progress, total=len(prompt_token_ids) * params.n) as bar:
            while scheduler.has_work:
                items = scheduler.admit()
                if items:
                    generated += self._prefill(items, scheduler)
                if scheduler.reserve_decode():
                    generated += self._decode(scheduler)
                steps += 1
                bar.update(generated, len(scheduler.running), len(scheduler.waiting),
                           time.perf_counter() - start)
        self.last_stats = dict(generated_tokens=generated, steps=steps,
                               preemptions=scheduler.num_preemptions, seconds=time.perf_counter() - start,
                               graph_captures=captures)
        return [[_completion(s) for s in group] for group in groups]

    def _prepare_batch_state(self, pool: PagePool, longest: int, rows: int) -> tuple[DecodeBatchState, int]:
        """The decode batch state (and the graphs over it and ``pool``) for a call whose
        longest sequence is ``longest`` tokens and whose batch reaches ``rows`` rows: kept
        from the last call when wide enough, else rebuilt, ``max_seq_len`` wide when given.
        Returns the state and the number of graphs captured now."""
        pages = -(-longest // self.page_size)
        if self._state is not None and self._state.max_pages >= pages:
            self._state.clear()
        else:
            if self.max_seq_len is not None:
                pages = max(pages, -(-self.max_seq_len // self.page_size))
            self._state = DecodeBatchState(self.max_num_seqs, pages, self.page_size, self.runner.device)
            self._graphs = None
        if not self.cuda_graphs:
            return self._state, 0
        if self._graphs is None:
            self._graphs = DecodeGraphs(self.runner, pool.k, pool.v, self._state)
        return self._state, self._graphs.ensure(rows)

    def _in_progress(self) -> tuple[PagePool, DecodeBatchState]:
        """The pool and batch state of the ``generate`` call in progress."""
        if self.pool is None or self._state is None:
            raise RuntimeError("no generate() call is in progress")
        return self.pool, self._state

    def _validate(self, prompts, params: SamplingParams, keys) -> None:
        if not prompts:
            raise ValueError("prompt_token_ids is empty")
        for i, prompt in enumerate(prompts):
            if len(prompt) == 0:
                raise ValueError(f"prompt {i} is empty")
            if min(prompt) < 0 or max(prompt) >= self.runner.vocab_size:
                raise ValueError(f"prompt {i} has token ids outside the vocabulary [0, {self.runner.vocab_size})")
        if keys is not None and len(keys) != len(prompts):
            raise ValueError(f"prompt_keys has {len(keys)} entries for {len(prompts)} prompts")
        if params.n > self.max_num_seqs:
            raise ValueError(f"SamplingParams.n={params.n} exceeds max_num_seqs={self.max_num_seqs}")
        params.validate(len(prompts), self.runner.vocab_size)
        pages = self.pool_pages()
        capacity = pages * self.page_size
        for i, (prompt, cap) in enumerate(zip(prompts, params.caps(len(prompts)))):
            if len(prompt) + cap > capacity:
                raise ValueError(
                    f"prompt {i} ({len(prompt)} tokens) plus max_tokens={cap} exceeds the KV pool "
                    f"({pages} pages x {self.page_size} = {capacity} tokens); a "
                    f"sequence must fit alone, so give the engine more pages or lower max_tokens")

    # -- one forward pass each -------------------------------------------------------------

    def _prefill(self, items: list[PrefillItem], scheduler: Scheduler) -> int:
        """Prefills every item's tokens into its leader's pages; new prompts draw the first
        token of each completion from the prompt's last logits."""
        pool, _ = self._in_progress()
        batch = prefill_batch(items, pool.page_size, self.runner.device)
        logits = self.runner.forward(batch, pool.k, pool.v)
        rows, seqs = [], []
        for row, item in enumerate(items):
            if not item.recompute:
                rows += [row] * len(item.sequences)
                seqs += item.sequences
        if seqs:
            index = torch.tensor(rows, device=logits.device)
            tokens, logprobs, reasons = self._sampler.sample_new(logits.index_select(0, index), seqs)
            _record(seqs, tokens, logprobs, reasons)
        for item in items:
            scheduler.start_running(item)
        return len(seqs)

    def _decode(self, scheduler: Scheduler) -> int:
        """One token for every running sequence, from the persistent batch state."""
        _, state = self._in_progress()
        seqs = list(state.seqs)
        tokens, logprobs, reasons = self._sampler.to_host(self._launch_decode_step())
        state.finish_step(tokens)
        for seq in seqs:
            seq.num_cached += 1
        _record(seqs, tokens, logprobs, reasons)
        for seq in seqs:
            if seq.finished:
                scheduler.retire(seq)
        return len(seqs)

    def _launch_decode_step(self):
        """The device side of a decode step, launched without waiting on the device: the
        batch state's changes go up, the forward pass (or its CUDA graph) and the sampler run.
        Returns the sampler's device outputs."""
        pool, state = self._in_progress()
        state.check(pool.num_pages)
        graphs, rows = self._graphs, state.size
        if graphs:
            step = state.prepare_step(pad_to=graphs.bucket(rows), split_chunk=graphs.split_chunk)
        else:
            step = state.prepare_step()
        if graphs:
            logits = graphs.forward(rows)
        else:
            batch = Batch(step["input_ids"], step["positions"], step["slot_mapping"], step["block_table"],
                          step["kv_lens"], None, step["max_kv_len"], step["total_kv_len"], None)
            logits = self.runner.forward(batch, pool.k, pool.v)
        return self._sampler.launch_step(logits, step)


def _completion(seq: Sequence) -> CompletionOutput:
    if seq.finish_reason is None:
        raise RuntimeError(f"sequence {seq.prompt_index}/{seq.sample_index} left generate() unfinished")
    return CompletionOutput(seq.output_ids, seq.logprobs, seq.finish_reason)


def _record(seqs: list[Sequence], tokens: np.ndarray, logprobs: np.ndarray, reasons: np.ndarray) -> None:
    for seq, token, logprob, reason in zip(seqs, tokens.tolist(), logprobs.tolist(), reasons.tolist()):
        seq.output_ids.append(token)
        seq.logprobs.append(logprob)
        if reason:
            seq.finish_reason = _FINISH_REASONS[reason]


def prefill_batch(items: list[PrefillItem], page_size: int, device: torch.device) -> Batch:
    """The packed prefill of ``items``: each item's tokens from position 0 into its leader's
    pages, causal, with the logits of each item's last token. Built with numpy: O(tokens)."""
    lens = np.array([len(item.tokens) for item in items], dtype=np.int64)
    ids = np.concatenate([np.asarray(item.tokens, dtype=np.int64) for item in items])
    query_seq = np.repeat(np.arange(len(items), dtype=np.int32), lens)
    ends = np.cumsum(lens)
    positions = np.arange(int(ends[-1]), dtype=np.int64) - np.repeat(ends - lens, lens)
    width = max(len(item.sequences[0].pages) for item in items)
    table = np.zeros((len(items), width), dtype=np.int32)
    for row, item in enumerate(items):
        table[row, :len(item.sequences[0].pages)] = item.sequences[0].pages
    slots = table[query_seq, positions // page_size].astype(np.int64) * page_size + positions % page_size

    def dev(array):
        return torch.from_numpy(array).to(device, non_blocking=True)

    return Batch(dev(ids), dev(positions), dev(slots), dev(table), dev((positions + 1).astype(np.int32)),
                 dev(query_seq), int(lens.max()), int((lens * (lens + 1) // 2).sum()), dev(ends - 1))


class _Progress:
    """A rich progress bar over completions, with tokens/s and running/waiting counts."""

    def __init__(self, enabled: bool, total: int):
        self.enabled, self.total = enabled, total

    def __enter__(self):
        if self.enabled:
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

            from siri.progress import make_console

            self._progress = Progress(TextColumn("generate"), BarColumn(), TextColumn("{task.description}"),
                                      TimeElapsedColumn(), transient=True, console=make_console())
            self._progress.__enter__()
            self._task = self._progress.add_task("", total=None)
        return self

    def update(self, generated: int, running: int, waiting: int, seconds: float) -> None:
        if self.enabled:
            self._progress.update(self._task, description=(
                f"{generated} tokens, {generated / max(seconds, 1e-9):.0f} tok/s, "
                f"running {running}, waiting {waiting}"))

    def __exit__(self, *exc):
        if self.enabled:
            self._progress.__exit__(*exc)
        return False
