"""Training configuration: dataclasses are the source of truth; YAML files and dotted
command-line overrides fill them in, and ``validate`` runs before any work starts.

    from siri import load_config
    cfg = load_config("configs/siri_r1_distill_qwen_1.5b.yaml", ["trainer.steps=10", "rollout.group_size=4"])

Every field is documented where it is declared, and a field with a fixed set of values declares
them there too (``metadata["choices"]``, read by validation, ``config_choices`` and the CLI; a
registry's names where one exists). Defaults are the paper's recipe (SIRI on
DeepSeek-R1-Distill-Qwen-1.5B: DAPO clip 0.2/0.28, no KL, token-mean, lr 1e-6, temperature 1.0).
"""
from __future__ import annotations

import dataclasses
import difflib
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from siri.algo.schedule import LengthSchedule, schedule_from_dict
from siri.data.formatting import DEEPSCALER_INSTRUCTION, check_chat_template_kwargs
from siri.rewards.length_shaping import LENGTH_REWARDS
from siri.rewards.loader import DEFAULT_REWARD

__all__ = ["Config", "ModelConfig", "DataConfig", "RolloutConfig", "AlgoConfig", "OptimConfig",
           "RewardConfig", "TrainerConfig", "EvalConfig", "ConfigError", "load_config", "config_from_dict",
           "config_to_dict", "apply_overrides", "config_choices"]


class ConfigError(ValueError):
    """A config that cannot be used; the message names the key and what was expected."""


@dataclass
class ModelConfig:
    path: str = "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B"
    """A local Hugging Face model directory, or a Hub id (downloaded by transformers)."""
    dtype: str = field(default="auto", metadata={"choices": ("auto", "float32", "bfloat16", "float16")})
    """Compute dtype of the training forward/backward and of the rollout engine: "float32",
    "bfloat16", or "auto" (bf16 on CUDA, fp32 on CPU)."""
    param_dtype: str = field(default="float32", metadata={"choices": ("float32", "bfloat16")})
    """Dtype of the master weights, of the gradients' accumulation and reduction, and of the
    AdamW state (and of the saved checkpoints). When it is wider than ``dtype`` the trainer
    keeps an fp32 master copy and refreshes the compute copy after every optimizer step (at
    lr 1e-6 a bf16 weight cannot absorb the update). "bfloat16" trains purely in bf16 (only
    sensible with a bf16 ``dtype`` and a large lr)."""
    device: str = field(default="auto", metadata={"choices": ("auto", "cpu", "cuda")})
    """"cuda", "cpu", or "auto" (CUDA when visible and siri was built with CUDA kernels)."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass (less memory, about 30% more compute)."""
    trust_remote_code: bool = False
    """Let transformers run the Python code shipped in the model repository (custom
    architectures or tokenizers) when it loads the config, model and tokenizer. Off by default:
    turn it on only for a repository you trust. Qwen2 (the paper's model) needs none."""


@dataclass
class DataConfig:
    train: str = "deepscaler"
    """A local file/dir (.jsonl, .parquet, a ``datasets.save_to_disk`` dir), a named dataset
    (``deepscaler``; loads from ``path`` when given, else from the Hub) or any other Hub dataset
    id (``datasets.load_dataset(train, subset, split=split)``). A string that starts with
    ./ ../ / ~ or ends in .jsonl, .parquet, ... is always a local path."""
    subset: str | None = None
    """The Hub dataset's config (subset) name, ``load_dataset``'s second argument; null: none
    (a named dataset's own)."""
    path: str | None = None
    """Local copy of a named dataset (any of the formats above)."""
    split: str | None = None
    """The split to read from a ``datasets.save_to_disk`` directory or the Hub; null: the
    named dataset's own (deepscaler: "train"), "train" for a path. Single-split files
    (.jsonl, .parquet) ignore it."""
    prompt_key: str | None = None
    """Field holding the problem: its text, or a list of chat messages ({role, content}, as in
    verl's parquet files and TRL's conversational datasets). A dotted path reaches a nested
    field. Null: the spec's for names, else the first present of prompt, problem, question."""
    answer_key: str | None = None
    """Field holding the reference answer; a dotted path reaches a nested field
    (``reward_model.ground_truth``). Null: the spec's for names, else the first present of
    answer, solution, ground_truth, reward_model.ground_truth."""
    instruction: str | None = DEEPSCALER_INSTRUCTION
    """Appended to every prompt (DeepScaleR's instruction by default); null for none."""
    system_prompt: str | None = None
    """A system turn put before every prompt (needs ``use_chat_template``); null: none, as
    DeepSeek-R1's distilled models are trained and evaluated without one."""
    use_chat_template: bool = True
    """Wrap prompts in the tokenizer's chat template (with the generation prompt). Prompts
    given as chat messages need it."""
    chat_template_kwargs: dict[str, Any] | None = None
    """Extra arguments of the tokenizer's ``apply_chat_template``, rendered into the template,
    e.g. ``{enable_thinking: false}`` for Qwen3; saved with the model's prompt format."""
    max_prompt_tokens: int = 1024
    """Longer prompts are skipped and counted."""
    shuffle: bool = True
    """Visit the prompts in a fresh random order every epoch (the order follows
    ``trainer.seed`` and the epoch, so a resumed run continues it exactly); false: file order."""
    on_error: str = field(default="skip", metadata={"choices": ("skip", "raise")})
    """Malformed rows: "skip" (count them in the log) or "raise" (fail naming file and row)."""


