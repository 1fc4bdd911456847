"""Per-device memory of a training run, from the config and the model's HF config alone.

    from siri.memory_plan import plan_memory
    plan = plan_memory(cfg, device_memory_gb=80, world_size=8)
    print(plan.fits, plan.training_peak / 2**30, plan.advice)

``siri train CONFIG --dry-run`` prints it. The plan follows what the trainer holds:

* **persistent** (the whole run): the weights in ``model.param_dtype`` (the master copy), the
  compute-dtype copy the training forward and the engine read (when the dtypes differ, or the
  full copy FSDP2 gathers for the engine), AdamW's two moments, a frozen reference copy when
  ``algo.kl_coef > 0``. FSDP2 divides the master weights and moments by the world size.
* **update phase**: the master gradients (from the second micro-batch on they exist while the
  next micro-batch's activations do), the largest micro-batch's saved activations (with or
  without gradient checkpointing) and its response-row logits (one copy: the fused loss writes
  dlogits in place); at the end of a backward, the compute-dtype gradients beside the master
  ones instead; AdamW's step temporaries.
* **rollout phase**: the KV pool (``rollout.kv_cache_gb``, or ``gpu_memory_fraction`` of what
  is free once the persistent state is in place) and the decode step's logits.

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
from siri.model_shape import ModelShape

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

    ``training_peak`` / ``rollout_peak``: the largest total of each phase; ``fits`` compares
    the larger with ``usable_bytes`` (the device less ``reserve_bytes``)."""

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
    advice: list[str] = field(default_factory=list)

    @property
    def usable_bytes(self) -> int:
        return self.device_bytes - self.reserve_bytes

    @property
    def peak(self) -> int:
        return max(self.training_peak, self.rollout_peak)

    @property
    def fits(self) -> bool:
        return self.peak <= self.usable_bytes

    def render(self, console) -> None:
        """Print the plan as a rich table with its verdict and advice."""
        from rich.table import Table

        title = (f"memory plan per device: {self.device_bytes / GiB:.0f} GiB, {self.world_size} x "
                 f"{self.parallelism}, {self.num_parameters / 1e9:.2f}B parameters, compute "
                 f"{self.compute_dtype}, master {self.param_dtype}")
        table = Table(title=title)
        for column, justify in (("phase", "left"), ("item", "left"), ("GiB", "right"), ("how", "left")):
            table.add_column(column, justify=justify)
        for phase, items in (("persistent", self.persistent), ("update", self.training), ("rollout", self.rollout)):
            for item in items:
                table.add_row(phase, item.name, f"{item.nbytes / GiB:.2f}", item.note)
        table.add_row("", "[bold]update peak[/bold]", f"[bold]{self.training_peak / GiB:.2f}[/bold]",
                      f"largest micro-batch {self.micro_batch.batch} x {self.micro_batch.length} tokens, "
                      f"checkpointing {'on' if self.gradient_checkpointing else 'off'}")
        table.add_row("", "[bold]rollout peak[/bold]", f"[bold]{self.rollout_peak / GiB:.2f}[/bold]",
                      f"KV pool holds {self.kv_tokens:,} tokens of the {self.kv_tokens_wanted:,} that "
                      f"every sequence at the full cap would take")
        console.print(table)
        verdict = "fits" if self.fits else "does NOT fit"
        console.print(f"verdict: {verdict}: peak {self.peak / GiB:.1f} GiB of {self.usable_bytes / GiB:.1f} GiB "
                      f"usable ({self.reserve_bytes / GiB:.0f} GiB kept for the CUDA context, NCCL and "
                      f"fragmentation)")
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
    if shape is None:
        from siri.model_shape import model_shape

        shape = model_shape(cfg.model.path, trust_remote_code=cfg.model.trust_remote_code)
    if world_size < 1:
        raise ValueError(f"world_size must be >= 1, got {world_size}")
    if not device_memory_gb > 0:
        raise ValueError(f"device_memory_gb must be > 0, got {device_memory_gb}")
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
                                 + (f" / {shard}" if sharded else "")))
    if cfg.algo.kl_coef > 0:
        persistent.append(MemoryItem("reference model", n_params * c, f"frozen {compute} copy (kl_coef > 0)"))
    persistent_bytes = sum(i.nbytes for i in persistent)

    schedule = cfg.length_schedule()
    longest = cfg.data.max_prompt_tokens + max(schedule(t) for t in range(cfg.trainer.steps))
    # sequences of one optimizer step on this rank
    per_update = math.ceil(cfg.rollout.prompts_per_step / world_size / cfg.algo.mini_batches) * cfg.rollout.group_size
    mb = largest_micro_batch(cfg.algo.micro_batch_tokens, longest, per_update, c, shape, checkpointing=checkpointing)
    training, training_peak = _update_phase(shape, mb, c, p, n_params, shard, mixed, checkpointing, device,
                                            several_micro_batches=mb.batch < per_update)
    training_peak += persistent_bytes

    reserve = CUDA_RESERVE_BYTES if device == "cuda" else 0
    device_bytes = int(device_memory_gb * GiB)
    rollout, kv_tokens = _rollout_phase(cfg, shape, c, device_bytes - reserve - persistent_bytes, device)
    rollout_peak = persistent_bytes + sum(i.nbytes for i in rollout)
    if sharded:   # gathering the engine's copy materialises the full fp32 state once
        rollout_peak = max(rollout_peak, persistent_bytes + n_params * p)
    seqs = min(cfg.rollout.max_num_seqs, math.ceil(cfg.rollout.prompts_per_step / world_size) * cfg.rollout.group_size)
    plan = MemoryPlan(device_bytes=device_bytes, reserve_bytes=reserve, world_size=world_size,
                      parallelism="fsdp" if sharded else "ddp", compute_dtype=compute,
                      param_dtype=cfg.model.param_dtype, num_parameters=n_params, micro_batch=mb,
                      gradient_checkpointing=checkpointing, persistent=persistent, training=training,
                      rollout=rollout, training_peak=training_peak, rollout_peak=rollout_peak,
                      kv_tokens=kv_tokens, kv_tokens_wanted=seqs * longest)
    if advise:
        plan.advice = _advice(plan, cfg, shape, device_memory_gb, world_size, device)
    return plan


