"""Evaluate a model with siri's engine: pass@1 averaged over ``n`` samples per prompt, mean
response length and truncation rate, per benchmark; JSON reports per checkpoint.

    settings = EvalSettings(n=16, max_tokens=8192)
    results = {"aime24": evaluate_examples(engine, tokenizer, examples, settings, progress=True)}
    write_eval_report(run_dir / "eval" / "step_320.json", model="...", label="trough 1",
                      step=320, settings=settings, results=results)
    print_eval_table(load_eval_reports(run_dir)[-1])
"""
from __future__ import annotations

import json
import os
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from siri.atomic_io import write_text_atomic
from siri.engine import LLMEngine, SamplingParams
from siri.rewards.capped import capped_reward
from siri.rewards.correctness import is_correct

__all__ = ["EvalExample", "EvalSettings", "default_report_path", "evaluate_examples", "evaluate_model",
           "load_eval_examples", "load_eval_reports", "print_eval_table", "write_eval_report"]


@dataclass
class EvalSettings:
    """How to sample for evaluation.

    Attributes:
        n: samples per prompt; accuracy is pass@1 averaged over them.
        temperature, top_p, seed: as in ``SamplingParams``.
        max_tokens: the response cap; a response that reaches it counts as wrong.
        batch_prompts: prompts per ``engine.generate`` call (the progress bar advances per
            call). Results do not depend on it: draws are keyed by the example's index.
    """

    n: int = 64
    temperature: float = 0.6
    top_p: float = 1.0
    max_tokens: int = 16384
    seed: int = 0
    batch_prompts: int = 64


@dataclass
class EvalExample:
    """One prompt to evaluate.

    Attributes:
        index: the example's index in its benchmark (int, unique); keys its random draws.
        answer: the reference answer handed to the reward function.
        input_ids: the prompt's token ids, chat template applied.
    """

    index: int
    answer: str
    input_ids: list[int]


def evaluate_examples(engine: LLMEngine, tokenizer, examples: list[EvalExample], settings: EvalSettings, *,
                      reward_fn: Callable[[str, str, str], float] = capped_reward,
                      stop_token_ids: list[int] | None = None,
                      progress: bool = False, name: str = "eval") -> dict:
    """Sample ``settings.n`` responses per example and score them.

    Args:
        engine: the engine to generate with (its ``max_num_seqs`` must be >= ``settings.n``).
        tokenizer: decodes responses (``decode(ids, skip_special_tokens=True)``) and, unless
            ``stop_token_ids`` is given, supplies ``eos_token_id`` (an int or a list).
        examples: the prompts, with unique ``index`` values.
        settings: sampling settings.
        reward_fn: ``(response_text, answer, finish_reason) -> float``; a score that
            ``siri.rewards.correctness.is_correct`` accepts (>= 0.5) counts as correct, as in
            training. The default ``capped_reward`` scores a truncated response 0.
        stop_token_ids: tokens that end a response; default the tokenizer's EOS.
        progress: show a rich progress bar over prompt batches, described by ``name``.

    Returns:
        A JSON-friendly dict:
        ``accuracy`` (float): the fraction of correct responses over all prompts and samples;
        ``accuracy_std_over_samples`` (float): the population std over the ``n`` sample
        indices j of the accuracy of sample j across prompts (0.0 when n == 1);
        ``mean_tokens`` (float): mean response length in tokens (a stop token included);
        ``truncation_rate`` (float): fraction of responses with finish_reason "length";
        ``num_prompts``, ``num_samples`` (int); ``per_prompt``: a list of
        ``{"index", "accuracy", "mean_tokens"}`` in the order of ``examples``;
        ``seconds`` (float): wall time.

    Raises:
        ValueError: no examples, duplicate indices, ``batch_prompts < 1``, or no stop token
            given and the tokenizer has no EOS.
    """
    if not examples:
        raise ValueError(f"{name}: no examples to evaluate")
    if len({e.index for e in examples}) != len(examples):
        raise ValueError(f"{name}: example indices must be unique (they key the random draws)")
    if settings.batch_prompts < 1:
        raise ValueError(f"EvalSettings.batch_prompts must be >= 1, got {settings.batch_prompts}")
    params = SamplingParams(n=settings.n, temperature=settings.temperature, top_p=settings.top_p,
                            max_tokens=settings.max_tokens, seed=settings.seed,
                            stop_token_ids=_stop_ids(tokenizer) if stop_token_ids is None else list(stop_token_ids))
    start = time.perf_counter()
    correct: list[list[bool]] = []   # [prompt][sample]
    lengths: list[list[int]] = []
    truncated = 0
    with _BatchProgress(progress, name, len(examples)) as bar:
        for lo in range(0, len(examples), settings.batch_prompts):
            batch = examples[lo:lo + settings.batch_prompts]
            outputs = engine.generate([e.input_ids for e in batch], params, prompt_keys=[e.index for e in batch])
            for example, group in zip(batch, outputs):
                correct.append([is_correct(reward_fn(tokenizer.decode(c.token_ids, skip_special_tokens=True),
                                                     example.answer, c.finish_reason)) for c in group])
                lengths.append([len(c.token_ids) for c in group])
                truncated += sum(c.finish_reason == "length" for c in group)
            bar.advance(len(batch))
    num_samples = len(examples) * settings.n
    per_sample_accuracy = [sum(row[j] for row in correct) / len(examples) for j in range(settings.n)]
    return {
        "accuracy": sum(map(sum, correct)) / num_samples,
        "accuracy_std_over_samples": statistics.pstdev(per_sample_accuracy),
        "mean_tokens": sum(map(sum, lengths)) / num_samples,
        "truncation_rate": truncated / num_samples,
        "num_prompts": len(examples),
        "num_samples": num_samples,
        "per_prompt": [{"index": e.index, "accuracy": sum(c) / settings.n, "mean_tokens": sum(n) / settings.n}
                       for e, c, n in zip(examples, correct, lengths)],
        "seconds": time.perf_counter() - start,
    }


