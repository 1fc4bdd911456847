"""The SIRI trainer: GRPO/DAPO with a length cap that follows a schedule (compress/expand).

    from siri import Trainer, load_config
    Trainer(load_config("configs/siri_r1_distill_qwen_1.5b.yaml", ["trainer.steps=20"])).fit()

One step (``train_step``):

1. ``cap = schedule(step)``; take the next ``rollout.prompts_per_step`` prompts.
2. Rollouts: the engine samples ``rollout.group_size`` responses per prompt with
   ``max_tokens=cap`` over the policy's own parameters (no weight copy).
3. Rewards (``siri.algo.rollout_scoring``): ``reward.fn`` (or the weighted terms of ``reward.fns``)
   on each response, its prompt and row, in ``reward.workers`` processes; one cut at the cap scores
   ``reward.truncated_reward`` (0). A reward that raises or times out scores 0 and is counted.
   Length terms (DAPO's overlong penalty, Kimi's or L1's length reward;
   ``siri.rewards.length_shaping``) are added when configured.
4. Advantages: ``group_advantages`` per prompt group. With ``algo.dynamic_sampling``, groups
   whose responses are all right or all wrong (``algo.filter_metric: acc``; ``reward``: whose
   shaped rewards are all equal) are dropped and steps 1-4 repeat on new prompts until the
   batch is full (``siri.algo.dynamic_sampling``).
5. Old logprobs: exactly on-policy (one epoch, one mini-batch; ``algo.old_logprobs: auto``) the
   training forward's own, detached; otherwise recomputed under no_grad (or the sampler's).
6. Update (``siri.algo.policy_update``): for each PPO epoch and mini-batch, micro-batches
   packed by a token budget go through the HF model and the fused ``grpo_loss`` (token-mean
   over the mini-batch's response tokens); then ``siri.train.precision.PolicyOptimizer`` sums the
   ranks' gradients, clips the norm and steps AdamW. A non-finite gradient skips the step.
7. Evaluation on held-out prompts when due (``siri.train.training_eval``), metrics
   (``siri.train.metrics.STEP_METRICS``: JSONL, progress bar, callbacks) and checkpoints (periodic,
   at the schedule's peaks and troughs, and at the end).

Rollout sampling is keyed by (seed, step, sampling round, prompt index, sample), so a resumed
run samples exactly what an uninterrupted one would.
"""
from __future__ import annotations

import random
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import yaml

from siri.train import checkpoint
from siri.algo.dynamic_sampling import GroupCollector
from siri.algo.policy_update import PolicyUpdate, UpdateStats, assign_mini_batches
from siri.algo.rollout_batch import Rollout
from siri.algo.rollout_scoring import RolloutScorer
from siri.algo.step_samples import StepSamples
from siri.atomic_io import write_text_atomic
from siri.config import Config, check_positions, config_to_dict
from siri.data import PromptSampler, load_prompt_dataset
from siri.engine import LLMEngine, SamplingParams
from siri.engine.llm_engine import sequence_seed
from siri.train.distributed import init_distributed, owned_groups
from siri.train.faults import fault_point
from siri.train.metrics import MetricsLog, StageTimer, step_metrics
from siri.train.rollout_samples import RolloutSamples
from siri.models.loading import (load_model, load_tokenizer, place_model, reference_model, resolve_device,
                                 resolve_dtype, stop_token_ids, with_pad_token)
from siri.ops.grpo_loss import grpo_loss
from siri.train.memory_plan import engine_kv_cache_bytes
from siri.train.precision import PolicyOptimizer, PolicyWeights, TrainingAborted
from siri.data import PROMPT_FILE, PromptFormat
from siri.progress import TrainProgress
from siri.rewards.pool import default_reward_workers
from siri.rewards.reward_scorer import make_scorer
from siri.rewards.terms import RewardTerms
from siri.train.training_eval import TrainingEvaluator

__all__ = ["StepCallback", "Trainer", "TrainingAborted"]

StepCallback = Callable[[dict[str, Any]], None]


