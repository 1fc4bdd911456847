"""SIRI's length schedule inside TRL's ``GRPOTrainer`` (TRL 1.x), without a fork of TRL.

    from trl import GRPOConfig, GRPOTrainer
    from siri.integrations.trl import LengthScheduleCallback

    length = LengthScheduleCallback({"kind": "cosine", "l_max": 1024, "l_min": 256, "period": 20})
    args = GRPOConfig(output_dir="out", max_steps=60, max_completion_length=length.longest_cap(60),
                      loss_type="dapo", beta=0.0, logging_steps=1)
    trainer = GRPOTrainer(model=model, reward_funcs=[length.capped(my_reward)], args=args,
                          train_dataset=dataset)
    length.attach(trainer)
    trainer.train()

What it does, step ``t`` (TRL's ``state.global_step``, 0-based like ``siri train``'s step):

- The generation cap is ``schedule(t)``, set before the step's rollouts are generated (the
  callback's ``on_step_begin``, which runs before TRL's ``_prepare_inputs`` generates): on
  ``trainer.max_completion_length`` (TRL's tool loop and the ``dr_grpo`` normaliser read it),
  ``trainer.generation_config.max_new_tokens`` (the transformers ``generate`` and continuous
  batching paths) and ``trainer.vllm_generation.max_completion_length`` (the vLLM path, colocate
  and server alike: it is each request's ``max_tokens``). After the step it is set to the next
  step's cap, so an evaluation between steps samples, and is scored, under the same cap.
- :class:`CappedReward` (``length.capped(fn)``) scores a completion with no EOS token within the
  cap ``truncated_reward`` (0), whatever ``fn`` says: SIRI's length-capped reward.
- TRL's logs get ``siri/cap`` (the step's cap) and ``siri/compressing`` (1 in a compression
  phase, 0 in an expansion), averaged over each logging window like TRL's own metrics.
- A checkpoint is saved after each of the schedule's peaks and troughs (``schedule.peaks`` /
  ``troughs`` over ``state.max_steps``), as ``siri train`` does, and every checkpoint gets a
  ``siri_schedule.json``: the step, its cap and phase, ``peak``/``trough``, the schedule.

With ``steps_per_generation`` (or ``num_iterations``) above 1, TRL reuses one generation for
several optimizer steps; its completions have the cap of the step that generated them.
"""
from __future__ import annotations

import functools
import inspect
import json
import os
from typing import Any, Callable, Iterable, Mapping

from transformers import TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from siri.algo.schedule import LengthSchedule, schedule_from_dict
from siri.atomic_io import write_text_atomic

__all__ = ["CappedReward", "LengthScheduleCallback", "as_schedule"]

MARKER = "siri_schedule.json"
"""The file each checkpoint gets: its step, cap, phase, kind (peak / trough) and the schedule."""


def as_schedule(source: LengthSchedule | Mapping[str, Any] | str | os.PathLike | Any) -> LengthSchedule:
    """A siri length schedule from what a user has at hand.

    Args:
        source: a :class:`~siri.algo.schedule.LengthSchedule`; a siri ``Config`` (its
            ``length_schedule()``: ``multiple_of`` defaults to ``rollout.page_size``); a
            ``schedule:`` dict (``kind`` plus ``make_schedule`` parameters; ``multiple_of``
            defaults to 1); a whole siri config dict (with a ``schedule`` key, read as a
            ``Config``); or the path of a siri YAML config (the same two forms).

    Raises:
        ValueError: the source is none of these, or its schedule is invalid (the message names
            the parameter).
    """
    from siri.config import Config, config_from_dict

    if isinstance(source, LengthSchedule):
        return source
    if isinstance(source, Config):
        return source.length_schedule()
    if isinstance(source, (str, os.PathLike)):
        import yaml

        with open(source) as f:
            loaded = yaml.safe_load(f)
        if not isinstance(loaded, dict):
            raise ValueError(f"schedule: {os.fspath(source)!r} holds no YAML mapping (a siri config or a "
                             f"schedule: section)")
        source = loaded
    if isinstance(source, Mapping):
        if "schedule" in source:
            return config_from_dict(dict(source)).length_schedule()
        return schedule_from_dict(dict(source))
    raise ValueError(f"schedule must be a LengthSchedule, a siri Config, a schedule dict or a YAML path, "
                     f"got {type(source).__name__}")