def _stop_ids(tokenizer) -> list[int]:
    eos = tokenizer.eos_token_id
    if eos is None:
        raise ValueError("the tokenizer has no eos_token_id: pass stop_token_ids "
                         "(without a stop token every response would be truncated and score 0)")
    return list(eos) if isinstance(eos, (list, tuple)) else [eos]


class _BatchProgress:
    """A rich progress bar over prompts, advanced once per generate call (no-op if disabled)."""

    def __init__(self, enabled: bool, name: str, total: int):
        self.enabled, self.name, self.total = enabled, name, total

    def __enter__(self):
        if self.enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            from siri.progress import make_console

            self._progress = Progress(TextColumn(self.name), BarColumn(), MofNCompleteColumn(),
                                      TextColumn("prompts"), TimeElapsedColumn(), console=make_console())
            self._progress.__enter__()
            self._task = self._progress.add_task(self.name, total=self.total)
        return self

    def advance(self, prompts: int) -> None:
        if self.enabled:
            self._progress.advance(self._task, prompts)

    def __exit__(self, *exc):
        if self.enabled:
            self._progress.__exit__(*exc)
        return False


def write_eval_report(path: str | os.PathLike, *, model: str, label: str, step: int | None,
                      settings: EvalSettings, results: dict[str, dict], prompt: dict | None = None) -> None:
    """Write ``{"model", "label", "step", "settings", "prompt", "benchmarks"}`` as JSON at
    ``path`` (parent directories created), atomically: a temp file in the same directory, then
    ``os.replace``. ``results`` maps a benchmark name to an ``evaluate_examples`` dict;
    ``prompt`` is the prompt format used (instruction, chat template, where it came from)."""
    report = {"model": model, "label": label, "step": step, "settings": asdict(settings), "prompt": prompt,
              "benchmarks": results}
    write_text_atomic(path, json.dumps(report, indent=1))


def load_eval_reports(run_dir: str | os.PathLike) -> list[dict]:
    """The reports in ``run_dir/eval/*.json`` sorted by step (reports without a step last,
    ties by file name); an empty list when there are none."""
    files = sorted(Path(run_dir, "eval").glob("*.json"))
    reports = [json.loads(f.read_text()) for f in files]
    return sorted(reports, key=lambda r: (r.get("step") is None, r.get("step") or 0))


