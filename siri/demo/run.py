"""``siri demo``: SIRI against other length-control methods in miniature, through the real
pipeline, on a CPU in minutes.

Stages:
1. data: the list-counting task in three difficulty tiers (``siri.demo.task``), train and
   held-out eval splits in ``DIR/data/{train,eval}.jsonl`` (``prompt``, ``answer``, ``tier``,
   ``input`` = the formatted model input), tiers in turn.
2. base: a tiny Qwen2 + byte-level BPE tokenizer, SFT on verbose traces (cached in ``DIR/base``).
3. caps and gates (``siri.demo.caps``, ``siri.demo.gates``): the base model is sampled on train
   problems; L_max is 1.15 x its hard-tier p99 length, L_min 2 tokens above the hard tier's
   concise median. Then the base's gates, printed before any RL: L_max cuts at most 2% of its
   answers in every tier, the number of harmless confirmations does not change its accuracy
   (within 3 points), and after a hard slip a correction is necessary (>= 80% right with one,
   <= 20% without). A failed gate stops the demo with the reason.
4. the arms (``siri.demo.arms``) with ``siri/demo/demo.yaml``, the same steps, batch and seeds:
   by default SIRI, fixed L_max and compress-only; ``--study`` adds ThinkPrune's staged cap and
   Kimi's length reward and runs every arm for 5 seeds. Every arm saves a checkpoint at each
   of SIRI's peak and trough steps (``step_N``: after N steps), so every arm's trajectory is
   measured at the same steps. Runs go side by side in single-threaded processes
   (``siri.demo.parallel``).
5. one eval protocol for everything: the base and every arm's checkpoints at SIRI's peak and
   trough steps, per seed, on the whole held-out set: pass@1 over k samples at temperature
   1.0 (RL's), max tokens 3 x L_max, per tier, with the mechanism's rates
   (``siri.demo.mechanism``). The compared checkpoints are points of these
   trajectories (SIRI: last trough = SIRI-low, last peak = SIRI-high; the others: the final
   step, which is SIRI's last peak).
6. ``DIR/summary.json`` (the gates; per seed, mean and spread; every arm's trajectory with the
   mechanism's rates; the frontier area per cycle; the pre-registered predictions,
   ``siri.demo.predictions``; the verdict; what the number of seeds supports), tables, the
   predictions and the verdict on the console, plots in ``DIR/plots``.

The data, the base model and the caps depend on ``--seed``; the RL runs and the evaluation
draws of seed index i use seed + i.
"""
from __future__ import annotations

import json
import logging
import random
import shutil
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch

from siri.atomic_io import write_text_atomic
from siri.train.checkpoint import list_checkpoints, read_info
from siri.config import config_to_dict, load_config
from siri.data import PromptFormatter
from siri.demo.arms import ARMS, DEFAULT_ARMS, STUDY_ARMS, STUDY_SEEDS, checkpoints_of
from siri.demo.base_model import BaseModelSettings, build_base_model, fingerprint, load_cached
from siri.demo.caps import (L_MAX_FACTOR, L_MIN_MARGIN, choose_caps, concise_length, concise_lengths, length_report,
                            sample_base)
from siri.demo.gates import BaseModelGateError, check_base, gate_report
from siri.demo.parallel import default_jobs, run_jobs
from siri.progress import quiet_transformers
from siri.demo.sft import SftSettings
from siri.demo.task import INSTRUCTION, TIERS, Problem, make_problems
from siri.eval import EvalExample, EvalSettings

DEFAULT_CONFIG = Path(__file__).with_name("demo.yaml")
SMOKE_CONFIG = Path(__file__).with_name("smoke.yaml")