def _truncated(ids: Iterable[int], eos: frozenset[int], cap: int | None) -> bool:
    """No EOS token among the first ``cap`` ids (all of them when ``cap`` is None)."""
    window = list(ids) if cap is None else list(ids)[:cap]
    return not any(token in eos for token in window)


class CappedReward:
    """A TRL reward function scoring a completion cut at the cap ``truncated_reward`` (SIRI's
    capped reward): ``fn``'s score otherwise.

    Called by TRL as ``reward(prompts=..., completions=..., completion_ids=..., **kwargs)``;
    ``fn`` gets exactly these arguments. A completion is truncated when none of its first
    ``cap`` token ids (``completion_ids``, a list of int lists) is an EOS token, with ``cap``
    the schedule's value at ``kwargs["trainer_state"].global_step`` (all ids when there is no
    schedule or no trainer state). A class, not a closure, so TRL can pickle it.

    Args:
        fn: a synchronous TRL reward function (returns one float or None per completion).
        eos_token_ids: the ids that end a completion (an int or a list); None until
            :meth:`LengthScheduleCallback.attach` sets the trainer's own (``trainer.eos_token_ids``).
        schedule: the length schedule the completions were generated under, or None.
        truncated_reward: the score of a truncated completion (siri's ``reward.truncated_reward``).
    """

    def __init__(self, fn: Callable[..., list], eos_token_ids: int | Iterable[int] | None = None, *,
                 schedule: LengthSchedule | None = None, truncated_reward: float = 0.0):
        if not callable(fn):
            raise ValueError(f"CappedReward: fn must be a reward function, got {type(fn).__name__}")
        target = fn
        while isinstance(target, functools.partial):
            target = target.func
        if inspect.iscoroutinefunction(target) or inspect.iscoroutinefunction(type(target).__call__):
            raise ValueError("CappedReward: fn is async; wrap a synchronous reward function")
        self.fn, self.schedule, self.truncated_reward = fn, schedule, float(truncated_reward)
        self.eos_token_ids = None if eos_token_ids is None else _id_list(eos_token_ids)
        # TRL names the reward in its logs (rewards/<name>/mean) after the function's __name__
        self.__name__ = getattr(fn, "__name__", type(fn).__name__)

    def __call__(self, prompts: list | None = None, completions: list | None = None,
                 completion_ids: list[list[int]] | None = None, **kwargs: Any) -> list:
        if completion_ids is None:
            raise ValueError(f"{self.__name__} (CappedReward) needs completion_ids, which TRL's GRPOTrainer passes")
        if self.eos_token_ids is None:
            raise ValueError(f"{self.__name__} (CappedReward) has no eos_token_ids: pass them, or attach a "
                             f"LengthScheduleCallback to the trainer")
        scores = list(self.fn(prompts=prompts, completions=completions, completion_ids=completion_ids, **kwargs))
        if len(scores) != len(completion_ids):
            raise ValueError(f"{self.__name__} returned {len(scores)} rewards for {len(completion_ids)} completions")
        state = kwargs.get("trainer_state")
        cap = self.schedule(state.global_step) if self.schedule is not None and state is not None else None
        eos = frozenset(self.eos_token_ids)
        return [self.truncated_reward if _truncated(ids, eos, cap) else score
                for score, ids in zip(scores, completion_ids)]


def _id_list(ids: int | Iterable[int]) -> list[int]:
    return [int(ids)] if isinstance(ids, int) else [int(i) for i in ids]