def print_eval_table(report: dict) -> None:
    """Print one report as a rich table: benchmark, accuracy, mean tokens, truncation, samples."""
    from rich.console import Console
    from rich.table import Table

    step = "" if report.get("step") is None else f", step {report['step']}"
    table = Table(title=f"{report.get('label', '')} ({report.get('model', '')}{step})")
    for column in ("benchmark", "accuracy", "mean tokens", "truncation", "samples"):
        table.add_column(column, justify="left" if column == "benchmark" else "right")
    for name, r in report["benchmarks"].items():
        table.add_row(name, f"{100 * r['accuracy']:.1f}% ± {100 * r['accuracy_std_over_samples']:.1f}",
                      f"{r['mean_tokens']:.0f}", f"{100 * r['truncation_rate']:.1f}%", str(r["num_samples"]))
    Console().print(table)


def load_eval_examples(source: str, tokenizer, *, path: str | None = None, instruction: str | None = None,
                       use_chat_template: bool = True, max_prompt_tokens: int | None = None,
                       prompt_key: str | None = None, answer_key: str | None = None) -> list[EvalExample]:
    """A benchmark's prompts as :class:`EvalExample`s: ``source`` is a file/dir or a named
    dataset (see ``siri.data.load_rows``), formatted like training prompts."""
    from siri.data import PromptDataset, PromptFormatter, load_rows

    loaded = load_rows(source, path=path, prompt_key=prompt_key, answer_key=answer_key)
    formatter = PromptFormatter(tokenizer, instruction=instruction, use_chat_template=use_chat_template)
    dataset = PromptDataset(loaded.rows, formatter, max_prompt_tokens=max_prompt_tokens)
    return [EvalExample(e.index, e.answer, e.input_ids) for e in (dataset[i] for i in range(len(dataset)))]


def evaluate_model(model_path: str, benchmarks: dict[str, tuple[str, str | None]], settings: EvalSettings, *,
                   out: str | os.PathLike, label: str | None = None, instruction: str | None = None,
                   use_chat_template: bool = True, device: str = "auto", dtype: str = "auto",
                   reward_fn: Callable[[str, str, str], float] = capped_reward, progress: bool = True,
                   prompt_source: str = "arguments") -> dict:
    """Load a Hugging Face model directory, evaluate it on every benchmark and write the report.

    Args:
        model_path: an HF model directory (e.g. ``RUN_DIR/checkpoints/step_N``).
        benchmarks: name -> (source, local path or None), as for ``load_eval_examples``.
        out: the JSON report to write.
        label: the report's label (default: the model directory's name).
        instruction, use_chat_template: the prompt format (see
            :func:`siri.data.resolve_prompt_format` for the one the model was trained
            with); recorded in the report with ``prompt_source``.

    Returns:
        The report dict (``model, label, step, settings, prompt, benchmarks``).
    """
    from siri.models.loading import load_model, load_tokenizer, resolve_device, resolve_dtype

    torch_device = resolve_device(device)
    model = load_model(model_path, device=torch_device, dtype=resolve_dtype(dtype, torch_device)).eval()
    tokenizer = load_tokenizer(model_path)
    engine = LLMEngine(model, max_num_seqs=max(256, settings.n))
    results = {}
    for name, (source, local) in benchmarks.items():
        examples = load_eval_examples(source, tokenizer, path=local, instruction=instruction,
                                      use_chat_template=use_chat_template)
        results[name] = evaluate_examples(engine, tokenizer, examples, settings, reward_fn=reward_fn,
                                          progress=progress, name=name)
    step = _checkpoint_step(model_path)
    prompt = {"instruction": instruction, "use_chat_template": use_chat_template, "source": prompt_source}
    write_eval_report(out, model=str(model_path), label=label or Path(model_path).name, step=step,
                      settings=settings, results=results, prompt=prompt)
    return json.loads(Path(out).read_text())


def default_report_path(model_path: str | os.PathLike) -> Path:
    """``RUN_DIR/eval/step_N.json`` for a checkpoint ``RUN_DIR/checkpoints/step_N`` (so
    ``siri plot RUN_DIR`` finds it), else ``MODEL_DIR/eval.json``."""
    model_path = Path(model_path)
    if _checkpoint_step(model_path) is not None:
        return model_path.parent.parent / "eval" / f"{model_path.name}.json"
    return model_path / "eval.json"


def _checkpoint_step(model_path: str | os.PathLike) -> int | None:
    path = Path(model_path)
    if path.parent.name == "checkpoints" and path.name.startswith("step_") and path.name[5:].isdigit():
        return int(path.name[5:])
    return None
