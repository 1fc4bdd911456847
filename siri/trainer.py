"""The SIRI trainer: GRPO/DAPO with a length cap that follows a schedule (compress/expand).

    from siri import Trainer, load_config
    Trainer(load_config("configs/siri_r1_distill_qwen_1.5b.yaml", ["trainer.steps=20"])).fit()

One step (``train_step``):

1. ``cap = schedule(step)``; take the next ``rollout.prompts_per_step`` prompts.
2. Rollouts: the engine samples ``rollout.group_size`` responses per prompt with
   ``max_tokens=cap`` over the policy's own parameters (no weight copy).
3. Rewards: ``reward.fn(text, answer, finish_reason)`` in ``reward.workers`` processes; a
   response cut at the cap ("length") scores ``reward.truncated_reward`` (0). A reward that
   raises or times out scores 0 and is counted. Length terms (DAPO's overlong penalty, Kimi's
   or L1's length reward; ``siri.rewards.length_shaping``) are added when configured.
4. Advantages: ``group_advantages`` per prompt group. With ``algo.dynamic_sampling``, groups
   whose responses are all right or all wrong (``algo.filter_metric: acc``; ``reward``: whose
   shaped rewards are all equal) are dropped and steps 1-4 repeat on new prompts until the
   batch is full (``siri.algo.dynamic_sampling``).
5. Old logprobs: recomputed under no_grad (or the sampler's, exactly on-policy).
6. Update: for each PPO epoch and mini-batch, micro-batches packed by a token budget go
   through the HF model and the fused ``grpo_loss`` (token-mean over the mini-batch's
   response tokens); clip the gradient norm; AdamW. A non-finite gradient skips the step.
7. Evaluation on held-out prompts when due (``siri.training_eval``), metrics (JSONL,
   progress bar, callbacks) and checkpoints (periodic, at the schedule's peaks and troughs,
   and at the end).

Rollout sampling is keyed by (seed, step, sampling round, prompt index, sample), so a resumed
run samples exactly what an uninterrupted one would.
"""
from __future__ import annotations

import json
import math
import random
import warnings
import statistics
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import yaml

from siri import checkpoint
from siri.algo.dynamic_sampling import GroupCollector, group_all_equal
from siri.algo.response_logits import response_logits
from siri.algo.rollout_batch import Rollout, collate, pack_by_token_budget
from siri.atomic_io import write_text_atomic
from siri.config import Config, check_positions, config_to_dict, longest_cap
from siri.data import PromptDataset, PromptFormatter, PromptSampler, load_rows
from siri.engine import LLMEngine, SamplingParams
from siri.engine import device_memory
from siri.engine.llm_engine import sequence_seed
from siri.distributed import full_optimizer_state, init_distributed, load_full_optimizer_state, owned_groups
from siri.faults import fault_point
from siri.metrics import MetricsLog
from siri.model_loading import load_model, load_tokenizer, resolve_device, resolve_dtype, stop_token_ids
from siri.ops.group_advantages import group_advantages
from siri.ops.grpo_loss import grpo_loss
from siri.ops.logprobs import token_logprobs
from siri.memory_plan import kept_kv_cache_bytes
from siri.model_shape import ModelShape
from siri.precision import PolicyWeights, init_optimizer_state
from siri.prompt_format import PROMPT_FILE, PromptFormat
from siri.progress import TrainProgress
from siri.rewards.correctness import is_correct
from siri.rewards.length_shaping import LengthShaping, shape_rewards
from siri.rewards.loader import load_reward_fn
from siri.rewards.scoring import default_reward_workers, make_scorer
from siri.training_eval import TrainingEvaluator

StepCallback = Callable[[dict[str, Any]], None]


class TrainingAborted(RuntimeError):
    """Training cannot continue (e.g. too many consecutive non-finite gradients)."""


