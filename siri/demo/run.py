"""``siri demo``: SIRI's effect in miniature, through the real pipeline, on a CPU in minutes.

Stages:
1. data: the list-counting task (``siri.demo.task``), train and held-out eval splits written to
   ``DIR/data/{train,eval}.jsonl`` (``prompt``, ``answer``, ``input`` = the formatted model input).
2. base: a tiny Qwen2 + byte-level BPE tokenizer, SFT on verbose traces (cached in ``DIR/base``).
3. caps: sample the base model; L_max = the 90th percentile of its response length,
   L_min = 0.55 * L_max.
4. three RL arms with ``siri/demo/demo.yaml``: SIRI (cosine L_max -> L_min -> L_max, 3 cycles,
   ending at a peak), baseline (fixed L_max), compress-only (fixed L_min).
5. eval of base, SIRI-low (last trough), SIRI-high (last peak), baseline and compress-only
   finals: pass@1 over k samples at temperature 0.6, max tokens 3 * L_max.
6. ``DIR/summary.json``, a table, plots in ``DIR/plots``.
"""
from __future__ import annotations

import json
import math
import random
import shutil
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from siri.atomic_io import write_text_atomic
from siri.checkpoint import list_checkpoints, read_info
from siri.config import config_to_dict, load_config
from siri.data import PromptFormatter
from siri.demo.sft import SftSettings
from siri.demo.base_model import BaseModelSettings, build_base_model, fingerprint, load_cached
from siri.demo.task import INSTRUCTION, Problem, make_problems
from siri.engine import LLMEngine, SamplingParams
from siri.eval import EvalExample, EvalSettings, evaluate_examples, write_eval_report
from siri.trainer import Trainer

DEFAULT_CONFIG = Path(__file__).with_name("demo.yaml")
SMOKE_CONFIG = Path(__file__).with_name("smoke.yaml")
ARMS = ("siri", "baseline", "compress_only")
CHECKPOINTS = ("base", "siri_low", "siri_high", "baseline", "compress_only")


@dataclass
class DemoSettings:
    """What the demo does besides the RL config. ``cycles`` periods of the config's schedule
    are trained (plus one step, so SIRI ends at a peak)."""

    train_problems: int = 2000
    eval_problems: int = 128
    base: BaseModelSettings = field(default_factory=BaseModelSettings)
    length_probe_prompts: int = 64
    length_probe_samples: int = 4
    l_max_quantile: float = 0.9
    l_min_ratio: float = 0.55
    cycles: int = 3
    eval_samples: int = 4
    eval_temperature: float = 0.6
    eval_max_tokens_factor: int = 3


    @classmethod
    def smoke(cls) -> "DemoSettings":
        """Every stage at the smallest size (with ``siri/demo/smoke.yaml``): for tests."""
        return cls(train_problems=200, eval_problems=12, base=BaseModelSettings(sft=SftSettings(steps=20)),
                   length_probe_prompts=8, length_probe_samples=2, eval_samples=2)


def format_prompt(tokenizer, problem: Problem) -> str:
    return PromptFormatter(tokenizer, instruction=INSTRUCTION).text(problem.prompt)


def run_demo(out_dir: str | Path, *, seed: int = 0, config: str | Path | None = None,
             settings: DemoSettings | None = None, overrides: list[str] | None = None,
             progress: bool = True) -> dict:
    """Run every stage (see the module docstring) and return the summary dict."""
    from siri.progress import make_console

    console = make_console()
    settings = settings or DemoSettings()
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    torch.manual_seed(seed)

    def stage(i: int, text: str) -> None:
        console.rule(f"[bold]demo {i}/6[/bold] {text} [dim]({time.perf_counter() - started:.0f} s)")

    stage(1, "data: list counting with verbose traces")
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

    stage(3, "caps: the base model's sampled response lengths")
    l_max, l_min, lengths = _measure_caps(model, tokenizer, train, settings, seed)
    console.print(f"base response length: median {statistics.median(lengths):.0f}, max {max(lengths)}; "
                  f"L_max = p{100 * settings.l_max_quantile:.0f} = {l_max}, L_min = {l_min}")

    runs = {}
    for arm in ARMS:
        stage(4, f"RL arm {ARMS.index(arm) + 1}/3: {arm}")
        runs[arm] = _train_arm(arm, out, config or DEFAULT_CONFIG, overrides or [], l_max, l_min, settings, seed,
                               progress)

    stage(5, "eval of five checkpoints")
    eval_settings = EvalSettings(n=settings.eval_samples, temperature=settings.eval_temperature,
                                 max_tokens=settings.eval_max_tokens_factor * l_max, seed=seed)
    checkpoints = {"base": out / "base", **_arm_checkpoints(runs)}
    examples = [EvalExample(i, p.answer, tokenizer(format_prompt(tokenizer, p), add_special_tokens=False)["input_ids"])
                for i, p in enumerate(held_out)]
    results = {}
    for name, path in checkpoints.items():
        results[name] = _evaluate(path, tokenizer, examples, eval_settings, out / "eval" / f"{name}.json", name,
                                  progress)

    stage(6, "summary and plots")
    summary = _summary(results, checkpoints, eval_file, eval_settings, l_max, l_min, runs, seed)
    write_text_atomic(out / "summary.json", json.dumps(summary, indent=1))
    plots = _plots(out, runs, summary)
    _print_table(console, summary)
    console.print(f"demo done in {time.perf_counter() - started:.0f} s. Summary: {out / 'summary.json'}; plots: "
                  f"{', '.join(str(p) for p in plots)}; runs: {out / 'runs'}; data: {out / 'data'}")
    return summary


