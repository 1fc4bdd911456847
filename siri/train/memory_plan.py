"""Per-device memory of a training run, from the config and the model's HF config alone.

    from siri.train.memory_plan import plan_memory
    plan = plan_memory(cfg, device_memory_gb=80, world_size=8)
    print(plan.fits, plan.training_peak / 2**30, plan.advice)

``siri train CONFIG --dry-run`` prints it. The plan follows what the trainer holds:

* **persistent** (the whole run): the weights in ``model.param_dtype`` (the master copy), the
  compute-dtype copy the training forward and the engine read (when the dtypes differ, or the
  full copy FSDP2 gathers for the engine), AdamW's two moments, a frozen reference copy when
  ``algo.kl_coef > 0``. FSDP2 divides the master weights and moments by the world size.
  The trainer allocates AdamW's moments when it builds the optimizer (not at the first step),
  so they are in place before the first rollout sizes the KV pool.
* **update phase**: the master gradients (from the second micro-batch on they exist while the
  next micro-batch's activations do), the largest micro-batch's saved activations (with or
  without gradient checkpointing) and its response-row logits (one copy: the fused loss writes
  dlogits in place); at the end of a backward, the compute-dtype gradients beside the master
  ones instead; AdamW's step temporaries. Under FSDP2 the root module (embedding, final norm,
  LM head) is gathered at the forward's start and not resharded until its backward ends, so its
  compute-dtype weights sit beside the activations and logits, and so does the head's unsharded
  gradient, which backward computes first and the root's reduce-scatter frees last.
* **rollout phase**: the KV pool (``rollout.kv_cache_gb``, or ``gpu_memory_fraction`` of what
  is free once the persistent state is in place), the decode step's logits and, on CUDA, the
  decode graphs (their memory is its own line; with a default-sized pool the engine takes it
  out of the pool's budget).
* **rollout.keep_kv_cache**: the pool and the graphs stay allocated through the update, so the
  update's peak includes them. With a default-sized pool its budget is ``gpu_memory_fraction``
  of what is free once the persistent state is in place *and* the update's additions (or, under
  FSDP2, the full-state gather before a rollout, if larger) are taken out: the trainer passes
  the engine that size (:func:`kept_kv_cache_bytes`, from the memory it finds free) instead of
  letting the pool take a share of memory the update then needs.

A run that cannot place even one full-length sequence in the KV pool (the persistent state
leaves no room, or the pool is smaller than a prompt plus the largest cap) does not fit,
whatever the peaks say: the pool is then shown as 0 with the reason, never a negative size.

The activation counts are those of Hugging Face's Llama/Qwen2 decoder layer under SDPA, counted
tensor by tensor with autograd's saved-tensor hooks (bytes per token per layer, ``c`` the
compute dtype's size, ``q`` = heads x head_dim, ``kv`` = kv heads x head_dim)::

    2 RMSNorms   2 x (4h + 2c h)     fp32 input, normalised output, the projection's input
    attention    c (2q + 2kv) + 4 x heads   q, k, v, output; logsumexp
    SwiGLU MLP   4 c I               gate, up, act(gate), act(gate) * up

plus, for a padded micro-batch, a [B, 1, T, T] attention mask in the compute dtype per layer
(SDPA turns the boolean padding mask into an additive one in every call and saves it), and K
and V repeated to the query heads (HF uses SDPA's ``enable_gqa`` only without a mask). With
gradient checkpointing each layer keeps only its input, and one layer's activations live again
during its backward. The plan is an upper bound in one respect: every position of the largest
micro-batch is counted as a response row of the logits.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

from siri.engine.cuda_graphs import graph_memory_bytes
from siri.models.shape import ModelShape

GiB = 2**30

DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}

#: Device memory the plan does not model: CUDA context, NCCL buffers, allocator fragmentation.
CUDA_RESERVE_BYTES = 2 * GiB
#: The KV pool's size on the CPU when ``rollout.kv_cache_gb`` is null (see LLMEngine).
CPU_DEFAULT_KV_BYTES = 2 * GiB


@dataclass(frozen=True)
class MemoryItem:
    """One line of the plan: ``nbytes`` per device, and how it was counted."""

    name: str
    nbytes: int
    note: str = ""


@dataclass(frozen=True)
class MicroBatchShape:
    """A micro-batch of ``batch`` sequences padded to ``length`` tokens."""

    batch: int
    length: int

    @property
    def tokens(self) -> int:
        return self.batch * self.length


@dataclass
class MemoryPlan:
    """Bytes per device of the run's persistent state and of each phase's additions.

    ``training_peak`` / ``rollout_peak``: the largest total of each phase (with
    ``keep_kv_cache``, the update's includes the kept pool and graphs); ``fits``: the larger
    is within ``usable_bytes`` (the device less ``reserve_bytes``) and the KV pool holds at
    least one sequence at the full cap (``kv_min_tokens``)."""

    device_bytes: int
    reserve_bytes: int
    world_size: int
    parallelism: str
    compute_dtype: str
    param_dtype: str
    num_parameters: int
    micro_batch: MicroBatchShape
    gradient_checkpointing: bool
    persistent: list[MemoryItem]
    training: list[MemoryItem]
    rollout: list[MemoryItem]
    training_peak: int
    rollout_peak: int
    kv_tokens: int
    kv_tokens_wanted: int
    kv_bytes: int = 0
    kv_min_tokens: int = 0
    graph_bytes: int = 0
    keep_kv_cache: bool = False
    advice: list[str] = field(default_factory=list)

    @property
    def usable_bytes(self) -> int:
        return self.device_bytes - self.reserve_bytes

    @property
    def persistent_bytes(self) -> int:
        return sum(i.nbytes for i in self.persistent)

    @property
    def peak(self) -> int:
        return max(self.training_peak, self.rollout_peak)

    @property
    def kv_fits(self) -> bool:
        """The KV pool holds one sequence at the full cap (the engine refuses a smaller one)."""
        return self.kv_tokens >= self.kv_min_tokens

    @property
    def fits(self) -> bool:
        return self.peak <= self.usable_bytes and self.kv_fits

    def verdict(self) -> str:
        """One line: fits or not, and why not."""
        usable = f"{self.usable_bytes / GiB:.1f} GiB usable"
        if self.fits:
            return f"fits: peak {self.peak / GiB:.1f} GiB of {usable}"
        reasons = []
        if self.persistent_bytes > self.usable_bytes:
            reasons.append(f"the persistent state alone ({self.persistent_bytes / GiB:.1f} GiB) exceeds the {usable}, "
                           f"leaving no room for the KV pool")
        elif not self.kv_fits:
            reasons.append(f"the KV pool holds {self.kv_tokens:,} tokens, less than one sequence at the full cap "
                           f"({self.kv_min_tokens:,}: a prompt plus the largest cap)")
        if self.peak > self.usable_bytes:
            reasons.append(f"peak {self.peak / GiB:.1f} GiB of {usable}")
        return "does NOT fit: " + "; ".join(reasons)

    def render(self, console) -> None:
        """Print the plan as a rich table with its verdict and advice."""
        from rich.table import Table

        title = (f"memory plan per device: {self.device_bytes / GiB:.0f} GiB, {self.world_size} x "
                 f"{self.parallelism}, {self.num_parameters / 1e9:.2f}B parameters, compute "
                 f"{self.compute_dtype}, master {self.param_dtype}")
        table = Table(title=title)
        for column in ("phase", "item", "GiB", "how"):
            table.add_column(column, justify="right" if column == "GiB" else "left")
        for phase, items in (("persistent", self.persistent), ("update", self.training), ("rollout", self.rollout)):
            for item in items:
                table.add_row(phase, item.name, f"{item.nbytes / GiB:.2f}", item.note)
        table.add_row("", "[bold]update peak[/bold]", f"[bold]{self.training_peak / GiB:.2f}[/bold]",
                      f"largest micro-batch {self.micro_batch.batch} x {self.micro_batch.length} tokens, "
                      f"checkpointing {'on' if self.gradient_checkpointing else 'off'}"
                      + (", with the kept KV pool" if self.keep_kv_cache else ""))
        table.add_row("", "[bold]rollout peak[/bold]", f"[bold]{self.rollout_peak / GiB:.2f}[/bold]",
                      f"KV pool holds {self.kv_tokens:,} tokens of the {self.kv_tokens_wanted:,} that "
                      f"every sequence at the full cap would take")
        console.print(table)
        if self.keep_kv_cache:
            graphs = f" and the CUDA graphs ({self.graph_bytes / GiB:.2f} GiB)" if self.graph_bytes else ""
            both = "fits" if self.training_peak <= self.usable_bytes else "does NOT fit"
            console.print(f"rollout.keep_kv_cache: the KV pool ({self.kv_bytes / GiB:.2f} GiB, {self.kv_tokens:,} "
                          f"tokens){graphs} {'stay' if graphs else 'stays'} allocated through the update: rollout + update peak "
                          f"{self.training_peak / GiB:.1f} GiB {both} in {self.usable_bytes / GiB:.1f} GiB usable")
        console.print(f"verdict: {self.verdict()} ({self.reserve_bytes / GiB:.0f} GiB kept for the CUDA context, "
                      f"NCCL and fragmentation)")
        for line in self.advice:
            console.print(f"  - {line}")


def layer_activation_bytes_per_token(shape: ModelShape, c: int, *, padded: bool = False) -> int:
    """Bytes autograd saves per token in one decoder layer (see the module docstring). With a
    padding mask, HF repeats K and V to the query heads instead of SDPA's ``enable_gqa``."""
    h, q = shape.hidden_size, shape.num_heads * shape.head_dim
    norms = 2 * (4 * h + 2 * c * h)
    kv = q if padded else shape.kv_dim
    attention = c * (2 * q + 2 * kv) + 4 * shape.num_heads
    return norms + attention + 4 * c * shape.intermediate_size


def activation_bytes(shape: ModelShape, mb: MicroBatchShape, c: int, *, checkpointing: bool) -> int:
    """Saved activations of one training forward over ``mb`` (backbone only; the logits are
    counted separately)."""
    padded = mb.batch > 1    # a lone sequence needs no padding mask
    per_layer = mb.tokens * layer_activation_bytes_per_token(shape, c, padded=padded)
    if padded:
        per_layer += mb.tokens * mb.length * c     # the additive [B, 1, T, T] mask
    # RoPE's cos/sin [T, head_dim], and the boolean 4D mask: built once per forward
    shared = 2 * mb.length * shape.head_dim * c + (mb.tokens * mb.length if padded else 0)
    final_norm = mb.tokens * (4 + 2 * c) * shape.hidden_size
    if checkpointing:
        kept = shape.num_layers * mb.tokens * shape.hidden_size * c
        return kept + per_layer + shared + final_norm
    return shape.num_layers * per_layer + shared + final_norm


def largest_micro_batch(budget: int, longest: int, sequences: int, c: int, shape: ModelShape, *,
                        checkpointing: bool) -> MicroBatchShape:
    """The micro-batch shape the packer can produce from ``sequences`` sequences of at most
    ``longest`` tokens (``batch * length <= budget``, a longer sequence alone) whose
    activations are largest."""
    if longest >= budget:
        return MicroBatchShape(1, longest)
    candidates = {MicroBatchShape(b, min(longest, budget // b)) for b in range(1, min(budget, sequences) + 1)}
    return max(candidates, key=lambda mb: (activation_bytes(shape, mb, c, checkpointing=checkpointing), mb.tokens))


def kept_pool_budget(free_bytes: int, beside_bytes: int, fraction: float, graph_bytes: int) -> int:
    """The KV pool's budget when it stays allocated through the update: ``fraction`` of what is
    free once the persistent state is in place (``free_bytes``) less what the update adds
    (``beside_bytes``), less the CUDA graphs' memory. The rest, ``1 - fraction`` of it, is the
    headroom for the decode step's transients and for the plan's error. May be <= 0: no room."""
    return int(max(free_bytes - beside_bytes, 0) * fraction) - graph_bytes


def kept_kv_cache_bytes(cfg, shape: ModelShape, free_bytes: int, *, world_size: int = 1, device: str = "cuda") -> int:
    """The KV pool size the trainer gives the engine with ``rollout.keep_kv_cache`` and a
    default-sized pool (``rollout.kv_cache_gb`` null): :func:`kept_pool_budget` of
    ``free_bytes`` (the memory free now, with the weights and the AdamW state in place), of
    what the update adds (this plan's count) and of the CUDA graphs when they are on.

    Raises ValueError (one line) when that leaves no room for a pool."""
    if free_bytes < 0:
        raise ValueError(f"free_bytes must be >= 0, got {free_bytes}")
    run = _RunState.of(cfg, shape, world_size, device)
    r = cfg.rollout
    graphs_on = r.cuda_graphs if r.cuda_graphs is not None else device == "cuda"
    graphs = graph_memory_bytes(shape, run.c, r.max_num_seqs) if graphs_on else 0
    budget = kept_pool_budget(free_bytes, run.beside_kept, r.gpu_memory_fraction, graphs)
    if budget <= 0:
        raise ValueError(f"rollout.keep_kv_cache: the update adds about {run.beside_kept / GiB:.1f} GiB "
                         f"{'and the CUDA graphs take ' + f'{graphs / GiB:.1f} GiB ' if graphs else ''}beside "
                         f"the {free_bytes / GiB:.1f} GiB free, which leaves no room for a KV pool kept through "
                         f"the update; set rollout.keep_kv_cache=false (the pool is then freed before each "
                         f"update) or lower algo.micro_batch_tokens")
    return budget


@dataclass
class _RunState:
    """What a plan's device size does not change: the persistent state and the update's
    additions to it, per device."""

    c: int
    p: int
    compute: str
    n_params: int
    sharded: bool
    persistent: list[MemoryItem]
    training: list[MemoryItem]
    update_bytes: int        # the update's peak above the persistent state
    gather_bytes: int        # FSDP2: the full-state gather before a rollout (0 otherwise)
    micro_batch: MicroBatchShape
    longest: int             # a prompt plus the schedule's largest cap

    @property
    def persistent_bytes(self) -> int:
        return sum(i.nbytes for i in self.persistent)

    @property
    def beside_kept(self) -> int:
        """The most a kept KV pool has to leave room for beside the persistent state: the
        update's additions, or the full-state gather before a rollout if larger."""
        return max(self.update_bytes, self.gather_bytes)

    @classmethod
    def of(cls, cfg, shape: ModelShape, world_size: int, device: str) -> "_RunState":
        compute = cfg.model.dtype if cfg.model.dtype != "auto" else ("bfloat16" if device == "cuda" else "float32")
        c, p = DTYPE_BYTES[compute], DTYPE_BYTES[cfg.model.param_dtype]
        n_params = shape.num_parameters()
        sharded = cfg.trainer.parallelism == "fsdp" and world_size > 1
        shard = world_size if sharded else 1
        mixed = c != p or compute != cfg.model.param_dtype
        checkpointing = cfg.model.gradient_checkpointing

        persistent = [MemoryItem("master weights", n_params * p // shard,
                                 f"{n_params:,} x {p} B" + (f" / {shard} ranks" if sharded else ""))]
        if sharded:
            persistent.append(MemoryItem("engine's full weights", n_params * c, f"{compute} copy gathered per step"))
        elif mixed:
            persistent.append(MemoryItem("compute copy", n_params * c, f"{compute}: training forward and engine"))
        persistent.append(MemoryItem("AdamW moments", 2 * n_params * p // shard, f"2 x {p} B per parameter"
                                     + (f" / {shard}" if sharded else "") + ", allocated with the optimizer"))
        if cfg.algo.kl_coef > 0:
            persistent.append(MemoryItem("reference model", n_params * c, f"frozen {compute} copy (kl_coef > 0)"))

        longest = cfg.data.max_prompt_tokens + cfg.length_schedule().longest_cap(cfg.trainer.steps)
        # sequences of one optimizer step on this rank
        per_update = (math.ceil(cfg.rollout.prompts_per_step / world_size / cfg.algo.mini_batches)
                      * cfg.rollout.group_size)
        mb = largest_micro_batch(cfg.algo.micro_batch_tokens, longest, per_update, c, shape,
                                 checkpointing=checkpointing)
        training, update_bytes = _update_phase(shape, mb, c, p, n_params, shard, mixed, checkpointing, device,
                                               compute=compute, several_micro_batches=mb.batch < per_update)
        return cls(c=c, p=p, compute=compute, n_params=n_params, sharded=sharded, persistent=persistent,
                   training=training, update_bytes=update_bytes, gather_bytes=n_params * p if sharded else 0,
                   micro_batch=mb, longest=longest)


def _resolve_shape(cfg, shape: ModelShape | None) -> ModelShape:
    if shape is not None:
        return shape
    from siri.models.shape import model_shape

    return model_shape(cfg.model.path, trust_remote_code=cfg.model.trust_remote_code)


def plan_memory(cfg, shape: ModelShape | None = None, *, device_memory_gb: float = 80.0, world_size: int = 1,
                device: str = "cuda", advise: bool = True) -> MemoryPlan:
    """The memory plan of ``cfg`` (a :class:`siri.config.Config`) per device.

    Args:
        shape: the model's sizes (default: read from ``cfg.model.path``'s config).
        device_memory_gb: memory of one device, GiB.
        world_size: processes (one per device).
        device: "cuda" or "cpu": picks what ``model.dtype: auto`` and a null ``kv_cache_gb``
            mean, and whether a CUDA reserve is kept.
        advise: fill ``plan.advice`` (plans a few variants of ``cfg``).
    """
    shape = _resolve_shape(cfg, shape)
    if world_size < 1:
        raise ValueError(f"world_size must be >= 1, got {world_size}")
    if not device_memory_gb > 0:
        raise ValueError(f"device_memory_gb must be > 0, got {device_memory_gb}")
    run = _RunState.of(cfg, shape, world_size, device)
    persistent_bytes = run.persistent_bytes
    keep = cfg.rollout.keep_kv_cache

    reserve = CUDA_RESERVE_BYTES if device == "cuda" else 0
    device_bytes = int(device_memory_gb * GiB)
    rollout, kv_bytes, kv_tokens, graphs = _rollout_phase(cfg, shape, run.c, device_bytes - reserve - persistent_bytes,
                                                          device, beside=run.beside_kept if keep else 0)
    training = list(run.training)
    training_peak = persistent_bytes + run.update_bytes
    kept = 0
    if keep:
        kept = kv_bytes + graphs
        training.append(MemoryItem("KV pool (kept)", kv_bytes, "rollout.keep_kv_cache: allocated at the first "
                                   "rollout, beside every update"))
        if graphs:
            training.append(MemoryItem("CUDA graphs (kept)", graphs, "kept with the pool"))
        training_peak += kept
    rollout_peak = persistent_bytes + sum(i.nbytes for i in rollout)
    if run.sharded:   # gathering the engine's copy materialises the full fp32 state once
        rollout_peak = max(rollout_peak, persistent_bytes + kept + run.gather_bytes)
    seqs = min(cfg.rollout.max_num_seqs, math.ceil(cfg.rollout.prompts_per_step / world_size) * cfg.rollout.group_size)
    plan = MemoryPlan(device_bytes=device_bytes, reserve_bytes=reserve, world_size=world_size,
                      parallelism="fsdp" if run.sharded else "ddp", compute_dtype=run.compute,
                      param_dtype=cfg.model.param_dtype, num_parameters=run.n_params, micro_batch=run.micro_batch,
                      gradient_checkpointing=cfg.model.gradient_checkpointing, persistent=run.persistent,
                      training=training, rollout=rollout, training_peak=training_peak, rollout_peak=rollout_peak,
                      kv_tokens=kv_tokens, kv_tokens_wanted=seqs * run.longest, kv_bytes=kv_bytes,
                      kv_min_tokens=run.longest, graph_bytes=graphs, keep_kv_cache=keep)
    if advise:
        plan.advice = _advice(plan, cfg, shape, device_memory_gb, world_size, device)
    return plan


def _update_phase(shape, mb, c, p, n_params, shard, mixed, checkpointing, device, *, compute,
                  several_micro_batches):
    """The update phase's items and the largest sum of them alive at once. The master
    gradients exist beside a micro-batch's activations only from an optimizer step's second
    micro-batch on."""
    acts = activation_bytes(shape, mb, c, checkpointing=checkpointing)
    logits = mb.tokens * (shape.vocab_size + shape.hidden_size) * c
    master_grads = n_params * p // shard
    items = [MemoryItem("master gradients", master_grads, f"{p} B per parameter" + (f" / {shard}" if shard > 1 else "")),
             MemoryItem("activations", acts, f"{mb.tokens:,} tokens" + (", checkpointed" if checkpointing else "")),
             MemoryItem("logits", logits, f"response rows x vocab {shape.vocab_size:,}, one copy (in-place backward)")]
    beside_activations = end_of_backward = 0
    if shard > 1:
        # the root module (embedding, final norm, LM head) is gathered when the forward starts
        # and FSDP2 does not reshard the root after forward: its compute weights live through
        # the whole forward and backward. The head's gradient is computed first in backward and
        # reduce-scattered with the root's, when backward ends.
        head = shape.vocab_size * shape.hidden_size
        root = n_params - shape.num_layers * shape.layer_parameters()
        items.append(MemoryItem("FSDP2 root, unsharded", root * c, f"embedding, final norm and head in {compute}, "
                                "from the forward's start to the backward's end"))
        items.append(MemoryItem("LM head gradient", head * c, f"unsharded {compute}, from the backward's start "
                                "to the root's reduce-scatter"))
        beside_activations = (root + head) * c
        # at the end of a backward: the root's weights and gradients and their fp32
        # reduce-scatter input, and up to two layers with their gradients in both dtypes
        end_of_backward = root * (2 * c + p) + 2 * shape.layer_parameters() * (c + p)
        items.append(MemoryItem("FSDP2 end of backward", end_of_backward, "root weights and gradients with their "
                                "fp32 reduce-scatter input, two layers with gradients"))
    elif mixed:
        # each compute-dtype gradient is cast and added to its master gradient, one at a time;
        # from the second micro-batch on, the master gradients exist beside all of them
        cast = shape.largest_parameter() * p
        end_of_backward = cast + (n_params * c if several_micro_batches else 0)
        items.append(MemoryItem("compute-dtype gradients", end_of_backward, "beside the master gradients: "
                                + ("all of them, " if several_micro_batches else "") + "one parameter's fp32 cast"))
    # torch's foreach AdamW (the CUDA default) holds one parameter-sized temporary (the second
    # moments' sqrt); the CPU's per-parameter loop two of the largest parameter's size
    step_temp = n_params * p // shard if device == "cuda" else 2 * shape.largest_parameter() * p
    items.append(MemoryItem("AdamW step temporaries", step_temp, "foreach sqrt of the second moments"
                            if device == "cuda" else "one parameter at a time"))
    peak = max(acts + logits + beside_activations + (master_grads if several_micro_batches else 0),
               master_grads + max(end_of_backward, step_temp))
    return items, peak


def _rollout_phase(cfg, shape, c, free_bytes, device, *, beside=0):
    """The rollout phase's items, the KV pool's bytes (>= 0), how many tokens it holds, and
    the CUDA graphs' bytes. ``beside``: what a kept pool leaves room for (keep_kv_cache)."""
    r = cfg.rollout
    graphs = graph_memory_bytes(shape, c, r.max_num_seqs) if device == "cuda" and r.cuda_graphs is not False else 0
    if r.kv_cache_gb is not None:
        kv_bytes, how = int(r.kv_cache_gb * GiB), "rollout.kv_cache_gb"
    elif device == "cuda":
        free = max(free_bytes, 0)
        if beside:
            kv_bytes = kept_pool_budget(free_bytes, beside, r.gpu_memory_fraction, graphs)
            how = (f"kept: {r.gpu_memory_fraction:g} x (the {free / GiB:.1f} GiB free at rollout start - the "
                   f"{beside / GiB:.1f} GiB the update adds)" + (", less the graphs" if graphs else ""))
        else:
            kv_bytes = int(free * r.gpu_memory_fraction) - graphs
            how = (f"{r.gpu_memory_fraction:g} x the {free / GiB:.1f} GiB free at rollout start"
                   + (", less the graphs" if graphs else ""))
        if kv_bytes <= 0:
            if free_bytes <= 0:
                why = f"the persistent state leaves nothing of the device ({-free_bytes / GiB:.1f} GiB short)"
            elif beside and free_bytes <= beside:
                why = (f"the update adds {beside / GiB:.1f} GiB to the {free / GiB:.1f} GiB free and the pool is kept "
                       f"(rollout.keep_kv_cache)")
            else:
                why = f"the CUDA graphs ({graphs / GiB:.1f} GiB) take all of the pool's budget"
            kv_bytes, how = 0, f"no room: {why}"
    else:
        kv_bytes, how = CPU_DEFAULT_KV_BYTES, "CPU default"
    per_token = shape.kv_bytes_per_token(c)
    kv_tokens = kv_bytes // per_token // r.page_size * r.page_size
    decode_logits = r.max_num_seqs * shape.vocab_size * 4
    items = [MemoryItem("KV pool", kv_bytes, f"{how}; {per_token:,} B per token"),
             MemoryItem("decode logits", decode_logits, f"{r.max_num_seqs} sequences x vocab, fp32")]
    if graphs:
        items.append(MemoryItem("CUDA graphs", graphs, f"decode graphs up to {r.max_num_seqs} rows: their shared "
                                f"logits and one forward's activations"))
    return items, kv_bytes, kv_tokens, graphs


def _advice(plan: MemoryPlan, cfg, shape, device_memory_gb, world_size, device) -> list[str]:
    """What to change when the run does not fit: the fewest of gradient checkpointing, a
    smaller micro-batch budget and FSDP2 that make it fit, as dotted overrides; else the
    fewest FSDP2 devices that would."""
    advice = []
    if plan.kv_fits and plan.kv_tokens < plan.kv_tokens_wanted:
        more = "rollout.gpu_memory_fraction or rollout.kv_cache_gb"
        if plan.keep_kv_cache:
            more += ", or rollout.keep_kv_cache=false (the pool then takes memory the update frees)"
        if plan.parallelism != "fsdp" and world_size > 1:
            more += ", or trainer.parallelism=fsdp (frees the persistent state for the pool)"
        advice.append(f"the KV pool holds {plan.kv_tokens / max(plan.kv_tokens_wanted, 1):.0%} of what every "
                      f"sequence at the full cap would take: the rest wait or are preempted and recomputed "
                      f"(to give it more: {more})")
    if plan.fits:
        return advice

    def fits(changes: dict[str, object], world: int = world_size) -> bool:
        other = copy.deepcopy(cfg)
        for key, value in changes.items():
            section, name = key.split(".")
            setattr(getattr(other, section), name, value)
        return plan_memory(other, shape, device_memory_gb=device_memory_gb, world_size=world,
                           device=device, advise=False).fits

    if plan.keep_kv_cache and fits({"rollout.keep_kv_cache": False}):
        advice.append("set rollout.keep_kv_cache=false: it fits when the KV pool is freed before each update")
        return advice
    changes: dict[str, object] = {}
    if not cfg.model.gradient_checkpointing:
        changes["model.gradient_checkpointing"] = True
    if not fits(changes) and cfg.trainer.parallelism != "fsdp" and world_size > 1:
        changes["trainer.parallelism"] = "fsdp"
    budget = cfg.algo.micro_batch_tokens
    # no micro-batch budget helps when the persistent state alone is too large
    too_large = plan.persistent_bytes > plan.usable_bytes and "trainer.parallelism" not in changes
    while not too_large and not fits(changes) and budget > 512:
        budget //= 2
        changes["algo.micro_batch_tokens"] = budget

    def overrides(items: dict[str, object]) -> str:
        return " ".join(f"{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in items.items())

    if fits(changes):
        advice.append(f"set {overrides(changes)}")
    else:
        # more devices under FSDP2: first with the micro-batch budget as configured
        kept = {k: v for k, v in changes.items() if k != "algo.micro_batch_tokens"}
        devices, sharded = None, {}
        for candidate in (kept, changes):
            sharded = {**candidate, "trainer.parallelism": "fsdp"}
            devices = next((n for n in (2, 4, 8, 16, 32, 64) if n > world_size and fits(sharded, n)), None)
            if devices is not None:
                break
        tried = f"even with {overrides(changes)}" if changes else "as configured"
        if too_large:
            tried += " (the persistent state alone is too large: no micro-batch budget helps)"
        if devices is not None:
            advice.append(f"does not fit on {world_size} device(s) {tried}; it fits with {overrides(sharded)} over "
                          f"{devices} devices (--nproc {devices})")
        else:
            advice.append(f"does not fit {tried}, nor with trainer.parallelism=fsdp over up to 64 devices: use "
                          f"larger devices")
    if world_size == 1 and cfg.trainer.parallelism != "fsdp":
        advice.append("with several GPUs, trainer.parallelism=fsdp and --nproc N divide the master weights, "
                      "gradients and AdamW state by N")
    return advice


def engine_kv_cache_bytes(cfg, model_config, device, *, world_size: int = 1) -> int | None:
    """The KV pool's size for the trainer's engine: ``rollout.kv_cache_gb``; else, with
    ``rollout.keep_kv_cache`` (the pool stays allocated through every update), a size that
    leaves room for the update's peak: ``gpu_memory_fraction`` of the memory free now (the
    weights and AdamW state in place) less what this plan says the update adds, less the CUDA
    graphs (:func:`kept_kv_cache_bytes`). Else None: the engine takes its share of the free
    memory at each rollout, and the trainer frees the pool before each update. Where no
    free-memory query exists (the CPU), the engine's default.

    Args:
        cfg: the run's Config. model_config: the policy's HF config.
        device: the torch.device the engine runs on. world_size: ranks of the job.
    """
    from siri.engine import device_memory

    r = cfg.rollout
    if r.kv_cache_gb is not None:
        return int(r.kv_cache_gb * 2**30)
    if not r.keep_kv_cache:
        return None
    free = device_memory.free_bytes(device)
    if free is None:
        return None
    shape = ModelShape.from_hf_config(model_config)
    return kept_kv_cache_bytes(cfg, shape, free, world_size=world_size, device=device.type)