@dataclass
class RolloutConfig:
    prompts_per_step: int = 128
    """Prompts sampled per training step (the paper: 128)."""
    group_size: int = 8
    """Completions per prompt (GRPO's G)."""
    temperature: float = 1.0
    """Sampling temperature of the rollouts (> 0). The loss's logprobs are taken at the same
    temperature (``log_softmax(logits / temperature)``), so the ratio compares the policy that
    sampled with the one being trained. The paper: 1.0, sampling the policy as it is."""
    top_p: float = 1.0
    """Nucleus sampling of the rollouts: draw from the smallest set of most likely tokens whose
    probability mass reaches ``top_p``, in (0, 1]; 1.0 is off (the paper). The loss still uses
    the logprobs of the unfiltered policy."""
    top_k: int = 0
    """Draw rollout tokens from the ``top_k`` most likely ones only; 0 is off (the paper)."""
    page_size: int = 16
    """Tokens per KV page; the schedule's caps are rounded down to a multiple of it."""
    max_num_seqs: int = 256
    """The most sequences decoding at once."""
    kv_cache_gb: float | None = None
    """KV page pool size in GiB; null: ``gpu_memory_fraction`` of the CUDA memory free when the
    rollout starts, or 2 GiB on the CPU."""
    gpu_memory_fraction: float = 0.8
    """With ``kv_cache_gb`` null on CUDA: the share of the memory free at rollout start (after
    weights, master weights and optimizer state) that the KV pool takes; the rest is headroom
    for the decode activations and logits. Like vLLM's ``gpu_memory_utilization``, but of the
    free memory, since the trainer's state shares the device."""
    keep_kv_cache: bool = False
    """Keep the KV pool allocated between rollouts. Default false: the pool is allocated when
    a rollout starts and freed before the update, so training activations get that memory."""
    max_prefill_tokens: int = 8192
    """The most prompt tokens the engine prefills in one forward pass, which bounds the
    prefill's activation and logits memory; a prompt longer than it is prefilled alone."""
    cuda_graphs: bool | None = None
    """Replay the decode forward from CUDA graphs (one per batch-size bucket, captured at the
    start of each rollout; their memory comes out of the KV pool's budget). Null: on with
    CUDA, off on the CPU, where true runs the graphs' padded buckets eagerly (tests only)."""