# ---- stages --------------------------------------------------------------------------------

def _problems(settings: DemoSettings, seed: int) -> tuple[list[Problem], list[Problem]]:
    """Train problems, and held-out eval problems whose prompts never occur in train."""
    rng = random.Random(seed)
    train = make_problems(settings.train_problems, rng)
    return train, make_problems(settings.eval_problems, rng, exclude={p.prompt for p in train})


def _write_split(path: Path, problems: list[Problem], tokenizer) -> Path:
    rows = [{"prompt": p.prompt, "answer": p.answer, "input": format_prompt(tokenizer, p)} for p in problems]
    write_text_atomic(path, "".join(json.dumps(r) + "\n" for r in rows))
    return path


def _measure_caps(model, tokenizer, problems: list[Problem], settings: DemoSettings, seed: int):
    engine = LLMEngine(model.eval(), page_size=16, max_num_seqs=256, kv_cache_bytes=256 << 20)
    probe = problems[:settings.length_probe_prompts]
    prompts = [tokenizer(format_prompt(tokenizer, p), add_special_tokens=False)["input_ids"] for p in probe]
    params = SamplingParams(n=settings.length_probe_samples, temperature=1.0, max_tokens=settings.base.max_positions // 2,
                            stop_token_ids=[tokenizer.eos_token_id], seed=seed)
    lengths = sorted(len(o.token_ids) for group in engine.generate(prompts, params) for o in group)
    l_max = lengths[min(len(lengths) - 1, math.ceil(settings.l_max_quantile * len(lengths)) - 1)]
    return l_max, max(1, round(settings.l_min_ratio * l_max)), lengths


def _train_arm(arm: str, out: Path, config: Path, overrides: list[str], l_max: int, l_min: int,
               settings: DemoSettings, seed: int, progress: bool) -> Path:
    """Train one arm with the real trainer; a finished run with the same resolved config is
    reused, a run with a different one is started over."""
    run_dir = out / "runs" / arm
    base = load_config(config, overrides, validate=False)
    steps = settings.cycles * int(base.schedule.get("period", 1)) + 1
    schedule = {"siri": ["schedule.kind=cosine", f"schedule.l_max={l_max}", f"schedule.l_min={l_min}"],
                "baseline": ["schedule.kind=constant", f"schedule.l_max={l_max}", "schedule.l_min=null",
                             "schedule.period=null"],
                "compress_only": ["schedule.kind=constant", f"schedule.l_max={l_min}", "schedule.l_min=null",
                                  "schedule.period=null"]}[arm]
    cfg = load_config(config, [*overrides, f"model.path={out / 'base'}", f"data.train={out / 'data' / 'train.jsonl'}",
                               f"trainer.run_dir={run_dir}", f"trainer.seed={seed}", f"trainer.steps={steps}",
                               f"trainer.progress={str(progress).lower()}", *schedule])
    saved = run_dir / "config.yaml"
    if saved.exists():
        import yaml

        if yaml.safe_load(saved.read_text()) != config_to_dict(cfg):
            shutil.rmtree(run_dir)
    Trainer(cfg).fit()
    return run_dir


def _arm_checkpoints(runs: dict[str, Path]) -> dict[str, Path]:
    def last(run_dir: Path, kind: str) -> Path:
        found = [path for _, path in list_checkpoints(run_dir) if kind in read_info(path)["kinds"]]
        if not found:
            raise RuntimeError(f"{run_dir} has no '{kind}' checkpoint")
        return found[-1]

    return {"siri_low": last(runs["siri"], "trough"), "siri_high": last(runs["siri"], "peak"),
            "baseline": last(runs["baseline"], "final"), "compress_only": last(runs["compress_only"], "final")}