class LengthScheduleCallback(TrainerCallback):
    """Runs a siri length schedule inside a TRL ``GRPOTrainer`` (the module docstring).

    Args:
        schedule: anything :func:`as_schedule` takes (a schedule, a siri config or its
            ``schedule:`` section, a YAML path).
        save_at_extrema: save a checkpoint after each peak and trough step (``siri train``'s
            ``trainer.save_at_extrema``). TRL's ``save_total_limit`` may delete them later.

    Attributes:
        cap, phase: those of the step the trainer is at (None before :meth:`attach`).
    """

    def __init__(self, schedule: Any, *, save_at_extrema: bool = True):
        self.schedule = as_schedule(schedule)
        self.save_at_extrema = save_at_extrema
        self.trainer: Any = None
        self.cap: int | None = None
        self.phase: str | None = None
        self.peaks: set[int] = set()
        self.troughs: set[int] = set()

    def longest_cap(self, num_steps: int) -> int:
        """The largest cap of a ``num_steps`` run: set ``GRPOConfig.max_completion_length`` (and
        the vLLM context length, plus the longest prompt) to it."""
        return self.schedule.longest_cap(num_steps)

    def capped(self, fn: Callable[..., list], truncated_reward: float = 0.0) -> CappedReward:
        """``fn`` as a :class:`CappedReward` under this schedule (its EOS ids come at :meth:`attach`)."""
        return CappedReward(fn, schedule=self.schedule, truncated_reward=truncated_reward)

    def attach(self, trainer: Any) -> LengthScheduleCallback:
        """Bind to a TRL ``GRPOTrainer`` (constructed, not yet training): add this callback,
        give its :class:`CappedReward` functions the trainer's EOS ids and set the step's cap.

        Raises:
            ValueError: ``trainer`` is not a TRL 1.x GRPOTrainer, or its vLLM context
                (``vllm_max_model_length``) is shorter than the schedule's largest cap.
        """
        missing = [name for name in ("max_completion_length", "eos_token_ids", "_metrics", "add_callback")
                   if not hasattr(trainer, name)]
        if missing:
            raise ValueError(f"attach: trainer must be a TRL (1.x) GRPOTrainer; {type(trainer).__name__} has no "
                             f"{', '.join(missing)}")
        args = trainer.args
        if getattr(trainer, "use_vllm", False) and args.max_steps > 0:
            longest = self.schedule.longest_cap(args.max_steps)
            context = getattr(args, "vllm_max_model_length", None)
            if context is not None and context <= longest:
                raise ValueError(f"vllm_max_model_length ({context}) must exceed the schedule's largest cap "
                                 f"({longest}) by the longest prompt")
        self.trainer = trainer
        for reward in getattr(trainer, "reward_funcs", []):
            if isinstance(reward, CappedReward) and reward.eos_token_ids is None:
                reward.eos_token_ids = _id_list(trainer.eos_token_ids)
        if self not in trainer.callback_handler.callbacks:
            trainer.add_callback(self)
        self._set_cap(trainer.state.global_step)
        return self

    def _set_cap(self, step: int) -> None:
        """Make ``schedule(step)`` the cap of every generation path TRL has."""
        if self.trainer is None:
            raise RuntimeError("LengthScheduleCallback: call attach(trainer) before trainer.train()")
        cap = self.cap = self.schedule(step)
        self.phase = self.schedule.phase(step)
        trainer = self.trainer
        trainer.max_completion_length = cap
        if getattr(trainer, "generation_config", None) is not None:
            trainer.generation_config.max_new_tokens = cap
        if isinstance(getattr(trainer, "generation_kwargs", None), dict):
            trainer.generation_kwargs["max_new_tokens"] = cap
        if getattr(trainer, "vllm_generation", None) is not None:
            trainer.vllm_generation.max_completion_length = cap

    # ---- TrainerCallback events ------------------------------------------------------------
    def on_train_begin(self, args, state, control, **kwargs):
        steps = max(state.max_steps, 1)
        self.peaks, self.troughs = set(self.schedule.peaks(steps)), set(self.schedule.troughs(steps))
        self._set_cap(state.global_step)

    def on_step_begin(self, args, state, control, **kwargs):
        self._set_cap(state.global_step)
        # TRL's own metric store: its log() averages each list over the logging window
        metrics = self.trainer._metrics["train"]
        metrics["siri/cap"].append(float(self.cap))
        metrics["siri/compressing"].append(float(self.phase == "compress"))

    def on_step_end(self, args, state, control, **kwargs):
        done = state.global_step - 1
        if self.save_at_extrema and (done in self.peaks or done in self.troughs):
            control.should_save = True
        self._set_cap(state.global_step)

    def on_save(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        folder = os.path.join(args.output_dir, f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}")
        if not os.path.isdir(folder):
            return
        done = max(state.global_step - 1, 0)
        kind = "peak" if done in self.peaks else "trough" if done in self.troughs else None
        info = {"step": state.global_step, "last_step_cap": self.schedule(done), "phase": self.schedule.phase(done),
                "kind": kind, "schedule": self.schedule.to_dict()}
        write_text_atomic(os.path.join(folder, MARKER), json.dumps(info, indent=2) + "\n")
