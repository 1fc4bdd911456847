"""Mixed precision: who holds which copy of the policy's weights, in which dtype.

At lr 1e-6 an AdamW update is about 5e-5 of a typical weight, far below bf16's resolution
(2^-8 relative), so a bf16 parameter rounds most updates away. The trainer therefore keeps
the weights the optimizer updates (the *master* weights), their gradients and the AdamW
state in ``model.param_dtype`` (fp32), and computes in ``model.dtype`` (bf16 on GPU).

:class:`PolicyWeights` owns the three roles a module can play:

* ``train_model``: runs the training forward/backward.
* ``rollout_model``: the plain (unsharded) module the rollout engine and the old-logprob
  pass read, in the compute dtype. No copy between processes: it is ``train_model`` itself,
  or a copy refreshed in this process.
* ``master_model``: the module whose parameters the optimizer updates, whose names key the
  optimizer state, and which checkpoints save (in ``param_dtype``).

The three layouts:

============================  ==================  =====================  ===================
layout                        train_model         rollout_model          master_model
============================  ==================  =====================  ===================
one dtype (fp32, or pure bf16) the model          the same module        the same module
master weights (1 process     compute copy        the compute copy       fp32 copy; grads
or DDP, param wider)          (bf16)              (no copy)              summed into it
FSDP2                         fp32 shards, bf16   full compute copy,     the sharded module
                              compute (MixedPre-  gathered once per
                              cisionPolicy)       step
============================  ==================  =====================  ===================

DDP uses a bf16 working copy rather than autocast: the engine needs bf16 weights anyway
(its paged kernels and projections read the module's parameters), so one bf16 copy serves
both the training forward and the rollouts, and the forward is the same bf16 computation the
engine runs, with no per-forward casts of every weight.

:class:`PolicyOptimizer` is AdamW over the master weights (its moments in ``param_dtype``)
with the end of every optimizer step: the ranks' gradients summed in ``param_dtype``, the
global norm clipped, and a step with a non-finite loss or gradient skipped.
"""
from __future__ import annotations

import copy
import math
from typing import Any

import torch

from siri.config import OptimConfig
from siri.train.distributed import (DistContext, full_model_state, full_optimizer_state, load_full_optimizer_state,
                              shard_model)