def _evaluate(path: Path, tokenizer, examples, settings: EvalSettings, report: Path, label: str,
              progress: bool) -> dict:
    import transformers

    model = transformers.AutoModelForCausalLM.from_pretrained(path, attn_implementation="sdpa").eval()
    engine = LLMEngine(model, page_size=16, max_num_seqs=256, kv_cache_bytes=256 << 20)
    result = evaluate_examples(engine, tokenizer, examples, settings, progress=progress, name=label)
    prompt = {"instruction": INSTRUCTION, "use_chat_template": True, "source": "siri demo"}
    write_eval_report(report, model=str(path), label=label, step=None, settings=settings, results={"eval": result},
                      prompt=prompt)
    return result


def _summary(results, checkpoints, eval_file, settings: EvalSettings, l_max, l_min, runs, seed) -> dict:
    base = results["base"]
    summary = {}
    for name in CHECKPOINTS:
        r = results[name]
        summary[name] = {"accuracy": r["accuracy"], "mean_tokens": r["mean_tokens"],
                         "truncation_rate": r["truncation_rate"], "checkpoint": str(checkpoints[name]),
                         **delta_cr_acc(r, base)}
    summary.update(eval_file=str(eval_file), eval_settings=asdict(settings), l_max=l_max, l_min=l_min, seed=seed,
                   runs={arm: str(path) for arm, path in runs.items()},
                   first_cycle=_first_cycle_lengths(runs))
    return summary


def delta_cr_acc(result: dict, base: dict) -> dict:
    """Change versus the base model: accuracy in points, compression ratio CR = 1 - tokens /
    base tokens, and ``delta_cr_acc`` = relative accuracy change + CR (positive is better on
    both axes; our reading of the paper's combined metric, spelled out so it can be checked)."""
    cr = 1.0 - result["mean_tokens"] / base["mean_tokens"]
    rel_acc = result["accuracy"] / base["accuracy"] - 1.0 if base["accuracy"] else 0.0
    return {"delta_accuracy_points": 100 * (result["accuracy"] - base["accuracy"]), "compression_ratio": cr,
            "delta_cr_acc": rel_acc + cr}


def _first_cycle_lengths(runs: dict[str, Path]) -> dict:
    """Mean training response length per step of the first cycle, SIRI versus baseline."""
    from siri.metrics import read_run_metrics

    siri = read_run_metrics(runs["siri"])
    baseline = read_run_metrics(runs["baseline"])
    period = len(siri) // 3 if len(siri) >= 3 else len(siri)
    return {"siri": [m["response_len_mean"] for m in siri[:period + 1]],
            "baseline": [m["response_len_mean"] for m in baseline[:period + 1]]}


def _plots(out: Path, runs: dict[str, Path], summary: dict) -> list[Path]:
    from siri.plot import plot_comparison, plot_pareto, plot_run

    plots = [plot_comparison({arm: path for arm, path in runs.items()}, out / "plots" / "training_comparison.png"),
             plot_pareto([{"label": name, "series": name, "accuracy": summary[name]["accuracy"],
                           "mean_tokens": summary[name]["mean_tokens"]} for name in CHECKPOINTS],
                         out / "plots" / "pareto.png")]
    for path in runs.values():
        plot_run(path)
    return plots


def _print_table(console, summary: dict) -> None:
    from rich.table import Table

    s = summary["eval_settings"]
    table = Table(title=f"siri demo: held-out eval, pass@1 over {s['n']} samples at T={s['temperature']}, "
                        f"max {s['max_tokens']} tokens (L_max {summary['l_max']}, L_min {summary['l_min']})")
    for column in ("checkpoint", "accuracy", "tokens", "trunc.", "Δacc pts", "CR", "ΔCR_Acc"):
        table.add_column(column, justify="left" if column == "checkpoint" else "right", no_wrap=True)
    for name in CHECKPOINTS:
        r = summary[name]
        table.add_row(name, f"{100 * r['accuracy']:.1f}%", f"{r['mean_tokens']:.1f}", f"{100 * r['truncation_rate']:.1f}%",
                      f"{r['delta_accuracy_points']:+.1f}", f"{r['compression_ratio']:+.2f}", f"{r['delta_cr_acc']:+.2f}")
    console.print(table)

