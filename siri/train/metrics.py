"""Per-step training metrics: what a step reports, and ``RUN_DIR/metrics.jsonl`` plus
optional TensorBoard / W&B sinks.

One JSON object per line per step: the keys of :data:`STEP_METRICS`, in that order (built by
:func:`step_metrics`), plus those of :data:`EVAL_METRICS` on the steps that evaluate. A
non-finite number is written as ``null``.
"""
from __future__ import annotations

import json
import math
import os
import statistics
import time
import uuid
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Mapping, Sequence

import torch

from siri.atomic_io import write_text_atomic
from siri.train.faults import fault_point

if TYPE_CHECKING:
    from siri.algo.policy_update import UpdateStats
    from siri.algo.step_samples import RewardFailures, SampleStats

STEP_METRICS: dict[str, str] = {
    "step": "int: the step's index t (0-based); the weights after it are checkpoint step_<t+1>",
    "cap": "int: the step's rollout length cap, schedule(t) (max_tokens of every response)",
    "phase": 'str: "compress" or "expand", the schedule\'s phase at t',
    # every response sampled in the step (all sampling rounds, every rank)
    "reward_mean": "float: mean shaped reward (correctness plus length terms) of the responses",
    "reward_std": "float: their standard deviation (unbiased; 0.0 for a single response)",
    "accuracy": "float: fraction of responses that are correct (siri.rewards.is_correct of the reward "
                "function's own score)",
    "response_len_mean": "float: mean response length in tokens (stop token included)",
    "response_len_p50": "float: median response length",
    "response_len_max": "int: longest response (<= cap)",
    "response_len_min": "int: shortest response",
    "truncation_rate": 'float: fraction of responses cut at the cap (finish_reason "length")',
    "groups_all_equal": "float: fraction of prompt groups whose responses are all equal under "
                        "algo.filter_metric (all right or all wrong; or all the same reward)",
    # which groups train (siri.algo.dynamic_sampling)
    "sampling_rounds": "int: rounds of prompts sampled (> 1 only with algo.dynamic_sampling)",
    "groups_drawn": "int: prompt groups sampled over the rounds",
    "groups_discarded": "int: groups drawn but not trained on (all equal, or surplus of the last round)",
    "groups_trained": "int: groups the update trained on",
    "truncated_masked": "int: truncated responses of the trained groups left out of the loss "
                        "(algo.mask_truncated; else 0)",
    # reward calls that failed and scored 0 (siri.rewards.scoring)
    "reward_errors": "int: failed reward calls, all causes (raised, timed out, crashed, returned NaN)",
    "reward_timeouts": "int: failed calls that ran past reward.timeout_s",
    "reward_workers_replaced": "int: reward worker processes killed at the deadline or dead, and replaced",
    # the update (siri.algo.policy_update): means over the step's optimizer steps, 0 when none ran
    "loss": "float: the policy loss (token mean over each mini-batch's response tokens)",
    "grad_norm": "float: global gradient norm before clipping",
    "update_skipped": "float: fraction of optimizer steps skipped for a non-finite loss or gradient",
    "train_tokens": "float: response tokens in each optimizer step's loss (over all ranks)",
    "clip_frac_low": "float: fraction of tokens with A < 0 where the lower clip (1 - clip_low) is active",
    "clip_frac_high": "float: fraction of tokens with A > 0 where the upper clip (1 + clip_high) is active",
    "clip_frac_dual": "float: fraction of tokens with A < 0 where the dual clip (clip_c) is active",
    "approx_kl": "float: mean over tokens of old_logprob - logprob",
    "entropy": "float: mean token entropy of the policy (at the rollout temperature)",
    "optimizer_steps": "int: optimizer steps taken (ppo_epochs x mini-batches with tokens)",
    "lr": "float: the learning rate after the step's optimizer steps (what the next one uses; warmup applied)",
    "skipped_steps": "int: optimizer steps skipped so far in the run",
    "tokens_generated": "int: response tokens sampled in the step (all rounds, every rank)",
    "rollout_tokens_per_s": "float: tokens_generated / time_rollout_s",
    # seconds of wall-clock time
    "time_rollout_s": "float: generating the responses (every round)",
    "time_reward_s": "float: scoring them, shaping rewards, advantages and gathering over ranks",
    "time_update_s": "float: the update (old logprobs, forward, backward, optimizer)",
    "time_step_s": "float: the whole step",
}
"""Every key of a step's metrics (:func:`step_metrics`, ``Trainer.train_step``), in order,
with its type and meaning. With several reward terms (``reward.fns``) the keys of
:data:`REWARD_TERM_METRICS` follow, one per term."""