@dataclass
class AlgoConfig:
    clip_low: float = 0.2
    """PPO's epsilon on the low side: the ratio is clipped below at ``1 - clip_low``, in
    (0, 1) (DAPO and the paper: 0.2)."""
    clip_high: float = 0.28
    """DAPO's clip-higher: ratio clipped to [1 - clip_low, 1 + clip_high]."""
    clip_c: float | None = 3.0
    """Dual-clip constant (> 1): for a negative advantage the loss is bounded by
    ``-c * A`` however large the ratio grows (a stale token cannot blow up the step). 3.0 is
    verl's default, kept by its DAPO recipe; the SIRI paper does not say. null is off."""
    kl_coef: float = 0.0
    """k3 KL penalty against the initial policy (loads a frozen reference copy when > 0)."""
    advantage_scale: str = field(default="group", metadata={"choices": ("group", "none")})
    """"group": (r - mean) / (std + eps) (GRPO); "none": r - mean (Dr. GRPO)."""
    advantage_eps: float = 1e-6
    """Added to the group's reward std before dividing (``advantage_scale: group``), so a group
    whose rewards are all equal gets advantage 0 rather than 0/0 (verl's 1e-6)."""
    ppo_epochs: int = 1
    """Passes over each step's rollouts."""
    mini_batches: int = 1
    """Optimizer steps per epoch; the step's prompts are split evenly between them. With 1
    (and one epoch) the update is exactly on-policy: the ratio is 1 and the clip never acts.
    The paper recipe uses 4 (32 prompts per optimizer step, verl's DAPO mini-batch)."""
    micro_batch_tokens: int = 16384
    """Token budget of one forward/backward (padded sequences x length), so cost follows real
    tokens. Sequences longer than the budget run alone."""
    old_logprobs: str = field(default="auto", metadata={"choices": ("auto", "recompute", "engine")})
    """Where the ratio's denominator comes from: "recompute" (a no-grad forward of the policy
    before the update), "engine" (the sampler's logprobs; only exactly on-policy, i.e.
    ppo_epochs = mini_batches = 1; the engine's forward differs in rounding from the training
    forward) or "auto": exactly on-policy, the training forward's own logprobs, detached (the
    values "recompute" gives, without its extra forward), otherwise "recompute"."""
    filter_equal_groups: bool = False
    """Drop the groups that are all equal by ``filter_metric`` (by default: all right or all
    wrong) without drawing others in their place: the step trains on fewer groups. See
    ``dynamic_sampling``."""
    dynamic_sampling: bool = False
    """DAPO's dynamic sampling: drop the groups that are all equal by ``filter_metric`` (by
    default: all right or all wrong) and keep drawing rounds of ``rollout.prompts_per_step``
    new prompts until that many other groups are collected (surplus ones are discarded) or
    ``max_sampling_rounds`` rounds were drawn. Off in the SIRI paper, on in verl's DAPO
    recipe. Metrics: sampling_rounds, groups_drawn, groups_discarded, groups_trained."""
    filter_metric: str = field(default="acc", metadata={"choices": ("acc", "reward")})
    """What "all equal" means for ``dynamic_sampling`` and ``filter_equal_groups`` (and the
    ``groups_all_equal`` metric): "acc" (DAPO, verl's ``filter_groups.metric: acc``): the
    responses' correctness flags (the reward function's own score >= 0.5,
    ``siri.rewards.correctness``) are all equal, so an all-wrong group is dropped even when
    length terms (``reward.overlong_buffer``, ``reward.length_reward``) make its rewards
    differ; "reward": the shaped rewards are all equal (only zero-advantage groups are
    dropped; an all-wrong group then trains on the length terms alone)."""
    max_sampling_rounds: int = 10
    """With ``dynamic_sampling``: the most rounds per step (verl's ``max_num_gen_batches``);
    a step that reaches it trains on the groups it has, and warns."""
    mask_truncated: bool = False
    """Exclude responses cut at the cap from the loss (TRL's ``mask_truncated_completions``,
    DAPO's overlong filtering) instead of training on their ``reward.truncated_reward``: they
    still count in their group's advantage statistics. Off for SIRI, whose compression comes
    from truncated responses scoring 0."""


@dataclass
class OptimConfig:
    lr: float = 1e-6
    """AdamW's learning rate, reached after ``warmup_steps`` and constant from then on (> 0).
    The paper: 1e-6, which needs fp32 master weights (``model.param_dtype``) to take effect."""
    weight_decay: float = 0.01
    """AdamW's decoupled weight decay, applied to every parameter (torch's and verl's 0.01)."""
    betas: tuple[float, float] = (0.9, 0.999)
    """AdamW's decay rates of its running averages of the gradient and of its square (torch's
    and verl's defaults)."""
    eps: float = 1e-8
    """AdamW's epsilon, added to the square root of the second moment before dividing, so
    parameters whose gradients are about 0 do not take huge steps (torch's default)."""
    warmup_steps: int = 0
    """Linear warmup from 0 to lr over this many optimizer steps, then constant."""
    grad_clip: float = 1.0
    """Max global gradient norm; 0 disables clipping."""


