"""LLMEngine: batched generation of G completions per prompt for GRPO rollouts, in the
trainer's process, over the trainer's own parameters."""
from __future__ import annotations

import time

import torch

from siri.engine.model_runner import Batch, ModelRunner
from siri.engine.page_pool import PagePool, release_freed_memory
from siri.engine.params import CompletionOutput, SamplingParams
from siri.engine.scheduler import PrefillItem, Scheduler
from siri.engine.sequence import Sequence
from siri.ops.sampling import sample_tokens

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
            ``gpu_memory_fraction`` of the CUDA memory free when the pool is allocated, or 2 GiB
            on the CPU.
        gpu_memory_fraction: see above (in (0, 1)).
        max_prefill_tokens: the most prompt tokens prefilled in one forward pass.

    The KV pool is allocated by the first ``generate`` (sized then, so it sees the memory the
    caller's other state leaves free) and kept until :meth:`release_kv_cache`; the trainer
    releases it after every rollout so that its memory serves the update.
    """

    def __init__(self, model: torch.nn.Module, *, page_size: int = 16, max_num_seqs: int = 256,
                 num_pages: int | None = None, kv_cache_bytes: int | None = None,
                 gpu_memory_fraction: float = 0.8, max_prefill_tokens: int = 8192):
        if page_size < 1 or max_num_seqs < 1 or max_prefill_tokens < 1:
            raise ValueError("page_size, max_num_seqs and max_prefill_tokens must be >= 1")
        if num_pages is not None and kv_cache_bytes is not None:
            raise ValueError("give num_pages or kv_cache_bytes, not both")
        if not 0 < gpu_memory_fraction < 1:
            raise ValueError(f"gpu_memory_fraction must be in (0, 1), got {gpu_memory_fraction}")
        if num_pages is not None and num_pages < 1:
            raise ValueError(f"the KV cache needs at least one page, got num_pages={num_pages}")
        self.runner = ModelRunner(model)
        self.page_size = page_size
        self._num_pages, self._kv_cache_bytes, self._memory_fraction = num_pages, kv_cache_bytes, gpu_memory_fraction
        self.pool: PagePool | None = None
        self.max_num_seqs = max_num_seqs
        self.max_prefill_tokens = max_prefill_tokens
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
            cache_bytes = self._default_cache_bytes(r.device, self._memory_fraction)
        return max(1, cache_bytes // page_bytes)

    @staticmethod
    def _default_cache_bytes(device: torch.device, fraction: float) -> int:
        if device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(device)
            # blocks torch has cached but not handed out are free for the pool as well
            free += torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
            return int(free * fraction)
        return 2 << 30

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
            self.pool = None
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
        self.allocate_kv_cache()
        keys = prompt_keys if prompt_keys is not None else list(range(len(prompt_token_ids)))
        scheduler = Scheduler(self.pool, self.max_num_seqs, self.max_prefill_tokens)
        groups = []
        for i, (prompt, cap) in enumerate(zip(prompt_token_ids, params.caps(len(prompt_token_ids)))):
            group = [Sequence(i, j, list(prompt), cap, sequence_seed(params.seed, keys[i], j))
                     for j in range(params.n)]
            groups.append(group)
            scheduler.add_prompt(group)
        self._eos = torch.tensor(params.stop_token_ids or [], dtype=torch.int32, device=self.runner.device)
        start, generated, steps = time.perf_counter(), 0, 0
        with _Progress(progress, total=len(prompt_token_ids) * params.n) as bar:
            while scheduler.has_work:
                items = scheduler.admit()
                if items:
                    generated += self._prefill(items, scheduler, params)
                running = scheduler.reserve_decode()
                if running:
                    generated += self._decode(running, scheduler, params)
                steps += 1
                bar.update(generated, len(scheduler.running), len(scheduler.waiting),
                           time.perf_counter() - start)
        self.last_stats = dict(generated_tokens=generated, steps=steps,
                               preemptions=scheduler.num_preemptions, seconds=time.perf_counter() - start)
        return [[CompletionOutput(s.output_ids, s.logprobs, s.finish_reason) for s in group] for group in groups]

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

    def _prefill(self, items: list[PrefillItem], scheduler: Scheduler, params: SamplingParams) -> int:
        ps = self.pool.page_size
        ids, positions, slots, tables, lens, cu, last = [], [], [], [], [], [0], []
        for item in items:
            leader = item.sequences[0]
            n = len(item.tokens)
            ids += item.tokens
            positions += range(n)
            slots += [leader.pages[t // ps] * ps + t % ps for t in range(n)]
            tables.append(leader.pages)
            lens.append(n)
            cu.append(cu[-1] + n)
            last.append(cu[-1] - 1)
        batch = self._batch(ids, positions, slots, tables, lens, last, cu)
        logits = self.runner.forward(batch, self.pool.k, self.pool.v)
        # New prompts: every completion draws its first token from the prompt's last logits.
        rows, seqs = [], []
        for row, item in enumerate(items):
            if not item.recompute:
                rows += [row] * len(item.sequences)
                seqs += item.sequences
        if seqs:
            self._sample(logits[torch.tensor(rows, device=logits.device)], seqs, params)
        for item in items:
            scheduler.start_running(item)
        return len(seqs)

    def _decode(self, running: list[Sequence], scheduler: Scheduler, params: SamplingParams) -> int:
        ps = self.pool.page_size
        ids = [s.output_ids[-1] for s in running]
        positions = [s.num_cached for s in running]
        slots = [s.pages[s.num_cached // ps] * ps + s.num_cached % ps for s in running]
        batch = self._batch(ids, positions, slots, [s.pages for s in running],
                            [s.num_cached + 1 for s in running], list(range(len(running))), None)
        logits = self.runner.forward(batch, self.pool.k, self.pool.v)
        for seq in running:
            seq.num_cached += 1
        self._sample(logits, running, params)
        for seq in running:
            if seq.finished:
                scheduler.retire(seq)
        return len(running)

    def _batch(self, ids, positions, slots, tables, lens, logits_index, cu) -> Batch:
        device = self.runner.device
        width = max(len(t) for t in tables)
        table = torch.tensor([pages + [0] * (width - len(pages)) for pages in tables], dtype=torch.int32)

        def as_tensor(values, dtype):
            return torch.tensor(values, dtype=dtype).to(device, non_blocking=True)

        return Batch(as_tensor(ids, torch.long), as_tensor(positions, torch.long), as_tensor(slots, torch.long),
                     table.to(device), as_tensor(lens, torch.int32),
                     None if cu is None else as_tensor(cu, torch.int32), as_tensor(logits_index, torch.long))

    def _sample(self, logits: torch.Tensor, seqs: list[Sequence], params: SamplingParams) -> None:
        device, b = logits.device, len(seqs)
        generated = torch.tensor([len(s.output_ids) for s in seqs], dtype=torch.int32)
        out = sample_tokens(
            logits.float() if logits.dtype not in (torch.float32, torch.bfloat16) else logits,
            temperature=torch.full((b,), float(params.temperature), device=device),
            top_k=torch.full((b,), int(params.top_k), dtype=torch.int32, device=device),
            top_p=torch.full((b,), float(params.top_p), device=device),
            seeds=torch.tensor([s.seed for s in seqs], dtype=torch.long, device=device),
            positions=generated.to(device, torch.long), lengths=generated.to(device),
            max_lengths=torch.tensor([s.max_tokens for s in seqs], dtype=torch.int32, device=device),
            finished=torch.zeros(b, dtype=torch.bool, device=device), eos_ids=self._eos, pad_id=0)
        tokens, logprobs, reasons = (out.tokens.tolist(), out.logprobs.tolist(), out.finish_reason.tolist())
        for seq, token, logprob, reason in zip(seqs, tokens, logprobs, reasons):
            seq.output_ids.append(token)
            seq.logprobs.append(logprob)
            if reason:
                seq.finish_reason = _FINISH_REASONS[reason]


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