class Trainer:
    """Runs SIRI training as configured.

    Args:
        config: a :class:`siri.config.Config` (validated here).
        model, tokenizer: a transformers causal LM and its tokenizer built by the caller, used
            instead of loading ``model.path``; with ``trainer.resume`` finding a checkpoint, its
            weights are loaded into ``model``.
        train_dataset: the training rows (a list of dicts or a ``datasets.Dataset``), read as
            ``data`` says (keys, message-list prompts), instead of loading ``data.train``.
        reward_fn: a reward callable (or a list of them) used instead of ``reward.fn``; it runs
            in the training process (see :mod:`siri.rewards`).
        callbacks: called after every step with that step's metrics dict.
    """

    def __init__(self, config: Config, *, model=None, tokenizer=None, train_dataset=None, reward_fn=None,
                 callbacks: list[StepCallback] | None = None):
        config.validate()
        self.cfg = config
        self.callbacks = list(callbacks or [])
        self.run_dir = Path(config.trainer.run_dir)
        self.schedule = config.length_schedule()
        self.device = resolve_device(config.model.device)
        self.dist = init_distributed(self.device.type == "cuda", config.trainer.dist_timeout_s)
        if self.dist.enabled and self.device.type == "cuda":  # gpu-only: tests/test_collective_devices.py::test_every_collective_tensor_is_on_the_trainer_device
            self.device = torch.device("cuda", self.dist.local_rank)
        share = config.algo.mini_batches * self.dist.world_size
        if config.rollout.prompts_per_step % share:
            raise ValueError(f"rollout.prompts_per_step ({config.rollout.prompts_per_step}) must be divisible by "
                             f"algo.mini_batches x world size ({config.algo.mini_batches} x {self.dist.world_size})")
        self.dtype = resolve_dtype(config.model.dtype, self.device)
        self.param_dtype = resolve_dtype(config.model.param_dtype, self.device)
        self.step = 0
        self._progress = TrainProgress(False, 0)
        self.rollout_samples = RolloutSamples.from_config(config, table=config.trainer.wandb and self.dist.is_main)
        resume_from, resume_state = checkpoint.resume_source(self.run_dir, config.trainer.resume, self.dist)
        torch.manual_seed(config.trainer.seed)
        random.seed(config.trainer.seed)
        np.random.seed(config.trainer.seed % 2**32)

        m = config.model
        self.tokenizer = (with_pad_token(tokenizer) if tokenizer is not None
                          else load_tokenizer(m.path, trust_remote_code=m.trust_remote_code))
        self.ref_model = reference_model(config, model, self.device, self.dtype)
        # Loaded in param_dtype (checkpoints hold the fp32 master weights, so a resume is
        # exact); PolicyWeights derives the compute copy / shards (see siri.train.precision).
        self.weights = PolicyWeights(
            place_model(model, device=self.device, dtype=self.param_dtype, weights_from=resume_from)
            if model is not None else load_model(str(resume_from or m.path), device=self.device,
                                                 dtype=self.param_dtype, trust_remote_code=m.trust_remote_code),
            compute_dtype=self.dtype, param_dtype=self.param_dtype,
            sharded=self.dist.enabled and config.trainer.parallelism == "fsdp",
            gradient_checkpointing=m.gradient_checkpointing)
        self.model, self.rollout_model = self.weights.train_model, self.weights.rollout_model
        check_positions(self.cfg, self.model.config)      # validate() skipped it if the model was remote
        self.stop_ids = stop_token_ids(self.tokenizer, self.rollout_model)
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0

        self.dataset, self.data_report = load_prompt_dataset(config.data, self.tokenizer, train_dataset)
        try:
            self.sampler = PromptSampler(len(self.dataset), config.rollout.prompts_per_step,
                                         seed=config.trainer.seed, shuffle=config.data.shuffle)
        except ValueError as e:
            raise ValueError(f"rollout.prompts_per_step={config.rollout.prompts_per_step} but the dataset has "
                             f"{len(self.dataset)} usable prompts: {e}") from e
        # AdamW's moments exist from here on (not from the first step), so the KV pool's sizing
        # below and at the first rollout sees them
        self.policy_optimizer = PolicyOptimizer(self.weights, config.optim, self.dist,
                                                max_consecutive_skips=config.trainer.max_consecutive_skips)
        self.optimizer = self.policy_optimizer.optimizer
        # policy_loss: this module's grpo_loss, which tests replace (test_reliability poisons it)
        self.policy_update = PolicyUpdate(self.weights, self.policy_optimizer, self.dist, config.algo,
                                          temperature=config.rollout.temperature, pad_id=self.pad_id,
                                          device=self.device, ref_model=self.ref_model, policy_loss=grpo_loss)
        r = config.rollout
        self.engine = LLMEngine(self.rollout_model, page_size=r.page_size, max_num_seqs=r.max_num_seqs,
                                kv_cache_bytes=engine_kv_cache_bytes(config, self.rollout_model.config, self.device,
                                                                     world_size=self.dist.world_size),
                                gpu_memory_fraction=r.gpu_memory_fraction, max_prefill_tokens=r.max_prefill_tokens,
                                cuda_graphs=r.cuda_graphs,
                                max_seq_len=config.data.max_prompt_tokens + self.schedule.longest_cap(config.trainer.steps))
        rc = config.reward
        workers = rc.workers if rc.workers is not None else default_reward_workers(self.dist.local_world_size)
        self.scorer = make_scorer(RewardTerms.from_config(rc, override=reward_fn), workers, rc.timeout_s or None)
        self.rollout_scorer = RolloutScorer.from_config(config, self.tokenizer, self.scorer)
        self.evaluator = None
        if config.eval.data is not None:
            self.evaluator = TrainingEvaluator(config, self.tokenizer, self.engine, self.scorer, self.stop_ids,
                                               self.dist)
        self._peaks = set(self.schedule.peaks(config.trainer.steps))
        self._troughs = set(self.schedule.troughs(config.trainer.steps))
        if resume_state is not None:
            self._restore(resume_state)

    # ---- setup ------------------------------------------------------------------------

    def _restore(self, state: dict[str, Any]) -> None:
        self.policy_optimizer.load_state_dict(state)
        self.sampler.load_state_dict(state["sampler"])
        self.step = state["step"]
        checkpoint.restore_rng_states(state["rng"])

    # ---- the loop ---------------------------------------------------------------------

    def fit(self) -> dict[str, Any]:
        """Train from ``self.step`` to ``trainer.steps``. Returns the last step's metrics
        (an empty dict when there was nothing left to do) plus ``checkpoint``, the newest."""
        t, main = self.cfg.trainer, self.dist.is_main
        log = None
        if main:       # logging, progress and files from rank 0 only
            self.run_dir.mkdir(parents=True, exist_ok=True)
            _write_yaml(self.run_dir / "config.yaml", config_to_dict(self.cfg))
            _write_yaml(self.run_dir / "data_report.yaml", self.data_report)
            log = MetricsLog(self.run_dir, resume_step=self.step, tensorboard=t.tensorboard, wandb=t.wandb,
                             wandb_project=t.wandb_project, wandb_entity=t.wandb_entity, wandb_name=t.wandb_name,
                             config=config_to_dict(self.cfg))
            self._progress = TrainProgress.for_training(t.progress, total=t.steps, start=self.step)
        last: dict[str, Any] = {}
        try:
            while self.step < t.steps:
                last = self.train_step()
                if self.evaluator is not None and self.evaluator.due(last["step"]):
                    last.update(self._evaluate(last))
                if log is not None:   # rank 0
                    log.log(last, samples=self.rollout_samples.table)
                    self._progress.step_done(last)
                    for callback in self.callbacks:
                        callback(last)
                kinds = checkpoint.checkpoint_kinds(last["step"], t, self._peaks, self._troughs)
                if kinds:
                    self.save(kinds)
        finally:
            self.scorer.close()
            self._progress.close()
            self._progress = TrainProgress(False, 0)
            if log is not None:
                log.close()
        newest = checkpoint.latest_checkpoint(self.run_dir)
        return {**last, "checkpoint": str(newest) if newest else None}

    def _evaluate(self, metrics: dict[str, Any]) -> dict[str, float]:
        """The ``eval_*`` metrics of the weights after step ``metrics["step"]``."""
        assert self.evaluator is not None, "called only when trainer.eval is configured"
        self._progress.stage("eval", metrics["step"], metrics["cap"], metrics["phase"])
        self._prepare_rollout_model()
        try:
            return self.evaluator.run()
        finally:
            self._release_rollout_memory()

    def train_step(self) -> dict[str, Any]:
        """Run step ``self.step`` and return its metrics, the same on every rank (the keys and
        their meaning: :data:`siri.train.metrics.STEP_METRICS`)."""
        t, cfg, a = self.step, self.cfg, self.cfg.algo
        cap, phase = self.schedule(t), self.schedule.phase(t)
        timer = StageTimer()
        collector = GroupCollector(cfg.rollout.prompts_per_step, drop_equal=a.filter_equal_groups or a.dynamic_sampling,
                                   refill=a.dynamic_sampling, max_rounds=a.max_sampling_rounds)
        samples = StepSamples(a.filter_metric)       # every rank's, for the filter and the metrics
        self.rollout_samples.start(t)
        while not collector.done:
            sampling_round = collector.rounds
            self._progress.stage("rollout" if sampling_round == 0 else f"rollout (refill {sampling_round})",
                                 t, cap, phase)
            with timer.measure("rollout"):
                examples = [self.dataset[i] for i in self.sampler.next_batch()]      # the global batch
                owned = owned_groups(len(examples), a.mini_batches, self.dist.rank, self.dist.world_size)
                local = [examples[i] for i in owned]
                rollouts = self._generate(local, cap, t, sampling_round)
            fault_point("rollout")

            self._progress.stage("reward", t, cap, phase)
            with timer.measure("reward"):
                scored = self.rollout_scorer.score(rollouts, local, cap, t)
                equal = samples.add_round(self.dist, sampling_round, owned, scored)
                collector.add_round(equal, dict(zip(owned, scored.groups)))
            self.rollout_samples.add(sampling_round, local, rollouts)
        # the pool (and its CUDA graphs) served every sampling round; its memory goes to the update
        self._release_rollout_memory()
        if a.dynamic_sampling and len(collector.kept) < collector.target and self.dist.is_main:
            warnings.warn(f"step {t}: dynamic sampling kept {len(collector.kept)} of {collector.target} groups after "
                          f"{collector.rounds} rounds (algo.max_sampling_rounds); training on those", stacklevel=2)
        self.rollout_samples.finish()

        self._progress.stage("update", t, cap, phase)
        with timer.measure("update"):
            update = self._update(assign_mini_batches(collector.kept, collector.target, a.mini_batches,
                                                      mask_truncated=a.mask_truncated))
        self.step += 1
        return step_metrics(t, cap, phase, samples=samples.drawn(), trained=samples.trained(collector.kept),
                            mask_truncated=a.mask_truncated, all_equal=samples.all_equal,
                            sampling=collector.stats(), reward_failures=samples.failures, update=update,
                            lr=self.policy_optimizer.lr, skipped_steps=self.policy_optimizer.skipped_steps,
                            seconds=timer.seconds())

    # ---- stages -----------------------------------------------------------------------

    def _generate(self, examples, cap: int, step: int, sampling_round: int = 0) -> list[Rollout]:
        r = self.cfg.rollout
        params = SamplingParams(n=r.group_size, temperature=r.temperature, top_p=r.top_p, top_k=r.top_k,
                                max_tokens=cap, stop_token_ids=self.stop_ids,
                                seed=sequence_seed(self.cfg.trainer.seed, step, sampling_round))
        self._prepare_rollout_model()
        try:
            outputs = self.engine.generate([e.input_ids for e in examples], params,
                                           prompt_keys=[e.index for e in examples])
        except BaseException:
            self._release_rollout_memory()
            raise
        return [Rollout(e.input_ids, o.token_ids, o.logprobs, o.finish_reason)
                for e, group in zip(examples, outputs) for o in group]

    def _release_rollout_memory(self) -> None:
        """Free the engine's KV pool and graphs for the update, unless ``rollout.keep_kv_cache``."""
        if not self.cfg.rollout.keep_kv_cache:
            self.engine.release_kv_cache()

    def _prepare_rollout_model(self) -> None:
        self.weights.refresh_rollout_model()
        self.rollout_model.eval()

    def _update(self, minis: list[list[Rollout]]) -> UpdateStats:
        """The policy update on this rank's part of each mini-batch (``siri.algo.policy_update``)."""
        return self.policy_update(minis, self.step)

    # ---- checkpoints ------------------------------------------------------------------

    def save(self, kinds: list[str] | None = None) -> Path:
        """Checkpoint the current state as ``checkpoints/step_<self.step>`` (atomic), then
        prune old periodic checkpoints. Rank 0 writes (every rank holds the same weights and
        optimizer state); the others wait for it."""
        path = checkpoint.checkpoint_dir(self.run_dir) / f"step_{self.step}"
        optimizer_state = self.policy_optimizer.state_dict()    # collective under FSDP2
        model_state = self.weights.checkpoint_state()            # (both of them)
        if not self.dist.is_main:
            self.dist.barrier()
            return path
        self._progress.stage(f"save step_{self.step}", self.step - 1, self.schedule(max(self.step - 1, 0)), "")
        state = {
            "step": self.step, **optimizer_state,
            "sampler": self.sampler.state_dict(), "schedule": self.schedule.to_dict(),
            "rng": checkpoint.rng_states(),
            "config": config_to_dict(self.cfg),
        }
        last = max(self.step - 1, 0)
        info = {"kinds": kinds or ["periodic"], "cap": self.schedule(last), "phase": self.schedule.phase(last),
                "compute_dtype": self.cfg.model.dtype}     # siri export's default dtype
        prompt_format = PromptFormat.from_data_config(self.cfg.data, source="training config")
        path = checkpoint.save_checkpoint(self.run_dir, self.step, self.rollout_model, self.tokenizer, state, info,
                                          model_state=model_state, extra_files={PROMPT_FILE: prompt_format.to_json()})
        checkpoint.prune(self.run_dir, self.cfg.trainer.keep_last)
        self.dist.barrier()
        return path


def _write_yaml(path: Path, data: dict) -> None:
    write_text_atomic(path, yaml.safe_dump(data, sort_keys=False))