@dataclass
class RewardConfig:
    fn: str = DEFAULT_REWARD
    """``"package.module:function"``, returning a float per response. It names the inputs it
    wants: the response (first positional parameter) and any of ``prompt``, ``reference``,
    ``finish_reason``, ``row`` (the dataset row), ``step``; ``(response_text, reference,
    finish_reason)`` works as before (``siri.rewards.binding``). The default scores 1 for a
    correct final answer, 0 for a wrong or truncated one. A score >= 0.5 counts as correct, in
    training metrics, dynamic sampling and evaluation alike (``siri.rewards.correctness``)."""
    batched: bool = False
    """``fn`` takes lists (one entry per response for each input it names) and returns a list
    of floats: called once per scoring call, in the training process (a reward model or LLM
    judge batching on the GPU), without ``timeout_s``."""
    fns: list[dict[str, Any]] = field(default_factory=list)
    """Several reward terms instead of ``fn``, summed with weights: a list of ``{fn:
    "module:function", weight: 1.0, batched: false, correctness: false, name: null}``. Each
    term's mean is logged as ``reward_term/<name>`` (name: the function's by default). The
    term with ``correctness: true`` (default: the first) decides correctness; weights must be
    finite. Empty: the one term ``fn`` (``siri.rewards.terms``)."""
    timeout_s: float | None = 30.0
    """Per-response limit on the reward function (SIGALRM, main thread); a reward that times
    out, raises or returns NaN/inf scores 0 and is counted in ``reward_errors``. null: none."""
    truncated_reward: float | None = 0.0
    """Reward of a response cut at the step's cap (finish_reason "length"), whatever ``fn``
    would say; ``fn`` is not called for it. SIRI's compression pressure comes from this.
    null hands truncated responses to ``fn`` too."""
    workers: int | None = None
    """Processes that score responses in parallel (each call's ``timeout_s`` enforced in the
    worker; a worker that crashes or hangs scores 0, is replaced and counted). 0 scores in
    the trainer's main thread. null: min(8, CPUs per local rank)."""
    overlong_buffer: int = 0
    """DAPO's soft overlong punishment: a response longer than ``cap - overlong_buffer``
    tokens loses ``overlong_penalty`` x (excess / buffer), reaching the whole penalty at the
    step's cap, so the zone follows the schedule. 0: off (the SIRI paper's choice; DAPO used
    4096 of 20480)."""
    overlong_penalty: float = 1.0
    """The penalty at the cap with ``overlong_buffer`` (DAPO: 1.0)."""
    length_reward: str = field(default="none", metadata={"choices": LENGTH_REWARDS})
    """A length term from the efficient-reasoning literature, added to every reward:
    "kimi" (Kimi k1.5: +0.5 for the group's shortest response down to -0.5 for its longest;
    wrong responses only the negative part), "l1_target" (L1's LCPO-Exact:
    -|length_target - length|), or "none"."""
    length_reward_weight: float | None = None
    """Multiplies ``length_reward``; null: the paper's (kimi 1.0, l1_target 0.0003)."""
    length_target: int | None = None
    """The target length in tokens of ``length_reward: l1_target``."""


@dataclass
class TrainerConfig:
    steps: int = 1920
    """Training steps (the paper: 3 cycles of 640)."""
    seed: int = 0
    """Seeds the whole run: the torch / numpy / Python generators at start, the prompt order
    (``data.shuffle``), the rollouts' sampling (keyed by seed, step, sampling round, prompt and
    sample, so a resumed run draws what the uninterrupted one would) and evaluation's draws."""
    run_dir: str = "runs/siri"
    """Holds config.yaml, metrics.jsonl, checkpoints/, eval/ and plots/."""
    save_every: int = 50
    """Checkpoint every N steps (0: only at extrema and the end)."""
    save_at_extrema: bool = True
    """Also checkpoint at every schedule peak and trough (SIRI-high / SIRI-low)."""
    keep_last: int = 3
    """Periodic checkpoints kept; peak/trough and final checkpoints are always kept."""
    resume: str = "auto"
    """"auto" (the newest complete checkpoint in run_dir, else start fresh), "never", or a
    checkpoint directory."""
    progress: bool = True
    """Show a progress bar (step, cap, phase, reward, length, truncation) when stdout is a
    terminal. When it is not (a log file, a pipe, SLURM or nohup output) there is no bar and,
    whatever this says, one plain line per step goes to the ``siri`` logger (to stdout unless
    logging is configured)."""
    parallelism: str = field(default="ddp", metadata={"choices": ("ddp", "fsdp")})
    """Multi-process runs: "ddp" (every rank holds the whole model and optimizer; gradients
    all-reduced) or "fsdp" (FSDP2: parameters, gradients and optimizer state sharded across
    ranks; the engine generates from a full copy gathered once per step)."""
    dist_timeout_s: float = 600.0
    """Multi-process runs: a collective that does not complete in this time (a rank died or
    hangs) ends the job with an error naming the rank, instead of hanging forever."""
    max_consecutive_skips: int = 3
    """A step whose loss or gradient is not finite skips its optimizer update (weights and
    optimizer state unchanged, counted in ``skipped_steps``); this many in a row abort."""
    save_rollouts: bool = False
    """Write every step's responses (text, tokens, finish reason, reward, advantage) to
    ``run_dir/rollouts/step_<t>.jsonl``, for debugging rewards."""
    eval_every: int = 0
    """Evaluate on the held-out ``eval.data`` after every N-th step (0: only at extrema, when
    ``eval_at_extrema``); the results join that step's line of metrics.jsonl as ``eval_*``."""
    eval_at_extrema: bool = True
    """With ``eval.data`` set: also evaluate at every schedule peak and trough, the points of
    SIRI's accuracy-vs-tokens path (``siri plot RUN_DIR`` draws it)."""
    tensorboard: bool = False
    """Also write the metrics to TensorBoard event files in ``run_dir/tensorboard`` (needs
    ``pip install 'siri[tensorboard]'``)."""
    wandb: bool = False
    """Also log the metrics to Weights & Biases, with the config (needs
    ``pip install 'siri[wandb]'`` and a login)."""
    wandb_project: str = "siri"
    """The W&B project of the run, with ``wandb``."""
    wandb_entity: str | None = None
    """The W&B entity (user or team) that owns the project; null: the login's default."""
    wandb_name: str | None = None
    """The W&B run's display name; null: W&B picks one. The run's id is kept in
    ``run_dir/wandb_run_id``, so a resumed run continues the same W&B run."""
    log_samples_every: int = 10
    """With ``wandb``: every N-th step, log a table ``samples`` of a few prompts' whole groups
    (prompt, response, answer, reward, correctness, advantage, tokens, finish reason); 0: never."""
    log_samples_prompts: int = 4
    """Prompt groups in each ``samples`` table (each with all its ``rollout.group_size``
    responses)."""