def compute_copy(model: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    """A structural copy of ``model`` whose floating parameters are ``dtype`` copies; buffers
    (rotary frequencies) are copied unchanged. Never holds a second full-width copy: each
    parameter is cast on its own (the deep copy takes the cast tensors from its memo)."""
    memo = {}
    for p in model.parameters():
        if id(p) not in memo:
            cast = p.detach().to(dtype) if p.is_floating_point() else p.detach().clone()
            memo[id(p)] = torch.nn.Parameter(cast, requires_grad=p.requires_grad)
    clone = copy.deepcopy(model, memo)
    if hasattr(clone, "config"):
        clone.config.dtype = dtype
    return clone


def _enable_gradient_checkpointing(model: torch.nn.Module) -> None:
    """``model`` is a transformers ``PreTrainedModel``: HF gradient checkpointing."""
    hf_model: Any = model
    hf_model.gradient_checkpointing_enable()


class PolicyWeights:
    """The policy's weights in their roles (see the module docstring).

    Args:
        model: the loaded policy, in ``param_dtype`` (on its device; not yet sharded).
        compute_dtype: ``model.dtype`` resolved (bf16 / fp32 / fp16).
        param_dtype: ``model.param_dtype`` resolved (fp32 or bf16).
        sharded: FSDP2 over the current process group.
        gradient_checkpointing: enable HF gradient checkpointing on the training module.
    """

    def __init__(self, model: torch.nn.Module, *, compute_dtype: torch.dtype, param_dtype: torch.dtype,
                 sharded: bool = False, gradient_checkpointing: bool = False):
        self.compute_dtype, self.param_dtype, self.sharded = compute_dtype, param_dtype, sharded
        self.mixed = compute_dtype != param_dtype
        if sharded:
            self.rollout_model = compute_copy(model, compute_dtype).requires_grad_(False)
            if gradient_checkpointing:
                _enable_gradient_checkpointing(model)
            shard_model(model, compute_dtype=compute_dtype if self.mixed else None)
            self.train_model = self.master_model = model
            self._rollout_stale = False
        elif self.mixed:
            self.master_model = model
            self.train_model = self.rollout_model = compute_copy(model, compute_dtype)
            if gradient_checkpointing:
                _enable_gradient_checkpointing(self.train_model)
            self._pairs = _parameter_pairs(self.master_model, self.train_model)
            for master, _ in self._pairs:
                master.requires_grad_(True)
        else:
            if gradient_checkpointing:
                _enable_gradient_checkpointing(model)
            self.train_model = self.rollout_model = self.master_model = model

    def optimizer_parameters(self) -> list[torch.nn.Parameter]:
        """The parameters the optimizer updates (master / shards), in a fixed order."""
        return list(self.master_model.parameters())

    def accumulate_gradients(self) -> None:
        """After a micro-batch's backward: add the compute copy's gradients into the master
        gradients (in ``param_dtype``) and free them. A no-op outside the master layout."""
        if not self.mixed or self.sharded:
            return
        for master, work in self._pairs:
            if work.grad is None:
                continue
            grad = work.grad.to(master.dtype)
            if master.grad is None:
                master.grad = grad
            else:
                master.grad.add_(grad)
            work.grad = None

    def zero_grad(self) -> None:
        for module in {id(m): m for m in (self.master_model, self.train_model)}.values():
            module.zero_grad(set_to_none=True)

    @torch.no_grad()
    def after_optimizer_step(self) -> None:
        """Make the compute weights follow the updated master weights: copied (rounded to the
        compute dtype) in the master layout; marked for a gather before the next rollout
        under FSDP2 (a collective, so it happens where every rank is)."""
        if self.sharded:
            self._rollout_stale = True
        elif self.mixed:
            for master, work in self._pairs:
                work.copy_(master)

    def refresh_rollout_model(self, *, force: bool = False) -> None:
        """FSDP2: gather the full weights into the engine's copy if an optimizer step changed
        them (a collective: every rank must call it). Elsewhere a no-op."""
        if self.sharded and (self._rollout_stale or force):
            full = full_model_state(self.train_model)
            with torch.no_grad():
                for name, tensor in self.rollout_model.state_dict().items():
                    tensor.copy_(full[name])
            self._rollout_stale = False

    def checkpoint_state(self) -> dict[str, torch.Tensor]:
        """Every weight in ``param_dtype`` as full tensors, keyed like the HF model's state
        dict (a collective under FSDP2)."""
        if self.sharded:
            return full_model_state(self.train_model)
        return self.master_model.state_dict()


class TrainingAborted(RuntimeError):
    """Training cannot continue (e.g. too many consecutive non-finite gradients)."""


class PolicyOptimizer:
    """AdamW over the policy's master weights, its learning-rate warmup, and the end of every
    optimizer step (:meth:`step`): gradient reduce, clip, and step or skip.

    The AdamW state exists from construction on (:func:`init_optimizer_state`), so memory
    sized before the first step sees it.

    Args:
        weights: the policy's weights; AdamW updates ``weights.optimizer_parameters()``.
        optim: ``lr``, ``betas``, ``eps``, ``weight_decay``; ``warmup_steps`` (a linear ramp
            over that many optimizer steps, then constant); ``grad_clip`` (the global norm's
            bound; 0: no clipping).
        dist: the process group whose ranks' gradients are summed (DDP).
        max_consecutive_skips: this many skipped steps in a row raise :class:`TrainingAborted`.

    Attributes:
        optimizer (torch.optim.AdamW), lr_scheduler (torch.optim.lr_scheduler.LambdaLR).
        skipped_steps (int): steps skipped so far in the run (checkpointed).
    """

    def __init__(self, weights: PolicyWeights, optim: OptimConfig, dist: DistContext, *, max_consecutive_skips: int):
        self.weights, self.dist, self.max_consecutive_skips = weights, dist, max_consecutive_skips
        self.max_norm = optim.grad_clip if optim.grad_clip > 0 else float("inf")
        self.optimizer = torch.optim.AdamW(weights.optimizer_parameters(), lr=optim.lr, betas=optim.betas,
                                           eps=optim.eps, weight_decay=optim.weight_decay)
        init_optimizer_state(self.optimizer)
        warmup = optim.warmup_steps
        self.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda k: min(1.0, (k + 1) / warmup) if warmup else 1.0)
        self.skipped_steps = 0
        self.consecutive_skips = 0

    def step(self, loss_sum: float, train_step: int) -> tuple[float, bool]:
        """End an optimizer step whose micro-batches have all run their backward.

        Under DDP the ranks' gradients are summed (the loss is normalised by the global token
        count, so the sum is exactly the single-process gradient; FSDP2 sums them itself).
        Then the global gradient norm is clipped to ``grad_clip``, and AdamW and the warmup
        step, unless the loss or the norm is not finite: then the step is skipped (weights,
        moments and learning rate unchanged) and counted in ``skipped_steps``. Gradients are
        zeroed either way.

        Args:
            loss_sum: the mini-batch's loss, summed over ranks.
            train_step: the training step, for the error message.

        Returns:
            ``(grad_norm, applied)``: the global gradient norm before clipping (0.0 when no
            parameter has a gradient), and whether the step was taken.

        Raises:
            TrainingAborted: ``max_consecutive_skips`` steps in a row were skipped.
        """
        params = self.weights.optimizer_parameters()
        if self.dist.enabled and not self.weights.sharded:
            for p in params:
                if p.grad is None:
                    p.grad = torch.zeros_like(p)
                self.dist.all_reduce_sum(p.grad)
        params = [p for p in params if p.grad is not None]
        grad_norm = 0.0
        if params:
            norm = torch.nn.utils.clip_grad_norm_(params, self.max_norm)
            grad_norm = float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)
        applied = math.isfinite(loss_sum) and math.isfinite(grad_norm)
        if applied:
            self.optimizer.step()
            self.lr_scheduler.step()
            self.weights.after_optimizer_step()
            self.consecutive_skips = 0
        else:
            self.skipped_steps += 1
            self.consecutive_skips += 1
        self.weights.zero_grad()
        if self.consecutive_skips >= self.max_consecutive_skips:
            raise TrainingAborted(f"{self.consecutive_skips} consecutive optimizer steps had a non-finite loss or "
                                  f"gradient (last: loss {loss_sum}, grad norm {grad_norm}) at step {train_step}; "
                                  f"lower optim.lr, check the data, or use float32")
        return grad_norm, applied

    @property
    def lr(self) -> float:
        """The learning rate of the next step."""
        return float(self.lr_scheduler.get_last_lr()[0])

    def state_dict(self) -> dict[str, Any]:
        """``skipped_steps``, ``optimizer`` (the full state, keyed by parameter name; a
        collective under FSDP2: every rank calls it) and ``lr_scheduler``: the keys of the
        trainer state that checkpoints hold."""
        optimizer = full_optimizer_state(self.weights.master_model, self.optimizer)
        return {"skipped_steps": self.skipped_steps, "optimizer": optimizer,
                "lr_scheduler": self.lr_scheduler.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` saved (other keys of ``state`` are ignored)."""
        load_full_optimizer_state(self.weights.master_model, self.optimizer, state["optimizer"])
        self.lr_scheduler.load_state_dict(state["lr_scheduler"])
        self.skipped_steps = state.get("skipped_steps", 0)


def init_optimizer_state(optimizer: torch.optim.Optimizer) -> int:
    """Allocate Adam / AdamW's state (``step``, ``exp_avg``, ``exp_avg_sq``, and
    ``max_exp_avg_sq`` with amsgrad) for every parameter now, exactly as torch's first
    ``step()`` would create it (zeros like the parameter, a scalar ``step`` on the CPU unless
    fused or capturable), so that training is bitwise unchanged.

    Why: torch allocates the moments lazily, at the first ``step()``. The trainer builds the
    optimizer before the first rollout, and a KV pool sized then from the free memory (or kept
    through the update, ``rollout.keep_kv_cache``) would otherwise count the moments' memory as
    free. Parameters that already have state are left alone. Returns the bytes allocated."""
    if not isinstance(optimizer, (torch.optim.Adam, torch.optim.AdamW)):
        raise TypeError(f"init_optimizer_state supports Adam and AdamW, got {type(optimizer).__name__}")
    from torch.optim.optimizer import _get_scalar_dtype

    allocated = 0
    with torch.no_grad():
        for group in optimizer.param_groups:
            fused, capturable = bool(group.get("fused")), bool(group.get("capturable"))
            for p in group["params"]:
                state = optimizer.state[p]
                if len(state) != 0:
                    continue
                # torch.optim.Adam._init_group's lazy initialisation, for every parameter
                state["step"] = (torch.zeros((), dtype=_get_scalar_dtype(is_fused=fused), device=p.device)
                                 if capturable or fused else torch.tensor(0.0, dtype=_get_scalar_dtype()))
                names = ("exp_avg", "exp_avg_sq") + (("max_exp_avg_sq",) if group.get("amsgrad") else ())
                for name in names:
                    state[name] = moment = torch.zeros_like(p, memory_format=torch.preserve_format)
                    local = moment.to_local() if hasattr(moment, "to_local") else moment   # an FSDP2 shard
                    allocated += local.numel() * local.element_size()
    return allocated


def _parameter_pairs(master: torch.nn.Module, work: torch.nn.Module):
    """(master, compute) parameter pairs by name; tied weights appear once."""
    work_params = dict(work.named_parameters())
    return [(p, work_params[name]) for name, p in master.named_parameters()]