@dataclass
class DemoSettings:
    """What the demo does besides the RL config. ``cycles`` periods of the config's schedule
    are trained (plus one step, so SIRI ends at a peak). The eval settings (``eval_problems``,
    ``eval_samples``, ``eval_temperature``, ``eval_max_tokens_factor``) are the one protocol of
    every evaluation: the compared checkpoints and every point of every trajectory."""

    train_problems: int = 3000
    eval_problems: int = 192
    base: BaseModelSettings = field(default_factory=BaseModelSettings)
    length_probe_prompts: int = 288
    """Train problems the base model is sampled on to set L_max (``siri.demo.caps``)."""
    length_probe_samples: int = 4
    probe_max_tokens: int = 512
    """The length probe's max tokens: far above any trace the base was fine-tuned on."""
    gate_prompts: int = 384
    """The next train problems after the length probe: the base model's gates (``siri.demo.gates``)."""
    gate_samples: int = 8
    enforce_gates: bool = True
    """Refuse to run RL on a base model that fails a gate (the smoke run only reports them)."""
    cycles: int = 3
    eval_samples: int = 4
    eval_temperature: float = 1.0
    """The temperature RL samples at and the gates are measured at: at 0.6 the base model answers every
    tier right (its slips are all corrected), so no arm could show a gain."""
    eval_max_tokens_factor: int = 3
    tiers: dict[str, tuple[int, int]] = field(default_factory=lambda: dict(TIERS))
    """Difficulty tiers, name -> (fewest, most) items; the caps need "medium" and "hard"."""
    arms: tuple[str, ...] = DEFAULT_ARMS
    seeds: int = 1
    jobs: int | None = None
    """Processes side by side; None: one per core (at most one per run)."""

    @classmethod
    def smoke(cls) -> "DemoSettings":
        """Every stage at the smallest size that still trains (with ``siri/demo/smoke.yaml``): short
        lists, so a base fine-tuned for seconds answers some problems and RL has rewards. For tests."""
        return cls(train_problems=300, eval_problems=12, tiers={"easy": (2, 3), "medium": (4, 5), "hard": (7, 8)},
                   base=BaseModelSettings(sft=SftSettings(steps=100, batch_size=16)),
                   length_probe_prompts=6, length_probe_samples=2, probe_max_tokens=128, gate_prompts=6,
                   gate_samples=2, enforce_gates=False, eval_samples=2)

    @classmethod
    def study(cls) -> "DemoSettings":
        """Every arm over ``STUDY_SEEDS`` seeds (``siri demo --study``)."""
        return cls(arms=STUDY_ARMS, seeds=STUDY_SEEDS)

    def __post_init__(self):
        unknown = [a for a in self.arms if a not in ARMS]
        if unknown or "siri" not in self.arms:
            raise ValueError(f"arms must include 'siri' and name only {list(ARMS)}, got {list(self.arms)}")
        if self.seeds < 1:
            raise ValueError(f"seeds must be >= 1, got {self.seeds}")


def format_prompt(tokenizer, problem: Problem) -> str:
    return PromptFormatter(tokenizer, instruction=INSTRUCTION).text(problem.prompt)