def _update_phase(shape, mb, c, p, n_params, shard, mixed, checkpointing, device, *, several_micro_batches):
    """The update phase's items and the largest sum of them alive at once. The master
    gradients exist beside a micro-batch's activations only from an optimizer step's second
    micro-batch on."""
    acts = activation_bytes(shape, mb, c, checkpointing=checkpointing)
    logits = mb.tokens * (shape.vocab_size + shape.hidden_size) * c
    master_grads = n_params * p // shard
    items = [MemoryItem("master gradients", master_grads, f"{p} B per parameter" + (f" / {shard}" if shard > 1 else "")),
             MemoryItem("activations", acts, f"{mb.tokens:,} tokens" + (", checkpointed" if checkpointing else "")),
             MemoryItem("logits", logits, f"response rows x vocab {shape.vocab_size:,}, one copy (in-place backward)")]
    end_of_backward = 0
    if shard > 1:
        # FSDP2 unshards a layer (and the root's embedding / head) at a time, with full fp32
        # gradients until they are reduce-scattered
        unsharded = 2 * shape.layer_parameters() + 2 * shape.vocab_size * shape.hidden_size
        end_of_backward = unsharded * (c + p)
        items.append(MemoryItem("FSDP2 unsharded working set", end_of_backward, "two layers + embedding/head, "
                                "compute weights and fp32 gradients"))
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
    peak = max(acts + logits + (master_grads if several_micro_batches else 0),
               master_grads + max(end_of_backward, step_temp))
    return items, peak