@dataclass
class EvalConfig:
    """Evaluation during training (``trainer.eval_every``, ``trainer.eval_at_extrema``) with the
    rollout engine, on held-out prompts formatted like the training ones."""

    data: str | None = None
    """A held-out file/dir or named dataset, as ``data.train``; null: no evaluation."""
    path: str | None = None
    """Local copy of a named ``data`` set."""
    prompt_key: str | None = None
    """Field holding the problem text, as ``data.prompt_key``."""
    answer_key: str | None = None
    """Field holding the reference answer, as ``data.answer_key``."""
    limit: int | None = None
    """Evaluate on the first N problems only (null: all)."""
    n: int = 4
    """Samples per problem; accuracy is pass@1 averaged over them (avg@n)."""
    max_tokens: int | None = None
    """The response cap of evaluation (a response that reaches it is wrong); null: the
    schedule's largest cap, so SIRI's troughs are judged with room to reason."""
    temperature: float = 0.6
    """Sampling temperature of evaluation (> 0); 0.6 is DeepSeek-R1's recommended setting for
    its distilled models, which their published scores use."""
    top_p: float = 1.0
    """Nucleus threshold of evaluation in (0, 1]; 1.0 is off."""


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    """The policy: where it is loaded from, its dtypes and device."""
    data: DataConfig = field(default_factory=DataConfig)
    """The training prompts and how they are formatted."""
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    """Sampling the responses: batch, group size, sampling parameters and the engine's KV pool."""
    algo: AlgoConfig = field(default_factory=AlgoConfig)
    """The policy update: advantages, the clipped loss, epochs and batching, group filtering."""
    optim: OptimConfig = field(default_factory=OptimConfig)
    """The AdamW optimizer and its learning-rate warmup."""
    reward: RewardConfig = field(default_factory=RewardConfig)
    """Scoring the responses, and the length terms added to the score."""
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    """The run: steps, seed, run directory, checkpoints, evaluation points, logging."""
    eval: EvalConfig = field(default_factory=EvalConfig)
    """Evaluation during training."""
    schedule: dict[str, Any] = field(default_factory=lambda: dict(
        kind="cosine", l_max=16384, l_min=8192, period=640))
    """The length schedule: ``kind`` (one of ``siri.algo.schedule.KINDS``) plus ``make_schedule``
    parameters (l_max, l_min, period, compress_fraction, points, multiple_of). multiple_of
    defaults to the page size."""

    def length_schedule(self) -> LengthSchedule:
        params = dict(self.schedule)
        params.setdefault("multiple_of", self.rollout.page_size)
        return schedule_from_dict(params)

    def validate(self, *, check_files: bool = True) -> None:
        """Raise ConfigError for values that cannot work, before any model is loaded."""
        _validate(self, check_files)


# ---- dict <-> dataclass ------------------------------------------------------------------

def config_to_dict(cfg: Config) -> dict[str, Any]:
    """A plain dict (YAML-friendly: tuples become lists)."""
    def plain(v):
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v
    return plain(dataclasses.asdict(cfg))


def config_from_dict(d: dict[str, Any]) -> Config:
    """Build a Config from nested dicts; unknown keys and wrong types raise ConfigError."""
    if not isinstance(d, dict):
        raise ConfigError(f"a config must be a mapping of sections, got {type(d).__name__}")
    return _build(Config, d, "")