def run_demo(out_dir: str | Path, *, seed: int = 0, config: str | Path | None = None,
             settings: DemoSettings | None = None, overrides: list[str] | None = None,
             progress: bool = True) -> dict:
    """Run every stage (see the module docstring) and return the summary dict."""
    from siri.demo.report import plot_demo, print_report, summarize
    from siri.demo.trajectory import trajectory_summary
    from siri.progress import make_console

    console = make_console()
    quiet_transformers()
    settings = settings or DemoSettings()
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    torch.manual_seed(seed)
    seeds = [seed + i for i in range(settings.seeds)]

    def stage(i: int, text: str) -> None:
        console.rule(f"[bold]demo {i}/6[/bold] {text} [dim]({time.perf_counter() - started:.0f} s)")

    stage(1, f"data: list counting in tiers {', '.join(f'{t} {a}-{b}' for t, (a, b) in settings.tiers.items())} items")
    train, held_out = _problems(settings, seed)

    stage(2, "base model: tiny Qwen2 + BPE tokenizer, SFT on verbose traces")
    key = fingerprint(settings.base, seed, train)
    cached = load_cached(out / "base", key)
    if cached is not None:
        console.print(f"reusing the cached base model in {out / 'base'}")
        model, tokenizer = cached
    else:
        model, tokenizer = build_base_model(out / "base", train, format_prompt, settings.base, seed=seed, key=key,
                                            progress=progress)
    _write_split(out / "data" / "train.jsonl", train, tokenizer)
    eval_file = _write_split(out / "data" / "eval.jsonl", held_out, tokenizer)

    stage(3, "caps and gates: the base model's sampled lengths set the caps, then its gates (before any RL)")
    concise = concise_lengths(tokenizer, train)
    probe = train[:settings.length_probe_prompts]
    probe_samples = sample_base(model, tokenizer, probe, [_prompt_ids(tokenizer, p) for p in probe],
                                samples=settings.length_probe_samples, max_tokens=settings.probe_max_tokens, seed=seed)
    l_max, l_min = choose_caps([s.tokens for s in probe_samples if s.problem.tier == "hard"], concise.get("hard", []))
    base_report = length_report(probe_samples, l_min)
    console.print(f"L_max = {l_max} ({L_MAX_FACTOR} x the base's sampled hard p99, "
                  f"{base_report['hard']['all']['p99']}), L_min = {l_min} (the hard concise median + {L_MIN_MARGIN}); "
                  "concise trace tokens per tier: " + ", ".join(f"{t} {min(v)}-{max(v)}" for t, v in concise.items()))
    gate_problems = train[settings.length_probe_prompts:settings.length_probe_prompts + settings.gate_prompts]
    gates = check_base(model, tokenizer, gate_problems, [_prompt_ids(tokenizer, p) for p in gate_problems],
                       l_max=l_max, samples=settings.gate_samples, seed=seed)
    for gate in gates:
        console.print(f"gate {gate.line()}", markup=False)
    failed = [g.name for g in gates if not g.passed]
    if failed and settings.enforce_gates:
        raise BaseModelGateError(f"the base model fails the gate(s) {', '.join(failed)} (printed above), so this toy "
                                 f"cannot test SIRI's mechanism; refusing to run RL. Grow the base "
                                 f"(DemoSettings.base) or retune the task, not the RL")
    jobs = settings.jobs or default_jobs(len(settings.arms) * len(seeds))
    worker_progress = progress and jobs == 1

    job_seconds: dict[str, dict[str, float]] = {"run": {}, "eval": {}}
    job_counts = {"run": jobs}

    def done(what: str):
        def report(name: str, seconds: float) -> None:
            job_seconds[what][name] = round(seconds, 1)
            console.print(f"{what} {name} done in {seconds:.0f} s ({time.perf_counter() - started:.0f} s)")
        return report

    stage(4, f"RL: {len(settings.arms)} arms x {len(seeds)} seed(s), {jobs} at a time")
    schedule, num_steps = siri_schedule(config or DEFAULT_CONFIG, overrides or [], l_max, l_min, settings.cycles)
    extrema = sorted(set(schedule.peaks(num_steps)) | set(schedule.troughs(num_steps)))
    tasks = {f"{arm}/seed{s}": (arm, str(out), str(config or DEFAULT_CONFIG), list(overrides or []), l_max, l_min,
                                settings.cycles, s, extrema, worker_progress)
             for s in seeds for arm in settings.arms}
    runs = run_jobs(train_arm, tasks, jobs, on_done=done("run"))

    steps = [t + 1 for t in extrema]
    stage(5, f"eval of the base and every arm at SIRI's peaks and troughs (after {', '.join(map(str, steps))} steps)")
    eval_settings = EvalSettings(n=settings.eval_samples, temperature=settings.eval_temperature,
                                 max_tokens=settings.eval_max_tokens_factor * l_max, seed=seed)
    examples = [EvalExample(i, p.answer, _prompt_ids(tokenizer, p)) for i, p in enumerate(held_out)]
    tiers = [p.tier for p in held_out]
    evaluated = {s: {"base": str(out / "base"),
                     **{f"{arm}/step_{n}": str(checkpoint_at(Path(runs[f"{arm}/seed{s}"]), n))
                        for n in steps for arm in settings.arms}} for s in seeds}
    lengths = [len(p.items) for p in held_out]
    too_long = long_hard_problems(tokenizer, held_out, l_min)
    eval_tasks = {f"{key}/seed{s}": (path, examples, tiers, lengths, too_long, asdict(replace(eval_settings, seed=s)),
                                     str(out / "eval" / f"seed{s}" / f"{key}.json"), key, worker_progress)
                  for s in seeds for key, path in evaluated[s].items()}
    jobs = settings.jobs or default_jobs(len(eval_tasks))
    results = run_jobs(evaluate_checkpoint, eval_tasks, jobs, on_done=done("eval"))
    job_counts["eval"] = jobs
    checkpoints = {s: {"base": str(out / "base"), **arm_checkpoints(
        {arm: Path(runs[f"{arm}/seed{s}"]) for arm in settings.arms})} for s in seeds}
    named = {f"{name}/seed{s}": results[f"{_evaluated_key(evaluated[s], path)}/seed{s}"]
             for s in seeds for name, path in checkpoints[s].items()}
    trajectory = trajectory_summary({(arm, n, s): results[f"{arm}/step_{n}/seed{s}"]
                                     for s in seeds for n in steps for arm in settings.arms},
                                    schedule, num_steps)

    stage(6, "summary, verdict and plots")
    summary = summarize(named, checkpoints, seeds, runs=runs, settings=settings, eval_file=eval_file,
                        eval_settings=eval_settings, prompt_tiers=dict(enumerate(tiers)), l_max=l_max, l_min=l_min,
                        concise=concise, base_lengths=base_report, trajectory=trajectory,
                        gates=gate_report(gates))
    write_text_atomic(out / "summary.json", json.dumps(summary, indent=1))
    # wall times apart from the summary, so the same seed on the same machine writes the same summary
    write_text_atomic(out / "timing.json", json.dumps({"seconds": round(time.perf_counter() - started, 1),
                                                       "run_seconds": job_seconds["run"],
                                                       "eval_seconds": job_seconds["eval"],
                                                       "jobs": job_counts, "machine": machine()}, indent=1))
    plots = plot_demo(out, summary)
    print_report(console, summary)
    console.print(f"demo done in {time.perf_counter() - started:.0f} s. Summary: {out / 'summary.json'}; plots: "
                  f"{', '.join(str(p) for p in plots)}; runs: {out / 'runs'}; data: {out / 'data'}")
    return summary