def _rollout_phase(cfg, shape, c, free_bytes, device):
    """The rollout phase's items, and how many tokens the KV pool holds."""
    r = cfg.rollout
    if r.kv_cache_gb is not None:
        kv_bytes, how = int(r.kv_cache_gb * GiB), "rollout.kv_cache_gb"
    elif device == "cuda":
        kv_bytes = int(max(free_bytes, 0) * r.gpu_memory_fraction)
        how = f"{r.gpu_memory_fraction:g} x the {max(free_bytes, 0) / GiB:.1f} GiB free at rollout start"
    else:
        kv_bytes, how = CPU_DEFAULT_KV_BYTES, "CPU default"
    per_token = shape.kv_bytes_per_token(c)
    kv_tokens = kv_bytes // per_token // r.page_size * r.page_size
    decode_logits = r.max_num_seqs * shape.vocab_size * 4
    items = [MemoryItem("KV pool", kv_bytes, f"{how}; {per_token:,} B per token"),
             MemoryItem("decode logits", decode_logits, f"{r.max_num_seqs} sequences x vocab, fp32")]
    if device == "cuda" and r.cuda_graphs is not False:
        graphs = graph_memory_bytes(shape, c, r.max_num_seqs)
        items.append(MemoryItem("CUDA graphs", graphs, f"decode activations at {r.max_num_seqs} rows (estimate)"))
        if r.kv_cache_gb is None:  # the engine takes the graphs' memory out of the pool's budget
            kv_bytes -= graphs
            items[0] = MemoryItem("KV pool", kv_bytes, f"{how}, less the graphs; {per_token:,} B per token")
            kv_tokens = max(kv_bytes, 0) // per_token // r.page_size * r.page_size
    return items, kv_tokens


def _advice(plan: MemoryPlan, cfg, shape, device_memory_gb, world_size, device) -> list[str]:
    """What to change when the run does not fit: the fewest of gradient checkpointing, a
    smaller micro-batch budget and FSDP2 that make it fit, as dotted overrides."""
    advice = []
    if plan.kv_tokens < plan.kv_tokens_wanted:
        more = "rollout.gpu_memory_fraction or rollout.kv_cache_gb"
        if plan.parallelism != "fsdp" and world_size > 1:
            more += ", or trainer.parallelism=fsdp (frees the persistent state for the pool)"
        advice.append(f"the KV pool holds {plan.kv_tokens / max(plan.kv_tokens_wanted, 1):.0%} of what every "
                      f"sequence at the full cap would take: the rest wait or are preempted and recomputed "
                      f"(to give it more: {more})")
    if plan.fits:
        return advice

    def fits(changes: dict[str, object]) -> bool:
        other = copy.deepcopy(cfg)
        for key, value in changes.items():
            section, name = key.split(".")
            setattr(getattr(other, section), name, value)
        return plan_memory(other, shape, device_memory_gb=device_memory_gb, world_size=world_size,
                           device=device, advise=False).fits

    changes: dict[str, object] = {}
    if not cfg.model.gradient_checkpointing:
        changes["model.gradient_checkpointing"] = True
    if not fits(changes) and cfg.trainer.parallelism != "fsdp" and world_size > 1:
        changes["trainer.parallelism"] = "fsdp"
    budget = cfg.algo.micro_batch_tokens
    while not fits(changes) and budget > 512:
        budget //= 2
        changes["algo.micro_batch_tokens"] = budget
    overrides = " ".join(f"{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in changes.items())
    if fits(changes):
        advice.append(f"set {overrides}")
    else:
        advice.append(f"does not fit even with {overrides}: use FSDP over more devices "
                      f"(--nproc N with trainer.parallelism=fsdp) or larger devices")
    if world_size == 1 and cfg.trainer.parallelism != "fsdp":
        advice.append("with several GPUs, trainer.parallelism=fsdp and --nproc N divide the master weights, "
                      "gradients and AdamW state by N")
    return advice