def _build(cls, values: dict[str, Any], prefix: str):
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = [k for k in values if k not in fields]
    if unknown:
        key = unknown[0]
        close = difflib.get_close_matches(key, list(fields), n=1)
        hint = f"; did you mean '{prefix}{close[0]}'?" if close else f"; expected one of {sorted(fields)}"
        raise ConfigError(f"unknown config key '{prefix}{key}'{hint}")
    kwargs = {}
    for name, value in values.items():
        tp = hints[name]
        if dataclasses.is_dataclass(tp):
            if not isinstance(value, dict):
                raise ConfigError(f"config section '{prefix}{name}' must be a mapping, got {value!r}")
            kwargs[name] = _build(tp, value, f"{prefix}{name}.")
        else:
            kwargs[name] = _coerce(value, tp, f"{prefix}{name}")
    return cls(**kwargs)


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp`` (ints are accepted for floats)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(tp)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(value, option, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if len(errors) == 1 else f"'{key}' has an invalid value {value!r}")
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise ConfigError(f"'{key}' must be a list of {len(args)} values, got {value!r}")
        return tuple(_coerce(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"'{key}' must be a mapping, got {value!r}")
        return dict(value)
    if tp is float:
        if isinstance(value, str):
            value = _yaml11_float(value)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"'{key}' must be a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"'{key}' must be an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"'{key}' must be true or false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"'{key}' must be a string, got {value!r}")
        return value
    return value


def _yaml11_float(text: str) -> float | str:
    """YAML 1.1 (PyYAML) reads ``1e-6`` as a string (it wants ``1.0e-6``); accept it."""
    try:
        return float(text)
    except ValueError:
        return text


# ---- YAML and overrides ------------------------------------------------------------------

def apply_overrides(d: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``section.key=value`` strings to a nested dict (values parsed as YAML, so
    ``trainer.steps=10`` is an int and ``data.path=null`` is None). Returns a new dict."""
    out = _deep_copy(d)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like section.key=value")
        key, raw = item.split("=", 1)
        parts = key.strip().split(".")
        if not all(parts):
            raise ConfigError(f"override {item!r} has an empty key part")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as e:
            raise ConfigError(f"override {item!r}: the value is not valid YAML ({e})") from e
        node = out
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override {item!r}: '{part}' is not a section")
            node = child
        node[parts[-1]] = value
    return out


def _deep_copy(d):
    return {k: _deep_copy(v) if isinstance(v, dict) else v for k, v in d.items()}


def load_config(path: str | os.PathLike | None = None, overrides: list[str] | None = None, *,
                validate: bool = True, check_files: bool = True) -> Config:
    """Read a YAML config (or start from the defaults when ``path`` is None), apply dotted
    overrides, build the dataclasses and validate.

    Raises:
        FileNotFoundError: ``path`` does not exist. ConfigError: bad YAML, an unknown key, a
            wrong type, or a value that cannot work (see :meth:`Config.validate`).
    """
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"config file not found: {path}")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(yaml_error_line(path, e)) from e
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of sections")
    cfg = config_from_dict(apply_overrides(data, overrides or []))
    if validate:
        cfg.validate(check_files=check_files)
    return cfg


def yaml_error_line(path: str | os.PathLike, error: yaml.YAMLError) -> str:
    """One line naming the file, line and column of a YAML syntax error, and the problem."""
    mark = getattr(error, "problem_mark", None) or getattr(error, "context_mark", None)
    where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
    problem = getattr(error, "problem", None) or str(error).splitlines()[0]
    context = getattr(error, "context", None)
    return f"{where}: not valid YAML: {problem}" + (f" ({context})" if context else "")


# ---- validation --------------------------------------------------------------------------

def config_choices() -> dict[str, tuple[str, ...]]:
    """``"section.key"`` -> its allowed values, for every field that declares them
    (``field(..., metadata={"choices": ...})``: a tuple, or a registry dict whose keys are the
    names, read when this is called), in the order of the sections and fields."""
    out = {}
    for section, cls in typing.get_type_hints(Config).items():
        if dataclasses.is_dataclass(cls):
            for f in dataclasses.fields(cls):
                if "choices" in f.metadata:
                    out[f"{section}.{f.name}"] = tuple(f.metadata["choices"])
    return out


def _validate(cfg: Config, check_files: bool) -> None:
    for key, choices in config_choices().items():
        section, name = key.split(".")
        value = getattr(getattr(cfg, section), name)
        if value not in choices:
            raise ConfigError(f"'{key}' must be one of {list(choices)}, got {value!r}")
    positive = {"rollout.prompts_per_step": cfg.rollout.prompts_per_step,
                "rollout.page_size": cfg.rollout.page_size, "rollout.max_num_seqs": cfg.rollout.max_num_seqs,
                "rollout.max_prefill_tokens": cfg.rollout.max_prefill_tokens,
                "algo.ppo_epochs": cfg.algo.ppo_epochs, "algo.mini_batches": cfg.algo.mini_batches,
                "algo.micro_batch_tokens": cfg.algo.micro_batch_tokens, "trainer.steps": cfg.trainer.steps,
                "data.max_prompt_tokens": cfg.data.max_prompt_tokens,
                "trainer.max_consecutive_skips": cfg.trainer.max_consecutive_skips,
                "algo.max_sampling_rounds": cfg.algo.max_sampling_rounds, "eval.n": cfg.eval.n,
                "trainer.log_samples_prompts": cfg.trainer.log_samples_prompts}
    for key, value in positive.items():
        if value < 1:
            raise ConfigError(f"'{key}' must be >= 1, got {value}")
    for key, value in {"trainer.save_every": cfg.trainer.save_every, "trainer.keep_last": cfg.trainer.keep_last,
                       "optim.warmup_steps": cfg.optim.warmup_steps, "rollout.top_k": cfg.rollout.top_k,
                       "reward.overlong_buffer": cfg.reward.overlong_buffer,
                       "trainer.eval_every": cfg.trainer.eval_every,
                       "trainer.log_samples_every": cfg.trainer.log_samples_every}.items():
        if value < 0:
            raise ConfigError(f"'{key}' must be >= 0, got {value}")
    if cfg.rollout.group_size < 2:
        raise ConfigError(f"'rollout.group_size' must be >= 2 (GRPO compares samples of a prompt), "
                          f"got {cfg.rollout.group_size}")
    if cfg.rollout.group_size > cfg.rollout.max_num_seqs:
        raise ConfigError(f"'rollout.group_size' ({cfg.rollout.group_size}) exceeds 'rollout.max_num_seqs' "
                          f"({cfg.rollout.max_num_seqs})")
    if not 0 < cfg.rollout.gpu_memory_fraction < 1:
        raise ConfigError(f"'rollout.gpu_memory_fraction' must be in (0, 1), got {cfg.rollout.gpu_memory_fraction}")
    if cfg.rollout.kv_cache_gb is not None and not cfg.rollout.kv_cache_gb > 0:
        raise ConfigError(f"'rollout.kv_cache_gb' must be > 0 or null, got {cfg.rollout.kv_cache_gb}")
    if cfg.model.param_dtype == "bfloat16" and cfg.model.dtype == "float32":
        raise ConfigError("'model.param_dtype: bfloat16' with 'model.dtype: float32' would compute in a wider dtype "
                          "than the weights are kept in; use param_dtype float32")
    if not cfg.rollout.temperature > 0:
        raise ConfigError(f"'rollout.temperature' must be > 0 for RL sampling, got {cfg.rollout.temperature}")
    if not 0 < cfg.rollout.top_p <= 1:
        raise ConfigError(f"'rollout.top_p' must be in (0, 1], got {cfg.rollout.top_p}")
    if cfg.rollout.prompts_per_step % cfg.algo.mini_batches:
        raise ConfigError(f"'rollout.prompts_per_step' ({cfg.rollout.prompts_per_step}) must be divisible by "
                          f"'algo.mini_batches' ({cfg.algo.mini_batches})")
    if not (cfg.algo.clip_low > 0 and cfg.algo.clip_high > 0 and cfg.algo.clip_low < 1):
        raise ConfigError(f"'algo.clip_low' must be in (0, 1) and 'algo.clip_high' > 0, got "
                          f"{cfg.algo.clip_low} / {cfg.algo.clip_high}")
    if cfg.algo.clip_c is not None and not cfg.algo.clip_c > 1:
        raise ConfigError(f"'algo.clip_c' (dual clip) must be > 1 or null, got {cfg.algo.clip_c}")
    if cfg.algo.kl_coef < 0:
        raise ConfigError(f"'algo.kl_coef' must be >= 0, got {cfg.algo.kl_coef}")
    if cfg.algo.old_logprobs == "engine" and (cfg.algo.ppo_epochs > 1 or cfg.algo.mini_batches > 1):
        raise ConfigError("'algo.old_logprobs: engine' is only valid exactly on-policy "
                          "(algo.ppo_epochs = algo.mini_batches = 1); use 'auto' or 'recompute'")
    if not cfg.optim.lr > 0 or cfg.optim.grad_clip < 0:
        raise ConfigError(f"'optim.lr' must be > 0 and 'optim.grad_clip' >= 0, got {cfg.optim.lr} / "
                          f"{cfg.optim.grad_clip}")
    if cfg.trainer.resume not in ("auto", "never") and check_files and not Path(cfg.trainer.resume).is_dir():
        raise ConfigError(f"'trainer.resume' must be 'auto', 'never' or a checkpoint directory; "
                          f"{cfg.trainer.resume!r} is not a directory")
    try:
        cfg.length_schedule()
    except ValueError as e:
        raise ConfigError(f"'schedule': {e}") from e
    _validate_length_control(cfg)
    _validate_eval(cfg)
    try:
        check_chat_template_kwargs(cfg.data.chat_template_kwargs, "'data.chat_template_kwargs'")
    except ValueError as e:
        raise ConfigError(str(e)) from e
    _validate_wandb(cfg)
    from siri.models.loading import local_model_config

    model_config = local_model_config(cfg.model.path, trust_remote_code=cfg.model.trust_remote_code)
    if model_config is not None:
        check_positions(cfg, model_config)
    if check_files:
        _check_data_files(cfg)
    from siri.rewards.terms import RewardTerms
    try:
        RewardTerms.from_config(cfg.reward)      # loads every reward function and checks its inputs
    except ValueError as e:
        raise ConfigError(str(e)) from e


def _validate_length_control(cfg: Config) -> None:
    r = cfg.reward
    if r.workers is not None and r.workers < 0:
        raise ConfigError(f"'reward.workers' must be >= 0 or null, got {r.workers}")
    if r.overlong_buffer:
        shortest = cfg.length_schedule().shortest_cap(cfg.trainer.steps)
        if r.overlong_buffer >= shortest:
            raise ConfigError(f"'reward.overlong_buffer' ({r.overlong_buffer}) must be smaller than the schedule's "
                              f"shortest cap ({shortest}), or every response would be penalised")
    if not r.overlong_penalty >= 0:
        raise ConfigError(f"'reward.overlong_penalty' must be >= 0, got {r.overlong_penalty}")
    if r.length_reward_weight is not None and not r.length_reward_weight >= 0:
        raise ConfigError(f"'reward.length_reward_weight' must be >= 0 or null, got {r.length_reward_weight}")
    if LENGTH_REWARDS[r.length_reward].needs_target and (r.length_target is None or r.length_target < 1):
        raise ConfigError(f"'reward.length_reward: {r.length_reward}' needs 'reward.length_target' >= 1 (tokens), got "
                          f"{r.length_target}")


def _validate_wandb(cfg: Config) -> None:
    """The W&B names: a project, and an entity and run name or null (W&B rejects empty ones
    only once the run starts)."""
    t = cfg.trainer
    if not t.wandb_project.strip():
        raise ConfigError(f"'trainer.wandb_project' must be a non-empty name, got {t.wandb_project!r}")
    for key, value in (("wandb_entity", t.wandb_entity), ("wandb_name", t.wandb_name)):
        if value is not None and not value.strip():
            raise ConfigError(f"'trainer.{key}' must be a non-empty name or null, got {value!r}")


def _validate_eval(cfg: Config) -> None:
    e, t = cfg.eval, cfg.trainer
    if t.eval_every and e.data is None:
        raise ConfigError(f"'trainer.eval_every' is {t.eval_every} but 'eval.data' is null; name a held-out file")
    if e.limit is not None and e.limit < 1:
        raise ConfigError(f"'eval.limit' must be >= 1 or null, got {e.limit}")
    if e.max_tokens is not None and e.max_tokens < 1:
        raise ConfigError(f"'eval.max_tokens' must be >= 1 or null, got {e.max_tokens}")
    if not e.temperature > 0 or not 0 < e.top_p <= 1:
        raise ConfigError(f"'eval.temperature' must be > 0 and 'eval.top_p' in (0, 1], got {e.temperature} / "
                          f"{e.top_p}")
    if e.n > cfg.rollout.max_num_seqs:
        raise ConfigError(f"'eval.n' ({e.n}) exceeds 'rollout.max_num_seqs' ({cfg.rollout.max_num_seqs})")


def check_positions(cfg: Config, model_config) -> None:
    """ConfigError unless the schedule's largest cap plus ``data.max_prompt_tokens`` fits the
    model's ``max_position_embeddings`` (``model_config``: a transformers config). Validation
    runs it when the model is on this machine; the trainer again once the model is loaded."""
    longest = cfg.length_schedule().longest_cap(cfg.trainer.steps)
    limit = getattr(model_config, "max_position_embeddings", None)
    if limit is not None and longest + cfg.data.max_prompt_tokens > limit:
        raise ConfigError(
            f"the schedule's largest cap ({longest}) plus 'data.max_prompt_tokens' "
            f"({cfg.data.max_prompt_tokens}) exceeds the model's max_position_embeddings ({limit})")


def _check_data_files(cfg: Config) -> None:
    from siri.data import NAMED_DATASETS, looks_like_local_path

    for section, key in (("data", "train"), ("data", "path"), ("eval", "data"), ("eval", "path")):
        value = getattr(getattr(cfg, section), key)
        named = key in ("train", "data")
        # a name that is not a local path is a Hub dataset id, checked when it is loaded
        if value is None or (named and (value in NAMED_DATASETS or not looks_like_local_path(value))):
            continue
        if not Path(value).exists():
            raise ConfigError(f"'{section}.{key}': no such file or directory: {value}"
                              + ("" if not named else f" (nor a named dataset: {sorted(NAMED_DATASETS)})"))