# ---- stages --------------------------------------------------------------------------------

def _problems(settings: DemoSettings, seed: int) -> tuple[list[Problem], list[Problem]]:
    """Train problems, and held-out eval problems whose prompts never occur in train."""
    rng = random.Random(seed)
    train = make_problems(settings.train_problems, rng, tiers=settings.tiers)
    return train, make_problems(settings.eval_problems, rng, exclude={p.prompt for p in train}, tiers=settings.tiers)


def _prompt_ids(tokenizer, problem: Problem) -> list[int]:
    return tokenizer(format_prompt(tokenizer, problem), add_special_tokens=False)["input_ids"]


def long_hard_problems(tokenizer, problems: list[Problem], l_min: int) -> list[bool]:
    """Per problem, whether it is a hard one whose concise trace does not fit under ``l_min``:
    the "longest lists", whose necessary reasoning no trough allows."""
    return [p.tier == "hard" and concise_length(tokenizer, p) > l_min for p in problems]


def _write_split(path: Path, problems: list[Problem], tokenizer) -> Path:
    rows = [{"prompt": p.prompt, "answer": p.answer, "tier": p.tier, "input": format_prompt(tokenizer, p)}
            for p in problems]
    write_text_atomic(path, "".join(json.dumps(r) + "\n" for r in rows))
    return path