REWARD_TERM_METRICS: dict[str, str] = {
    "reward_term/<name>": "float: with reward.fns, one per term in its order: the mean of that term's own score "
                          "(before its weight) over the step's responses it scored (a truncated response given "
                          "reward.truncated_reward is not scored; null when none was)",
}
"""The per-term keys that follow :data:`STEP_METRICS` when the reward has several terms
(``siri.rewards.terms``)."""

EVAL_METRICS: dict[str, str] = {
    "eval_accuracy": "float: mean over held-out problems of the fraction of correct samples (truncated: wrong)",
    "eval_response_len_mean": "float: mean over problems of the mean sample length in tokens",
    "eval_truncation_rate": "float: fraction of samples cut at the cap",
    "eval_num_samples": "int: problems x eval.n",
    "eval_seconds": "float: wall-clock time of the evaluation",
}
"""The keys a step's line gains when it evaluates (``siri.train.training_eval``: every
``trainer.eval_every`` steps and at the schedule's peaks and troughs)."""

REQUIRED_FIELDS = ("step", "cap", "phase", "reward_mean", "accuracy", "response_len_mean",
                   "response_len_p50", "response_len_max", "truncation_rate", "loss")
"""The keys every reader of a metrics.jsonl may rely on (a subset of :data:`STEP_METRICS`)."""


class StageTimer:
    """Wall-clock seconds of a step's stages (the ``time_*_s`` metrics), from its creation on.

    ``with timer.measure("rollout"): ...`` adds the block's seconds to that stage;
    :meth:`seconds` gives ``rollout``, ``reward``, ``update`` and the whole ``step``.
    """

    def __init__(self) -> None:
        self._started = time.perf_counter()
        self._seconds = {"rollout": 0.0, "reward": 0.0, "update": 0.0}

    @contextmanager
    def measure(self, stage: str) -> Iterator[None]:
        started = time.perf_counter()
        yield
        self._seconds[stage] += time.perf_counter() - started

    def seconds(self) -> dict[str, float]:
        return {**self._seconds, "step": time.perf_counter() - self._started}


def step_metrics(step: int, cap: int, phase: str, *, samples: Sequence[SampleStats],
                 trained: Sequence[SampleStats], mask_truncated: bool, all_equal: Sequence[bool],
                 sampling: Mapping[str, float], reward_failures: RewardFailures, update: UpdateStats, lr: float,
                 skipped_steps: int, seconds: Mapping[str, float]) -> dict[str, Any]:
    """A step's metrics: the keys of :data:`STEP_METRICS`, in order.

    Args:
        step, cap, phase: the step, its cap and its schedule phase.
        samples: every response sampled in the step (all rounds, every rank), non-empty.
        trained: those of the groups that trained.
        mask_truncated: ``algo.mask_truncated`` (truncated responses are left out of the loss).
        all_equal: each drawn group's all-equal flag (``siri.algo.dynamic_sampling.group_all_equal``).
        sampling: ``GroupCollector.stats()``: sampling_rounds, groups_drawn, groups_discarded,
            groups_trained.
        reward_failures: the step's failed reward calls, summed over rounds and ranks.
        update: the update's means over its optimizer steps.
        lr: the learning rate after the step.
        skipped_steps: optimizer steps skipped so far in the run.
        seconds: wall-clock seconds of ``rollout``, ``reward``, ``update`` and the whole ``step``.

    The samples' reward-term scores (``SampleStats.terms``), when they have any, add the keys
    of :data:`REWARD_TERM_METRICS` at the end.
    """
    lengths = [s.num_tokens for s in samples]
    rewards = torch.tensor([s.reward for s in samples], dtype=torch.float64)
    generated = sum(lengths)
    return {
        "step": step, "cap": cap, "phase": phase,
        "reward_mean": float(rewards.mean()), "reward_std": float(rewards.std()) if len(rewards) > 1 else 0.0,
        "accuracy": sum(s.correct for s in samples) / len(samples),
        "response_len_mean": statistics.fmean(lengths), "response_len_p50": float(statistics.median(lengths)),
        "response_len_max": max(lengths), "response_len_min": min(lengths),
        "truncation_rate": sum(s.truncated for s in samples) / len(lengths),
        "groups_all_equal": sum(all_equal) / len(all_equal),
        "sampling_rounds": sampling["sampling_rounds"], "groups_drawn": sampling["groups_drawn"],
        "groups_discarded": sampling["groups_discarded"], "groups_trained": sampling["groups_trained"],
        "truncated_masked": sum(s.truncated for s in trained) if mask_truncated else 0,
        "reward_errors": reward_failures.errors, "reward_timeouts": reward_failures.timeouts,
        "reward_workers_replaced": reward_failures.workers_replaced,
        "loss": update.loss, "grad_norm": update.grad_norm, "update_skipped": update.update_skipped,
        "train_tokens": update.train_tokens, "clip_frac_low": update.clip_frac_low,
        "clip_frac_high": update.clip_frac_high, "clip_frac_dual": update.clip_frac_dual,
        "approx_kl": update.approx_kl, "entropy": update.entropy, "optimizer_steps": update.optimizer_steps,
        "lr": lr, "skipped_steps": skipped_steps, "tokens_generated": generated,
        "rollout_tokens_per_s": generated / max(seconds["rollout"], 1e-9),
        "time_rollout_s": seconds["rollout"], "time_reward_s": seconds["reward"],
        "time_update_s": seconds["update"], "time_step_s": seconds["step"],
        **_reward_term_means(samples),
    }