class Trainer:
    """Runs SIRI training as configured.

    Args:
        config: a validated :class:`siri.config.Config` (``load_config`` validates).
        callbacks: called after every step with that step's metrics dict.
    """

    def __init__(self, config: Config, *, callbacks: list[StepCallback] | None = None):
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
        self.skipped_steps = 0
        self._progress = TrainProgress(False, 0)
        self._consecutive_skips = 0
        resume_from, resume_state = self._resume_source()
        torch.manual_seed(config.trainer.seed)
        random.seed(config.trainer.seed)
        np.random.seed(config.trainer.seed % 2**32)

        m = config.model
        self.tokenizer = load_tokenizer(m.path, trust_remote_code=m.trust_remote_code)
        # Loaded in param_dtype (checkpoints hold the fp32 master weights, so a resume is
        # exact); PolicyWeights derives the compute copy / shards (see siri.precision).
        self.sharded = self.dist.enabled and config.trainer.parallelism == "fsdp"
        self.weights = PolicyWeights(
            load_model(str(resume_from or m.path), device=self.device, dtype=self.param_dtype,
                       trust_remote_code=m.trust_remote_code),
            compute_dtype=self.dtype, param_dtype=self.param_dtype, sharded=self.sharded,
            gradient_checkpointing=m.gradient_checkpointing)
        self.model, self.rollout_model = self.weights.train_model, self.weights.rollout_model
        self.ref_model = None
        if config.algo.kl_coef > 0:
            self.ref_model = load_model(m.path, device=self.device, dtype=self.dtype,
                                        trust_remote_code=m.trust_remote_code).eval().requires_grad_(False)
        check_positions(self.cfg, self.model.config)      # validate() skipped it if the model was remote
        self.stop_ids = stop_token_ids(self.tokenizer, self.rollout_model)
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0

        self.dataset, self.data_report = self._load_data()
        try:
            self.sampler = PromptSampler(len(self.dataset), config.rollout.prompts_per_step,
                                         seed=config.trainer.seed, shuffle=config.data.shuffle)
        except ValueError as e:
            raise ValueError(f"rollout.prompts_per_step={config.rollout.prompts_per_step} but the dataset has "
                             f"{len(self.dataset)} usable prompts: {e}") from e
        o = config.optim
        self.optimizer = torch.optim.AdamW(self.weights.optimizer_parameters(), lr=o.lr, betas=o.betas, eps=o.eps,
                                           weight_decay=o.weight_decay)
        # the moments exist from here on (not from the first step), so the KV pool's sizing
        # below and at the first rollout sees them; bitwise the same training as torch's lazy init
        init_optimizer_state(self.optimizer)
        warmup = o.warmup_steps
        self.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda k: min(1.0, (k + 1) / warmup) if warmup else 1.0)
        r = config.rollout
        self.engine = LLMEngine(self.rollout_model, page_size=r.page_size, max_num_seqs=r.max_num_seqs,
                                kv_cache_bytes=self._kv_cache_bytes(),
                                gpu_memory_fraction=r.gpu_memory_fraction, max_prefill_tokens=r.max_prefill_tokens,
                                cuda_graphs=r.cuda_graphs,
                                max_seq_len=config.data.max_prompt_tokens + longest_cap(self.schedule, config.trainer.steps))
        self.reward_fn = load_reward_fn(config.reward.fn)
        rc = config.reward
        workers = rc.workers if rc.workers is not None else default_reward_workers(self.dist.local_world_size)
        self.scorer = make_scorer(rc.fn, workers, rc.timeout_s or None)
        self.length_shaping = LengthShaping(rc.overlong_buffer, rc.overlong_penalty, rc.length_reward,
                                            rc.length_reward_weight, rc.length_target)
        self.evaluator = None
        if config.eval.data is not None:
            self.evaluator = TrainingEvaluator(config, self.tokenizer, self.engine, self.reward_fn, self.stop_ids,
                                               self.dist)
        self._peaks = set(self.schedule.peaks(config.trainer.steps))
        self._troughs = set(self.schedule.troughs(config.trainer.steps))
        if resume_state is not None:
            self._restore(resume_state)

    # ---- setup ------------------------------------------------------------------------

    def _kv_cache_bytes(self) -> int | None:
        """The KV pool's size for the engine: ``rollout.kv_cache_gb``; else, with
        ``rollout.keep_kv_cache`` (the pool stays allocated through every update), a size that
        leaves room for the update's peak: ``gpu_memory_fraction`` of the memory free now (the
        weights and AdamW state in place) less what the memory plan says the update adds, less
        the CUDA graphs (:func:`siri.memory_plan.kept_kv_cache_bytes`). Else None: the engine
        takes its share of the free memory at each rollout, and the trainer frees the pool
        before each update. Where no free-memory query exists (the CPU), the engine's default."""
        r = self.cfg.rollout
        if r.kv_cache_gb is not None:
            return int(r.kv_cache_gb * 2**30)
        if not r.keep_kv_cache:
            return None
        free = device_memory.free_bytes(self.device)
        if free is None:
            return None
        shape = ModelShape.from_hf_config(self.rollout_model.config)
        return kept_kv_cache_bytes(self.cfg, shape, free, world_size=self.dist.world_size, device=self.device.type)

    def _resume_source(self) -> tuple[Path | None, dict[str, Any] | None]:
        """The checkpoint to resume from and its trainer state, the same on every rank.

        Rank 0 chooses the step (``trainer.resume=auto``: its newest complete checkpoint; a
        directory: that checkpoint's step) and broadcasts it, because the ranks' run
        directories may be different disks (one per node) that hold different checkpoints.
        Every rank then reads that step from its own ``trainer.run_dir`` (or the given
        directory), and the ranks agree on success before any of them goes on: a rank that
        cannot read it makes every rank stop with the same error, instead of starting from
        other weights (or step 0) and hanging or silently diverging."""
        mode = self.cfg.trainer.resume
        if mode == "never":
            return None, None
        if mode == "auto":
            chosen = checkpoint.latest_step(self.run_dir) if self.dist.is_main else None
            step = self.dist.broadcast_int(-1 if chosen is None else chosen)
            if step < 0:
                return None, None
            path = checkpoint.checkpoint_dir(self.run_dir) / f"step_{step}"
        else:
            path = Path(mode)
            info = checkpoint.read_info(path) if self.dist.is_main else None
            step = self.dist.broadcast_int(-1 if info is None else info["step"])
        error, state = None, None
        try:
            # step -1: rank 0 cannot read the trainer.resume directory (and says why below)
            state = checkpoint.load_for_resume(path, None if step < 0 else step)
        except ValueError as e:
            error = str(e)
        what = f"resuming from {path} (trainer.resume)" if mode != "auto" else \
            f"resuming from step_{step} (rank 0's newest checkpoint)"
        if self.dist.enabled:
            self.dist.agree(error, what, hint="every rank reads the checkpoint rank 0 chose from its own "
                            "trainer.run_dir: put the run directory on storage every node shares, or copy the "
                            "checkpoint to the same path on every node (trainer.resume=never starts afresh)")
        elif error is not None:
            raise ValueError(f"{what} failed: {error}")
        return path, state

    def _load_data(self) -> tuple[PromptDataset, dict[str, Any]]:
        d = self.cfg.data
        loaded = load_rows(d.train, path=d.path, split=d.split, prompt_key=d.prompt_key, answer_key=d.answer_key,
                           on_error=d.on_error)
        formatter = PromptFormatter(self.tokenizer, instruction=d.instruction, use_chat_template=d.use_chat_template,
                                    system_prompt=d.system_prompt)
        dataset = PromptDataset(loaded.rows, formatter, max_prompt_tokens=d.max_prompt_tokens)
        report = {"source": loaded.source, "rows": len(loaded.rows), "skipped_bad_rows": dict(loaded.skipped),
                  "skipped_too_long": dataset.num_too_long, "usable_prompts": len(dataset)}
        return dataset, report

    def _restore(self, state: dict[str, Any]) -> None:
        load_full_optimizer_state(self.weights.master_model, self.optimizer, state["optimizer"])
        self.lr_scheduler.load_state_dict(state["lr_scheduler"])
        self.sampler.load_state_dict(state["sampler"])
        self.step = state["step"]
        self.skipped_steps = state.get("skipped_steps", 0)
        torch.set_rng_state(state["rng"]["torch"])
        random.setstate(state["rng"]["python"])
        np.random.set_state(state["rng"]["numpy"])
        if state["rng"].get("cuda") is not None and torch.cuda.is_available():  # gpu-only: tests/test_mixed_precision.py::test_mixed_precision_resume_is_exact
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])

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
                             wandb_project=t.wandb_project, config=config_to_dict(self.cfg))
            self._progress = TrainProgress(t.progress, total=t.steps, start=self.step)
        last: dict[str, Any] = {}
        try:
            while self.step < t.steps:
                last = self.train_step()
                if self.evaluator is not None and self.evaluator.due(last["step"]):
                    last.update(self._evaluate(last))
                if log is not None:   # rank 0
                    log.log(last)
                    self._progress.step_done(last)
                    for callback in self.callbacks:
                        callback(last)
                kinds = self._checkpoint_kinds(last["step"])
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

    def _checkpoint_kinds(self, t: int) -> list[str]:
        cfg = self.cfg.trainer
        kinds = []
        if cfg.save_every and (t + 1) % cfg.save_every == 0:
            kinds.append("periodic")
        if cfg.save_at_extrema and t in self._peaks:
            kinds.append("peak")
        if cfg.save_at_extrema and t in self._troughs:
            kinds.append("trough")
        if t + 1 == cfg.steps:
            kinds.append("final")
        return kinds

    def train_step(self) -> dict[str, Any]:
        """Run step ``self.step`` and return its metrics (over all ranks)."""
        t, cfg = self.step, self.cfg
        cap, phase = self.schedule(t), self.schedule.phase(t)
        started = time.perf_counter()
        a = cfg.algo
        collector = GroupCollector(cfg.rollout.prompts_per_step, drop_equal=a.filter_equal_groups or a.dynamic_sampling,
                                   refill=a.dynamic_sampling, max_rounds=a.max_sampling_rounds)
        drawn: dict[tuple[int, int], list[tuple]] = {}   # (round, group) -> every rank's sample stats
        seconds = {"rollout": 0.0, "reward": 0.0}
        reward_failures = dict.fromkeys(("reward_errors", "reward_timeouts", "reward_workers_replaced"), 0)
        all_equal: list[bool] = []
        saved: list[dict] = []
        while not collector.done:
            sampling_round = collector.rounds
            self._progress.stage("rollout" if sampling_round == 0 else f"rollout (refill {sampling_round})",
                                 t, cap, phase)
            round_started = time.perf_counter()
            examples = [self.dataset[i] for i in self.sampler.next_batch()]      # the global batch
            owned = owned_groups(len(examples), a.mini_batches, self.dist.rank, self.dist.world_size)
            local = [examples[i] for i in owned]
            rollouts = self._generate(local, cap, t, sampling_round)
            seconds["rollout"] += time.perf_counter() - round_started
            fault_point("rollout")

            self._progress.stage("reward", t, cap, phase)
            scored_at = time.perf_counter()
            groups, failures = self._score_groups(rollouts, local, cap)
            samples, equal, failures = self._gather_round(owned, groups, failures)
            for key, count in failures.items():
                reward_failures[key] += count
            all_equal += equal
            drawn.update({(sampling_round, i): group for i, group in enumerate(samples)})
            collector.add_round(equal, dict(zip(owned, groups)))
            seconds["reward"] += time.perf_counter() - scored_at
            if cfg.trainer.save_rollouts:
                saved += self._rollout_rows(t, sampling_round, local, rollouts)
        # the pool (and its CUDA graphs) served every sampling round; its memory goes to the update
        self._release_rollout_memory()
        if a.dynamic_sampling and len(collector.kept) < collector.target and self.dist.is_main:
            warnings.warn(f"step {t}: dynamic sampling kept {len(collector.kept)} of {collector.target} groups after "
                          f"{collector.rounds} rounds (algo.max_sampling_rounds); training on those", stacklevel=2)
        if cfg.trainer.save_rollouts:
            self._save_rollouts(t, saved)

        # each kept group trains in the mini-batch of its slot in the step's batch
        per_mini = collector.target // a.mini_batches
        minis: list[list[Rollout]] = [[] for _ in range(a.mini_batches)]
        for kept in collector.kept:
            if kept.rollouts is not None:
                minis[kept.slot // per_mini] += [r for r in kept.rollouts
                                                 if not (a.mask_truncated and r.finish_reason == "length")]
        self._progress.stage("update", t, cap, phase)
        update_started = time.perf_counter()
        train = self._update(minis)
        self.step += 1
        everything = [sample for group in drawn.values() for sample in group]
        trained = [sample for kept in collector.kept for sample in drawn[(kept.round, kept.index)]]
        lengths = [length for length, _, _, _ in everything]
        rewards = torch.tensor([reward for _, reward, _, _ in everything], dtype=torch.float64)
        generated = sum(lengths)
        return {
            "step": t, "cap": cap, "phase": phase,
            "reward_mean": float(rewards.mean()), "reward_std": float(rewards.std()) if len(rewards) > 1 else 0.0,
            "accuracy": sum(is_correct(correct) for _, _, _, correct in everything) / len(everything),
            "response_len_mean": statistics.fmean(lengths), "response_len_p50": float(statistics.median(lengths)),
            "response_len_max": max(lengths), "response_len_min": min(lengths),
            "truncation_rate": sum(f == "length" for _, _, f, _ in everything) / len(lengths),
            "groups_all_equal": sum(all_equal) / len(all_equal), **collector.stats(),
            "truncated_masked": sum(f == "length" for _, _, f, _ in trained) if a.mask_truncated else 0,
            **reward_failures, **train, "lr": self.lr_scheduler.get_last_lr()[0],
            "skipped_steps": self.skipped_steps, "tokens_generated": generated,
            "rollout_tokens_per_s": generated / max(seconds["rollout"], 1e-9),
            "time_rollout_s": seconds["rollout"], "time_reward_s": seconds["reward"],
            "time_update_s": time.perf_counter() - update_started,
            "time_step_s": time.perf_counter() - started,
        }

    def _gather_round(self, owned: list[int], groups: list[list[Rollout]], failures: dict[str, int]):
        """Every rank's per-sample ``(length, reward, finish_reason, correctness)`` of one
        sampling round, in global group order, with each group's all-equal flag
        (``group_all_equal`` by ``algo.filter_metric``; the same on every rank, so every rank
        keeps the same groups) and the round's reward failure counts summed over ranks."""
        mine = [(index, [(len(r.response_ids), r.reward, r.finish_reason, r.correctness) for r in group])
                for index, group in zip(owned, groups)]
        parts = self.dist.all_gather_objects((mine, failures))
        ordered = sorted((item for part, _ in parts for item in part), key=lambda item: item[0])
        samples = [group for _, group in ordered]
        equal = [group_all_equal([s[1] for s in group], [s[3] for s in group], self.cfg.algo.filter_metric)
                 for group in samples]
        return samples, equal, {key: sum(counts[key] for _, counts in parts) for key in failures}

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

    def _score_groups(self, rollouts: list[Rollout], examples, cap: int) -> tuple[list[list[Rollout]], dict[str, int]]:
        """Score one round: each rollout's ``text``, ``correctness`` (the reward function's
        score, or ``reward.truncated_reward`` for a truncated response; 0 for a reward that
        raises, times out, crashes its worker or returns NaN), ``reward`` (plus the configured
        length terms) and ``advantage``. Returns the rollouts split into groups, and the
        counts ``reward_errors`` (all failures), ``reward_timeouts`` and
        ``reward_workers_replaced`` (workers killed at the deadline or dead)."""
        cfg, g = self.cfg, self.cfg.rollout.group_size
        truncated_reward = cfg.reward.truncated_reward
        for r in rollouts:
            r.text = self.tokenizer.decode(r.response_ids, skip_special_tokens=True)
        to_score = [i for i, r in enumerate(rollouts) if not (r.finish_reason == "length" and truncated_reward is not None)]
        scored = self.scorer.score([(rollouts[i].text, examples[i // g].answer, rollouts[i].finish_reason)
                                    for i in to_score])
        for r in rollouts:
            r.correctness = truncated_reward if truncated_reward is not None else 0.0
        for i, value in zip(to_score, scored.rewards):
            rollouts[i].correctness = value
        shaped = shape_rewards([r.correctness for r in rollouts], [len(r.response_ids) for r in rollouts], cap, g,
                               self.length_shaping)
        advantages = group_advantages(torch.tensor(shaped, dtype=torch.float32), g, cfg.algo.advantage_eps,
                                      scale=cfg.algo.advantage_scale)
        for r, reward, advantage in zip(rollouts, shaped, advantages.tolist()):
            r.reward, r.advantage = reward, advantage
        failures = {"reward_errors": scored.errors, "reward_timeouts": scored.timeouts,
                    "reward_workers_replaced": scored.replaced_workers}
        return [rollouts[i * g:(i + 1) * g] for i in range(len(examples))], failures

    def _rollout_rows(self, step: int, sampling_round: int, examples, rollouts: list[Rollout]) -> list[dict]:
        g = self.cfg.rollout.group_size
        return [{"step": step, "round": sampling_round, "prompt_index": examples[i // g].index, "sample": i % g,
                 "answer": examples[i // g].answer, "response": r.text, "num_tokens": len(r.response_ids),
                 "finish_reason": r.finish_reason, "correctness": r.correctness, "reward": r.reward,
                 "advantage": r.advantage} for i, r in enumerate(rollouts)]

    def _save_rollouts(self, step: int, rows: list[dict]) -> None:
        directory = self.run_dir / "rollouts"
        directory.mkdir(parents=True, exist_ok=True)
        write_text_atomic(directory / f"step_{step}.jsonl", "".join(json.dumps(row) + "\n" for row in rows))

    def _micro_batches(self, rollouts: list[Rollout]):
        budget = self.cfg.algo.micro_batch_tokens
        for indices in pack_by_token_budget([r.length for r in rollouts], budget):
            yield collate([rollouts[i] for i in indices], self.pad_id, self.device)

    @torch.no_grad()
    def _fill_logprobs(self, rollouts: list[Rollout], model, name: str) -> None:
        temperature = self.cfg.rollout.temperature
        for mb in self._micro_batches(rollouts):
            logits = response_logits(model, mb.input_ids, mb.attention_mask, mb.response_mask)
            # the targets are the engine's draws, valid by construction: skip the check's sync
            mb.scatter(token_logprobs(logits, mb.response_targets, temperature, check_targets=False), name)

    def _update(self, minis: list[list[Rollout]]) -> dict[str, Any]:
        """PPO epochs over the step's mini-batches (this rank's part of each); one optimizer
        step per mini-batch that has response tokens on some rank."""
        a = self.cfg.algo
        rollouts = [r for mini in minis for r in mini]
        if a.old_logprobs == "engine":
            for r in rollouts:
                r.old_logprobs = torch.tensor(r.sample_logprobs, dtype=torch.float32)
        else:
            # the rollout model holds the current weights (it is the policy, or its fresh copy)
            self.rollout_model.eval()
            self._fill_logprobs(rollouts, self.rollout_model, "old_logprobs")
        if self.ref_model is not None:
            self._fill_logprobs(rollouts, self.ref_model, "ref_logprobs")
        self.model.train()
        sums: dict[str, float] = {}
        optimizer_steps = 0
        for _ in range(a.ppo_epochs):
            for mini in minis:
                stats = self._optimizer_step(mini)
                if stats is None:
                    continue
                optimizer_steps += 1
                for k, v in stats.items():
                    sums[k] = sums.get(k, 0.0) + v
        if not optimizer_steps:
            return dict(_NO_UPDATE)
        return {**{k: v / optimizer_steps for k, v in sums.items()}, "optimizer_steps": optimizer_steps}

    def _optimizer_step(self, rollouts: list[Rollout]) -> dict[str, float] | None:
        """One optimizer step on a mini-batch (this rank's ``rollouts`` plus the other ranks'
        parts), token-mean over all its response tokens. None when it has no tokens at all."""
        a, temperature = self.cfg.algo, self.cfg.rollout.temperature
        num_tokens = int(self.dist.sum_values([float(sum(len(r.response_ids) for r in rollouts))])[0])
        if num_tokens == 0:
            return None
        keys = ("loss", "clip_frac_low", "clip_frac_high", "clip_frac_dual", "approx_kl", "entropy")
        local = dict.fromkeys(keys, 0.0)
        batches = list(self._micro_batches(rollouts))
        if self.sharded:
            # FSDP2 gathers and reduce-scatters in every forward/backward: every rank must run
            # as many micro-batches as the busiest one, so idle ranks run empty ones
            for _ in range(self.dist.all_reduce_max(len(batches)) - len(batches)):
                self._empty_backward()
        for mb in batches:
            # [N, V] logits of the response rows only: a fresh non-leaf tensor, so the fused
            # loss writes dlogits into its storage (no second logits-sized buffer)
            logits = response_logits(self.model, mb.input_ids, mb.attention_mask, mb.response_mask)
            everywhere = torch.ones(logits.shape[:1], dtype=torch.bool, device=logits.device)
            loss, stats = grpo_loss(
                logits, mb.response_targets, mb.gather("old_logprobs"), mb.response_advantages, everywhere,
                clip_low=a.clip_low, clip_high=a.clip_high, clip_c=a.clip_c, temperature=temperature,
                ref_logprobs=mb.gather("ref_logprobs") if self.ref_model is not None else None,
                kl_coef=a.kl_coef, num_tokens=num_tokens, return_entropy=True, check_targets=False)
            del logits
            # FSDP2 averages gradients over ranks; times world size makes that the sum
            (loss * self.dist.world_size if self.sharded else loss).backward()
            self.weights.accumulate_gradients()
            local["loss"] += float(loss.detach())
            share = float(stats.num_tokens) / num_tokens
            for key in keys[1:]:
                local[key] += float(getattr(stats, key).detach()) * share
        fault_point("update")
        params = self.weights.optimizer_parameters()
        if self.dist.enabled and not self.sharded:
            # the loss is normalised by the global token count, so summing the ranks'
            # gradients gives exactly the single-process gradient (FSDP2 sums them itself)
            for p in params:
                if p.grad is None:
                    p.grad = torch.zeros_like(p)
                self.dist.all_reduce_sum(p.grad)
        totals = self.dist.sum_values([local[k] for k in keys])
        params = [p for p in params if p.grad is not None]
        max_norm = self.cfg.optim.grad_clip if self.cfg.optim.grad_clip > 0 else float("inf")
        grad_norm = 0.0
        if params:
            norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
            grad_norm = float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)
        loss_sum = totals[0]
        finite = math.isfinite(loss_sum) and math.isfinite(grad_norm)
        if finite:
            self.optimizer.step()
            self.lr_scheduler.step()
            self.weights.after_optimizer_step()
            self._consecutive_skips = 0
        else:
            self.skipped_steps += 1
            self._consecutive_skips += 1
        self.weights.zero_grad()
        if self._consecutive_skips >= self.cfg.trainer.max_consecutive_skips:
            raise TrainingAborted(f"{self._consecutive_skips} consecutive optimizer steps had a non-finite loss or "
                                  f"gradient (last: loss {loss_sum}, grad norm {grad_norm}) at step {self.step}; "
                                  f"lower optim.lr, check the data, or use float32")
        return {"loss": loss_sum, "grad_norm": grad_norm, "update_skipped": float(not finite),
                "train_tokens": float(num_tokens), **dict(zip(keys[1:], totals[1:]))}

    def _empty_backward(self) -> None:
        """A forward/backward that changes no gradient: one pad token, loss times 0."""
        ids = torch.full((1, 1), self.pad_id, dtype=torch.long, device=self.device)
        (self.model(input_ids=ids).logits.sum() * 0.0).backward()

    # ---- checkpoints ------------------------------------------------------------------

    def save(self, kinds: list[str] | None = None) -> Path:
        """Checkpoint the current state as ``checkpoints/step_<self.step>`` (atomic), then
        prune old periodic checkpoints. Rank 0 writes (every rank holds the same weights and
        optimizer state); the others wait for it."""
        path = checkpoint.checkpoint_dir(self.run_dir) / f"step_{self.step}"
        optimizer_state = full_optimizer_state(self.weights.master_model, self.optimizer)  # collective under FSDP2
        model_state = self.weights.checkpoint_state()                                    # (both of them)
        if not self.dist.is_main:
            self.dist.barrier()
            return path
        self._progress.stage(f"save step_{self.step}", self.step - 1, self.schedule(max(self.step - 1, 0)), "")
        state = {
            "step": self.step, "skipped_steps": self.skipped_steps,
            "optimizer": optimizer_state, "lr_scheduler": self.lr_scheduler.state_dict(),
            "sampler": self.sampler.state_dict(), "schedule": self.schedule.to_dict(),
            "rng": {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state(),
                    "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None},
            "config": config_to_dict(self.cfg),
        }
        last = max(self.step - 1, 0)
        info = {"kinds": kinds or ["periodic"], "cap": self.schedule(last), "phase": self.schedule.phase(last)}
        prompt_format = PromptFormat.from_data_config(self.cfg.data, source="training config")
        path = checkpoint.save_checkpoint(self.run_dir, self.step, self.rollout_model, self.tokenizer, state, info,
                                          model_state=model_state, extra_files={PROMPT_FILE: prompt_format.to_json()})
        checkpoint.prune(self.run_dir, self.cfg.trainer.keep_last)
        self.dist.barrier()
        return path


_NO_UPDATE = {"optimizer_steps": 0, "loss": 0.0, "grad_norm": 0.0, "update_skipped": 0.0, "train_tokens": 0.0, "clip_frac_low": 0.0,
              "clip_frac_high": 0.0, "clip_frac_dual": 0.0, "approx_kl": 0.0, "entropy": 0.0}


def _write_yaml(path: Path, data: dict) -> None:
    write_text_atomic(path, yaml.safe_dump(data, sort_keys=False))