def siri_schedule(config: str | Path, overrides: list[str], l_max: int, l_min: int, cycles: int):
    """SIRI's length schedule in this demo and its number of steps (``cycles`` periods + 1, so
    it ends at a peak): whose peaks and troughs are the steps every arm is evaluated at."""
    period = int(load_config(config, overrides, validate=False).schedule.get("period") or 1)
    cfg = load_config(config, [*overrides, *ARMS["siri"].overrides(l_max, l_min, period)], validate=False)
    return cfg.length_schedule(), cycles * period + 1


def checkpoint_at(run_dir: Path, step: int) -> Path:
    """The run's checkpoint after ``step`` steps (``checkpoints/step_<step>``); RuntimeError when
    the run has none."""
    found = dict(list_checkpoints(run_dir))
    if step not in found:
        raise RuntimeError(f"{run_dir} has no checkpoint after {step} steps (has {sorted(found)})")
    return found[step]


def train_arm(arm: str, out: str, config: str, overrides: list[str], l_max: int, l_min: int, cycles: int,
              seed: int, save_at: list[int], progress: bool) -> str:
    """Train one arm with the real trainer (a job of ``run_jobs``); returns its run directory.
    Besides the checkpoints its config writes, it saves one after each step in ``save_at``
    (0-based: SIRI's peaks and troughs; ``checkpoints/step_<t+1>``, kind "trajectory"), so
    every arm can be evaluated at the same steps. A finished run with the same resolved config
    and every one of those checkpoints is reused; otherwise it is started over (a missing
    checkpoint before the newest one cannot be recovered by resuming)."""
    from siri.train import checkpoint
    from siri.train.trainer import Trainer

    out_path = Path(out)
    run_dir = out_path / "runs" / f"seed{seed}" / arm
    period = int(load_config(config, overrides, validate=False).schedule.get("period") or 1)
    cfg = load_config(config, [*overrides, f"model.path={out_path / 'base'}",
                               f"data.train={out_path / 'data' / 'train.jsonl'}", f"trainer.run_dir={run_dir}",
                               f"trainer.seed={seed}", f"trainer.steps={cycles * period + 1}",
                               f"trainer.progress={str(progress).lower()}",
                               *ARMS[arm].overrides(l_max, l_min, period)])
    saved = run_dir / "config.yaml"
    if saved.exists():
        import yaml

        have = [step for step, _ in list_checkpoints(run_dir)]
        lost = [t for t in save_at if have and t + 1 < max(have) and t + 1 not in have]
        if yaml.safe_load(saved.read_text()) != config_to_dict(cfg) or lost:
            shutil.rmtree(run_dir)
    trainer = Trainer(cfg)
    schedule, steps = cfg.length_schedule(), cfg.trainer.steps
    own = set(schedule.peaks(steps)), set(schedule.troughs(steps))
    wanted = set(save_at)

    def save_trajectory_checkpoint(metrics: dict) -> None:
        # called after step t's metrics are logged, before the trainer saves what its config asks for
        t = metrics["step"]
        if t in wanted and not checkpoint.checkpoint_kinds(t, cfg.trainer, *own):
            trainer.save(["trajectory"])

    trainer.callbacks.append(save_trajectory_checkpoint)
    # the demo reports each run's progress itself; the trainer's per-step lines (written when
    # stdout is not a terminal) from several arms at once would interleave without their names
    step_lines = logging.getLogger("siri")
    level = step_lines.level
    step_lines.setLevel(logging.WARNING)
    try:
        trainer.fit()
    finally:
        step_lines.setLevel(level)
    return str(run_dir)