def _reward_term_means(samples: Sequence[SampleStats]) -> dict[str, float]:
    """``reward_term/<name>``: each term's mean over the samples it scored (NaN: none)."""
    means = {}
    for name in samples[0].terms:
        scored = [s.terms[name] for s in samples if math.isfinite(s.terms[name])]
        means[f"reward_term/{name}"] = statistics.fmean(scored) if scored else math.nan
    return means


def read_metrics(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The records of a metrics.jsonl, in file order. Blank lines are skipped, and so is an
    unparsable last line (a run killed mid-write), with a warning; an unparsable line
    elsewhere is a ValueError naming ``file:line``."""
    lines = [(i, line) for i, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1)
             if line.strip()]
    records = []
    for k, (i, line) in enumerate(lines):
        try:
            records.append(json.loads(line))
        except ValueError as e:
            if k < len(lines) - 1:
                raise ValueError(f"{path}:{i} is not valid JSON: {e}") from e
            warnings.warn(f"{path}:{i}: skipping an incomplete last line", stacklevel=2)
    return records


def read_run_metrics(run_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """The records of ``run_dir/metrics.jsonl`` that have a numeric ``step``, sorted by step.
    Raises FileNotFoundError naming the missing run dir or file, ValueError when there are
    no step records."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run directory {run_dir} does not exist")
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist (no training metrics in this run directory)")
    records = [r for r in read_metrics(path) if isinstance(r, dict) and isinstance(r.get("step"), (int, float))
               and not isinstance(r.get("step"), bool)]
    if not records:
        raise ValueError(f"{path} has no records with a 'step'")
    return sorted(records, key=lambda r: r["step"])


