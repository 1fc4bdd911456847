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
"""
from __future__ import annotations

import copy
from typing import Any

import torch

from siri.distributed import full_model_state, shard_model


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
