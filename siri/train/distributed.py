"""Data parallelism over processes with torch.distributed (torchrun): who owns which prompt
groups, and the few collectives the trainer needs.

Launched with ``torchrun`` (``WORLD_SIZE`` > 1 in the environment) the trainer joins a process
group: ``cpu:gloo,cuda:nccl`` when it trains on CUDA (NCCL serves CUDA tensors only; gloo
carries the pickled objects of ``all_gather_object``), gloo on the CPU, through the same code.
Every tensor the trainer hands to a collective lives on ``DistContext.device``. Every rank draws
the same global batch of prompts; each rank generates, scores and trains on its share of the
prompt groups (a prompt's G samples stay on one rank, so group advantages need no
communication). Gradients are summed across ranks once per optimizer step; with the loss
normalised by the step's global token count, the update equals the single-process one.
"""
from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Any, cast

import torch
import torch.distributed as dist


class RankFailure(RuntimeError):
    """A collective did not complete: another rank died or hung."""


@dataclass(frozen=True)
class DistContext:
    """This process's place in the job. ``enabled`` is False for a single process."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    enabled: bool = False
    timeout_s: float = 600.0
    device: torch.device = torch.device("cpu")
    """Where tensors passed to collectives must live: this rank's GPU under NCCL, else the CPU."""
    local_world_size: int = 1
    """Processes of this job on this machine (torchrun's ``LOCAL_WORLD_SIZE``): they share its CPUs."""

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum ``tensor`` (on :attr:`device`) over ranks, in place (a no-op for one process)."""
        if self.enabled:
            if tensor.device != self.device:
                raise ValueError(f"all_reduce_sum: the tensor is on {tensor.device} but this process group's "
                                 f"collectives run on {self.device}")
            self._guard(dist.all_reduce, tensor, op=dist.ReduceOp.SUM)
        return tensor

    def sum_values(self, values: list[float]) -> list[float]:
        """Element-wise sums of ``values`` over ranks, in float64 (sent from :attr:`device`)."""
        if not self.enabled:
            return list(values)
        return self.all_reduce_sum(torch.tensor(values, dtype=torch.float64, device=self.device)).tolist()

    def all_reduce_max(self, value: int) -> int:
        """The largest ``value`` over ranks."""
        if not self.enabled:
            return value
        t = torch.tensor([value], dtype=torch.int64, device=self.device)
        self._guard(dist.all_reduce, t, op=dist.ReduceOp.MAX)
        return int(t[0])

    def broadcast_int(self, value: int, src: int = 0) -> int:
        """Rank ``src``'s ``value`` on every rank (sent from :attr:`device`)."""
        if not self.enabled:
            return value
        t = torch.tensor([value], dtype=torch.int64, device=self.device)
        self._guard(dist.broadcast, t, src=src)
        return int(t[0])

    def agree(self, error: str | None, what: str, hint: str = "") -> None:
        """Every rank reports whether it succeeded at ``what`` (``error`` None) or why not; if any
        rank failed, every rank raises the same one-line ValueError naming the failed ranks and
        their reasons, then ``hint``. A collective: all ranks call it, so a failure on one rank
        stops them all instead of leaving the others waiting in their next collective."""
        errors = self.all_gather_objects(error)
        failed = [f"rank {rank}: {e}" for rank, e in enumerate(errors) if e is not None]
        if failed:
            raise ValueError(f"{what} failed on {len(failed)} of {self.world_size} ranks ({'; '.join(failed)})"
                             + (f"; {hint}" if hint else ""))

    def all_gather_objects(self, obj: Any) -> list[Any]:
        """Every rank's ``obj``, in rank order (``[obj]`` for one process)."""
        if not self.enabled:
            return [obj]
        out: list[Any] = [None] * self.world_size
        self._guard(dist.all_gather_object, out, obj)
        return out

    def barrier(self) -> None:
        if self.enabled:
            self._guard(dist.barrier)

    def _guard(self, fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (RuntimeError, dist.DistError) as e:
            raise RankFailure(
                f"rank {self.rank}/{self.world_size}: a collective failed or did not complete within "
                f"{self.timeout_s:.0f} s (trainer.dist_timeout_s); another rank has probably died, see its "
                f"log. Cause: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from e


def init_distributed(use_cuda: bool, timeout_s: float) -> DistContext:
    """Join the torchrun process group when ``WORLD_SIZE`` > 1; else a single-process context."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext(timeout_s=timeout_s)
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
    if use_cuda:
        visible = torch.cuda.device_count()
        if local_rank >= visible:
            raise ValueError(f"LOCAL_RANK {local_rank} needs CUDA device {local_rank}, but {visible} "
                             f"{'is' if visible == 1 else 'are'} visible: start at most {visible} processes per "
                             f"machine (--nproc), or train on the CPU (model.device=cpu)")
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend=process_group_backend(use_cuda),
                                timeout=datetime.timedelta(seconds=timeout_s))
    return DistContext(rank, world, local_rank, True, timeout_s, device,
                       int(os.environ.get("LOCAL_WORLD_SIZE", str(world))))


def process_group_backend(use_cuda: bool) -> str:
    """NCCL for CUDA tensors plus gloo for CPU ones on GPUs; gloo alone on the CPU."""
    return "cpu:gloo,cuda:nccl" if use_cuda else "gloo"


def owned_groups(num_groups: int, mini_batches: int, rank: int, world_size: int) -> list[int]:
    """The global group indices a rank trains on, in order.

    The step's groups are split into ``mini_batches`` equal mini-batches (as in one process),
    and each mini-batch into ``world_size`` equal parts; rank r owns part r of every
    mini-batch. So local mini-batch i of every rank together is exactly global mini-batch i.
    Requires ``num_groups % (mini_batches * world_size) == 0`` (checked by the config).
    """
    per_mini = num_groups // mini_batches
    per_rank = per_mini // world_size
    return [m * per_mini + rank * per_rank + j for m in range(mini_batches) for j in range(per_rank)]


def shard_model(model: torch.nn.Module, compute_dtype: torch.dtype | None = None) -> None:
    """FSDP2: shard every decoder layer and then the rest of ``model`` across the ranks, in
    place. With ``compute_dtype`` the shards stay in their dtype (fp32) and each layer is
    gathered in ``compute_dtype`` for the forward/backward, its gradients reduce-scattered in
    fp32 (``MixedPrecisionPolicy(param_dtype=compute_dtype, reduce_dtype=float32)``).
    FSDP2 averages gradients over ranks; the trainer scales its loss by the world size so the
    result is their sum (gloo has no pre-multiplied sum to do it in the reduction)."""
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    policy = MixedPrecisionPolicy()
    if compute_dtype is not None:
        policy = MixedPrecisionPolicy(param_dtype=compute_dtype, reduce_dtype=torch.float32)
    decoder: Any = model.model   # a transformers causal LM's decoder (its layers: .layers)
    for layer in decoder.layers:
        fully_shard(layer, mp_policy=policy)
    fully_shard(model, mp_policy=policy)


def full_model_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter and buffer of ``model`` as full tensors on every rank (a collective
    when ``model`` is FSDP-sharded; plain tensors otherwise)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    # full_state_dict=True: every value is a full torch.Tensor (the declared ValueType is wider)
    return cast("dict[str, torch.Tensor]",
                get_model_state_dict(model, options=StateDictOptions(full_state_dict=True)))


def full_optimizer_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    """The optimizer state keyed by parameter name, with full tensors on the CPU: the same
    layout for one process, DDP and FSDP2, so a checkpoint resumes under any of them and any
    world size (a collective when sharded)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    return get_optimizer_state_dict(model, optimizer,
                                    options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def load_full_optimizer_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer, state: dict) -> None:
    """Inverse of :func:`full_optimizer_state` (each rank passes the whole state; sharded
    optimizers keep their shard)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    set_optimizer_state_dict(model, optimizer, optim_state_dict=state,
                             options=StateDictOptions(full_state_dict=True))


def shutdown(ctx: DistContext) -> None:
    if ctx.enabled and dist.is_initialized():
        dist.destroy_process_group()


def leave_process_group() -> None:
    """Destroy the process group this process joined, if any: for an error every rank raised
    together (e.g. :meth:`DistContext.agree`), so each exits with its own status and message
    instead of aborting in the group's threads at interpreter exit."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