class MetricsLog:
    """Appends step metrics to ``metrics.jsonl`` (flushed and fsynced per line), and passes them
    to the TensorBoard / W&B sinks that are on.

    Opening with ``resume_step=N`` keeps only the lines of steps ``< N`` and drops the rest
    (steps a killed run logged after its last checkpoint are redone), so the log of a resumed
    run equals that of an uninterrupted one; with ``resume_step > 0`` W&B continues the run
    whose id ``RUN_DIR/wandb_run_id`` holds (see :data:`WANDB_RUN_ID_FILE`).

    Args:
        run_dir: the run directory (``trainer.run_dir``).
        resume_step: the step the run starts at (0: a fresh run).
        tensorboard, wandb: turn those sinks on (``trainer.tensorboard`` / ``trainer.wandb``).
        wandb_project, wandb_entity, wandb_name: the W&B project, entity (user or team; None:
            the login's default) and display name (None: W&B picks one).
        config: the resolved config as a dict, recorded by W&B.
    """

    def __init__(self, run_dir: str | os.PathLike, *, resume_step: int = 0, tensorboard: bool = False,
                 wandb: bool = False, wandb_project: str = "siri", wandb_entity: str | None = None,
                 wandb_name: str | None = None, config: dict | None = None):
        self.path = Path(run_dir) / "metrics.jsonl"
        kept = []
        if self.path.exists():
            kept = [row for row in read_metrics(self.path) if row.get("step", math.inf) < resume_step]
        write_text_atomic(self.path, "".join(json.dumps(row) + "\n" for row in kept))
        self._file = open(self.path, "a", encoding="utf-8")
        self._sinks: list[_TensorBoardSink | _WandbSink] = []
        if tensorboard:
            self._sinks.append(_TensorBoardSink(Path(run_dir) / "tensorboard"))
        if wandb:
            self._sinks.append(_WandbSink(Path(run_dir), config or {}, project=wandb_project, entity=wandb_entity,
                                          name=wandb_name, resume=resume_step > 0))

    def log(self, metrics: dict[str, Any], samples: Sequence[Mapping[str, Any]] = ()) -> None:
        """Write a step's metrics. ``samples``: rows of responses to show with them (the dicts of
        ``siri.train.rollout_samples.rollout_rows``); W&B logs them as a table ``samples``, the
        other outputs ignore them."""
        line = json.dumps(_finite_or_none(metrics)) + "\n"
        fault_point("metrics_write", lambda: self._write_raw(line[:len(line) // 2]))
        self._file.write(line)
        self._file.flush()
        os.fsync(self._file.fileno())
        for sink in self._sinks:
            sink.log(metrics, samples)

    def _write_raw(self, text: str) -> None:
        self._file.write(text)
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()
        for sink in self._sinks:
            sink.close()


def _finite_or_none(metrics: dict[str, Any]) -> dict[str, Any]:
    """JSON has no NaN/inf: write them as null."""
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in metrics.items()}


class _TensorBoardSink:
    def __init__(self, log_dir: Path):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as e:
            raise ImportError("trainer.tensorboard needs the tensorboard package: pip install 'siri[tensorboard]'") from e
        self._writer = SummaryWriter(str(log_dir))

    def log(self, metrics: dict[str, Any], samples: Sequence[Mapping[str, Any]] = ()) -> None:
        for key, value in metrics.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and key != "step":
                self._writer.add_scalar(key, value, metrics["step"])

    def close(self) -> None:
        self._writer.close()


WANDB_RUN_ID_FILE = "wandb_run_id"
"""The file in the run directory that holds the run's W&B id, so that a resumed run logs to
the same W&B run."""

SAMPLE_COLUMNS = ("step", "prompt_index", "sample", "prompt", "response", "answer", "reward", "correctness",
                  "advantage", "num_tokens", "finish_reason")
"""The columns of the W&B ``samples`` table (keys of the rows given to :meth:`MetricsLog.log`)."""


def wandb_run_id(run_dir: Path, wandb: Any, *, resume: bool) -> str:
    """The W&B run id of the run in ``run_dir``: the stored one when ``resume`` and
    :data:`WANDB_RUN_ID_FILE` exists, else a new one (``wandb.util.generate_id()`` where the
    module has it, else 8 hex digits), stored (atomically) for the next resume."""
    path = run_dir / WANDB_RUN_ID_FILE
    if resume and path.is_file():
        stored = path.read_text(encoding="utf-8").strip()
        if stored:
            return stored
    generate = getattr(getattr(wandb, "util", None), "generate_id", None)
    run_id = str(generate()) if callable(generate) else uuid.uuid4().hex[:8]
    write_text_atomic(path, run_id + "\n")
    return run_id


class _WandbSink:
    def __init__(self, run_dir: Path, config: dict, *, project: str, entity: str | None, name: str | None,
                 resume: bool):
        try:
            import wandb
        except ImportError as e:
            raise ImportError("trainer.wandb needs the wandb package: pip install 'siri[wandb]'") from e
        self._wandb = wandb
        self._run = wandb.init(project=project, entity=entity, name=name, dir=str(run_dir), config=config,
                               id=wandb_run_id(run_dir, wandb, resume=resume), resume="allow")

    def log(self, metrics: dict[str, Any], samples: Sequence[Mapping[str, Any]] = ()) -> None:
        data = {k: v for k, v in metrics.items() if k != "step"}
        if samples:
            data["samples"] = self._wandb.Table(columns=list(SAMPLE_COLUMNS),
                                                data=[[row[c] for c in SAMPLE_COLUMNS] for row in samples])
        self._run.log(data, step=metrics["step"])

    def close(self) -> None:
        self._run.finish()