def arm_checkpoints(runs: dict[str, Path]) -> dict[str, str]:
    """Checkpoint name -> path: each arm's checkpoints of ``checkpoints_of`` (the last saved one
    of that kind)."""
    found = {}
    for arm, run_dir in runs.items():
        for name, kind in checkpoints_of(arm).items():
            paths = [path for _, path in list_checkpoints(run_dir) if kind in read_info(path)["kinds"]]
            if not paths:
                raise RuntimeError(f"{run_dir} has no '{kind}' checkpoint")
            found[name] = str(paths[-1])
    return found


def _evaluated_key(evaluated: dict[str, str], path: str) -> str:
    """The eval task (``"base"`` or ``"{arm}/step_{N}"``) that evaluated checkpoint ``path``."""
    found = [key for key, where in evaluated.items() if Path(where) == Path(path)]
    if not found:
        raise RuntimeError(f"{path} is a compared checkpoint but not one of SIRI's peak or trough steps")
    return found[0]


def machine() -> dict:
    """The machine the wall times were measured on: cores available and the CPU's model name."""
    import os
    import platform

    cpu = platform.machine()
    try:
        cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name")), cpu)
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return {"cores": cores, "cpu": cpu, "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def evaluate_checkpoint(path: str, examples: list[EvalExample], tiers: list[str], lengths: list[int],
                        long_hard: list[bool], settings: dict, report: str, label: str, progress: bool) -> dict:
    """siri's eval of one checkpoint (a job of ``run_jobs``): the result of
    ``evaluate_examples`` plus ``tiers`` (per tier: accuracy, mean tokens, problem count and
    the mechanism's rates, ``siri.demo.mechanism.mechanism_rates``), ``mechanism`` (those rates
    over all tiers) and ``long_hard`` (accuracy and tokens on the problems flagged in
    ``long_hard``). ``tiers``, ``lengths`` (list items) and ``long_hard`` are per example."""
    from siri.demo.mechanism import mechanism_rates, tier_mechanism

    import transformers

    from siri.engine import LLMEngine
    from siri.eval import evaluate_examples, write_eval_report

    eval_settings = EvalSettings(**settings)
    model = transformers.AutoModelForCausalLM.from_pretrained(path, attn_implementation="sdpa").eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(path)
    engine = LLMEngine(model, page_size=16, max_num_seqs=256, kv_cache_bytes=256 << 20)
    result = evaluate_examples(engine, tokenizer, examples, eval_settings, progress=progress, name=label,
                               keep_samples=True)
    samples = result.pop("samples")
    by_tier: dict[str, list[dict]] = {}
    for row, tier in zip(result["per_prompt"], tiers):
        by_tier.setdefault(tier, []).append(row)
    position = {e.index: i for i, e in enumerate(examples)}
    count_tokens = lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"])  # noqa: E731
    rates = tier_mechanism(samples, {e.index: n for e, n in zip(examples, lengths)},
                           {e.index: t for e, t in zip(examples, tiers)}, count_tokens)
    result["tiers"] = {tier: {"accuracy": sum(r["accuracy"] for r in rows) / len(rows),
                              "mean_tokens": sum(r["mean_tokens"] for r in rows) / len(rows),
                              "num_prompts": len(rows), **rates[tier], "per_prompt": rows}
                       for tier, rows in by_tier.items()}
    result["mechanism"] = mechanism_rates([(s["response"], s["tokens"], lengths[position[s["index"]]])
                                           for s in samples], count_tokens)
    long_rows = [row for row, flag in zip(result["per_prompt"], long_hard) if flag]
    result["long_hard"] = {"accuracy": sum(r["accuracy"] for r in long_rows) / len(long_rows) if long_rows else None,
                           "mean_tokens": (sum(r["mean_tokens"] for r in long_rows) / len(long_rows)
                                           if long_rows else None), "num_prompts": len(long_rows)}
    prompt = {"instruction": INSTRUCTION, "use_chat_template": True, "source": "siri demo"}
    write_eval_report(Path(report), model=path, label=label, step=None, settings=eval_settings,
                      results={"eval": result}, prompt=prompt)
    return result
