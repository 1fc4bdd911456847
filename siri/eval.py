"""Evaluate a model with siri's engine: pass@1 averaged over ``n`` samples per prompt, mean
response length and truncation rate, per benchmark; JSON reports per checkpoint.

    settings = EvalSettings(n=16, max_tokens=8192)
    results = {"aime24": evaluate_examples(engine, tokenizer, examples, settings, progress=True)}
    write_eval_report(run_dir / "eval" / "step_320.json", model="...", label="trough 1",
                      step=320, settings=settings, results=results)
    print_eval_table(load_eval_reports(run_dir)[-1])
"""
from __future__ import annotations

import functools
import json
import os
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from siri.atomic_io import write_text_atomic
from siri.data.formatting import DEFAULT_PROMPT_FORMAT, PromptFormat
from siri.engine import LLMEngine, SamplingParams
from siri.rewards.capped import capped_reward
from siri.rewards.correctness import is_correct
from siri.rewards.reward_input import RewardInput
from siri.rewards.reward_scorer import correctness_scores

__all__ = ["EvalExample", "EvalSettings", "default_report_path", "evaluate_examples", "evaluate_model",
           "load_eval_examples", "load_eval_reports", "pass_at_k", "print_eval_table", "samples_path",
           "write_eval_report"]


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
        prompt: the prompt as the dataset gave it (a string or a message list), for rewards
            that ask for it and for the samples file.
        row: the dataset row (a dict), for rewards that ask for it.
    """

    index: int
    answer: str
    input_ids: list[int]
    prompt: str | list[dict] = ""
    row: dict = field(default_factory=dict)


def evaluate_examples(engine: LLMEngine, tokenizer, examples: list[EvalExample], settings: EvalSettings, *,
                      reward_fn: Callable[[str, str, str], float] = capped_reward,
                      stop_token_ids: list[int] | None = None,
                      progress: bool = False, name: str = "eval", keep_samples: bool = False) -> dict:
    """Sample ``settings.n`` responses per example and score them.

    Args:
        engine: the engine to generate with (its ``max_num_seqs`` must be >= ``settings.n``).
        tokenizer: decodes responses (``decode(ids, skip_special_tokens=True)``) and, unless
            ``stop_token_ids`` is given, supplies ``eos_token_id`` (an int or a list).
        examples: the prompts, with unique ``index`` values.
        settings: sampling settings.
        reward_fn: the reward in any form :mod:`siri.rewards` accepts (``(response_text,
            reference, finish_reason)``, or keyword parameters ``prompt``, ``reference``,
            ``finish_reason``, ``row``, ``step``; a list of terms), run in this process; the
            correctness term's score counts as correct when ``siri.rewards.is_correct``
            accepts it (>= 0.5), as in training. The default ``capped_reward`` scores a
            truncated response 0.
        stop_token_ids: tokens that end a response; default the tokenizer's EOS.
        progress: show a rich progress bar over prompt batches, described by ``name``.
        keep_samples: also return ``samples``, one dict per response: ``prompt``, ``response``,
            ``reference``, ``reward``, ``correct``, ``tokens``, ``finish_reason``, ``index``, ``sample``.

    Returns:
        A JSON-friendly dict:
        ``accuracy`` (float): the fraction of correct responses over all prompts and samples;
        ``accuracy_std_over_samples`` (float): the population std over the ``n`` sample
        indices j of the accuracy of sample j across prompts (0.0 when n == 1);
        ``mean_tokens`` (float): mean response length in tokens (a stop token included);
        ``truncation_rate`` (float): fraction of responses with finish_reason "length";
        ``pass_at_k``: ``{"pass@k": float}`` for k = 1, 2, 4, ... and n (the unbiased estimator,
        :func:`pass_at_k`, averaged over prompts);
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
    samples: list[dict] = []
    lengths: list[list[int]] = []
    truncated = 0
    with _BatchProgress(progress, name, len(examples)) as bar:
        for lo in range(0, len(examples), settings.batch_prompts):
            batch = examples[lo:lo + settings.batch_prompts]
            outputs = engine.generate([e.input_ids for e in batch], params, prompt_keys=[e.index for e in batch])
            for example, group in zip(batch, outputs):
                texts = [tokenizer.decode(c.token_ids, skip_special_tokens=True) for c in group]
                scores = correctness_scores(reward_fn, [RewardInput.for_example(text, example, c.finish_reason)
                                                        for text, c in zip(texts, group)])
                correct.append([is_correct(score) for score in scores])
                if keep_samples:
                    samples += [{"index": example.index, "sample": j, "prompt": example.prompt, "response": text,
                                 "reference": example.answer, "reward": score, "correct": ok,
                                 "tokens": len(c.token_ids), "finish_reason": c.finish_reason}
                                for j, (text, c, score, ok) in enumerate(zip(texts, group, scores, correct[-1]))]
                lengths.append([len(c.token_ids) for c in group])
                truncated += sum(c.finish_reason == "length" for c in group)
            bar.advance(len(batch))
    num_samples = len(examples) * settings.n
    per_sample_accuracy = [sum(row[j] for row in correct) / len(examples) for j in range(settings.n)]
    result = {
        "accuracy": sum(map(sum, correct)) / num_samples,
        "accuracy_std_over_samples": statistics.pstdev(per_sample_accuracy),
        "pass_at_k": pass_at_k_curve([sum(row) for row in correct], settings.n),
        "mean_tokens": sum(map(sum, lengths)) / num_samples,
        "truncation_rate": truncated / num_samples,
        "num_prompts": len(examples),
        "num_samples": num_samples,
        "per_prompt": [{"index": e.index, "accuracy": sum(c) / settings.n, "mean_tokens": sum(n) / settings.n}
                       for e, c, n in zip(examples, correct, lengths)],
        "seconds": time.perf_counter() - start,
    }
    if keep_samples:
        result["samples"] = samples
    return result


def _stop_ids(tokenizer) -> list[int]:
    eos = tokenizer.eos_token_id
    if eos is None:
        raise ValueError("the tokenizer has no eos_token_id: pass stop_token_ids "
                         "(without a stop token every response would be truncated and score 0)")
    return list(eos) if isinstance(eos, (list, tuple)) else [eos]


def pass_at_k(num_samples: int, num_correct: int, k: int) -> float:
    """The unbiased pass@k estimate for one prompt: the chance that at least one of ``k``
    responses drawn without replacement from ``num_samples`` (of which ``num_correct`` are
    right) is right, ``1 - C(n - c, k) / C(n, k)``, computed as a product (no huge binomials).

    Raises:
        ValueError: unless ``0 <= num_correct <= num_samples`` and ``1 <= k <= num_samples``.
    """
    if not 0 <= num_correct <= num_samples or not 1 <= k <= num_samples:
        raise ValueError(f"pass_at_k needs 0 <= num_correct <= num_samples and 1 <= k <= num_samples, got "
                         f"num_samples={num_samples}, num_correct={num_correct}, k={k}")
    if num_samples - num_correct < k:
        return 1.0
    miss = 1.0
    for i in range(num_samples - num_correct + 1, num_samples + 1):
        miss *= 1.0 - k / i
    return 1.0 - miss


def pass_at_k_curve(correct_counts: list[int], n: int) -> dict[str, float]:
    """``{"pass@k": mean over prompts}`` for k = 1, 2, 4, ... up to ``n`` and ``n`` itself
    (``correct_counts``: per prompt, how many of its ``n`` responses are right)."""
    ks = sorted({2 ** i for i in range(n.bit_length()) if 2 ** i <= n} | {n})
    return {f"pass@{k}": sum(pass_at_k(n, c, k) for c in correct_counts) / len(correct_counts) for k in ks}


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
    for column in ("benchmark", "accuracy", "pass@k", "mean tokens", "truncation", "samples"):
        table.add_column(column, justify="left" if column == "benchmark" else "right")
    for name, r in report["benchmarks"].items():
        passes = r.get("pass_at_k") or {}
        widest = max(passes, key=lambda key: int(key.split("@")[1]), default=None)
        table.add_row(name, f"{100 * r['accuracy']:.1f}% ± {100 * r['accuracy_std_over_samples']:.1f}",
                      f"{widest} {100 * passes[widest]:.1f}%" if widest else "-",
                      f"{r['mean_tokens']:.0f}", f"{100 * r['truncation_rate']:.1f}%", str(r["num_samples"]))
    Console().print(table)


def load_eval_examples(source, tokenizer, *, path: str | None = None,
                       prompt_format: PromptFormat = DEFAULT_PROMPT_FORMAT, max_prompt_tokens: int | None = None,
                       prompt_key: str | None = None, answer_key: str | None = None,
                       announce: Callable[[str], None] | None = None) -> list[EvalExample]:
    """A benchmark's prompts as :class:`EvalExample`s, formatted like training prompts.

    Args:
        source: a file/dir or a named dataset (see ``siri.data.load_rows``), or the rows
            themselves (a list of dicts or a ``datasets.Dataset``).
        path: a named dataset's local copy.
        prompt_format: the instruction, chat template and its options to format with.
        prompt_key, answer_key: the fields to read (dotted paths reach nested fields); None
            picks the first of the usual names present.
        announce: called with a one-line description of the source and the keys read.
    """
    from siri.data import PromptDataset, PromptFormatter, load_rows, rows_from_records

    if isinstance(source, (str, os.PathLike)):
        loaded = load_rows(source, path=path, prompt_key=prompt_key, answer_key=answer_key)
    else:
        loaded = rows_from_records(source, prompt_key=prompt_key, answer_key=answer_key)
    if announce is not None:
        announce(f"{loaded.source}: prompt from {loaded.prompt_key!r}, answer from {loaded.answer_key!r}")
    dataset = PromptDataset(loaded.rows, PromptFormatter(tokenizer, prompt_format), max_prompt_tokens=max_prompt_tokens)
    return [EvalExample(e.index, e.answer, e.input_ids, prompt=e.prompt, row=e.row)
            for e in (dataset[i] for i in range(len(dataset)))]


def evaluate_model(model, benchmarks: dict[str, Any], settings: EvalSettings, *, out: str | os.PathLike,
                   tokenizer=None, prompt_format: PromptFormat = DEFAULT_PROMPT_FORMAT, label: str | None = None,
                   device: str = "auto", dtype: str = "auto", reward_fn: Callable | None = None,
                   prompt_key: str | None = None, answer_key: str | None = None, progress: bool = True) -> dict:
    """Evaluate a model on every benchmark; write the report and, next to it, every response.

    Args:
        model: an HF model directory (e.g. ``RUN_DIR/checkpoints/step_N``), or a causal LM
            object a script built (then ``tokenizer`` is required).
        benchmarks: name -> ``(source, local path or None)`` as for ``load_eval_examples``,
            or name -> rows (a list of dicts or a ``datasets.Dataset``).
        out: the JSON report to write; the responses go to ``<out stem>.samples.jsonl``
            (:func:`samples_path`).
        tokenizer: the model's tokenizer (default: loaded from the model directory).
        prompt_format: the prompt format (:func:`siri.data.resolve_prompt_format` gives the
            one the model was trained with); recorded in the report.
        label: the report's label (default: the model directory's name).
        reward_fn: the reward (any form :mod:`siri.rewards` accepts; default
            ``capped_reward``), run in this process.
        prompt_key, answer_key: the fields to read from every benchmark (default: picked).
        progress: progress bars (a line per benchmark naming the fields read is always printed).

    Returns:
        The report dict (``model, label, step, settings, prompt, benchmarks``).
    """
    from siri.models.loading import load_model, load_tokenizer, place_model, resolve_device, resolve_dtype

    torch_device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, torch_device)
    if isinstance(model, (str, os.PathLike)):
        model_name = str(model)
        tokenizer = tokenizer if tokenizer is not None else load_tokenizer(model_name)
        model = load_model(model_name, device=torch_device, dtype=torch_dtype)
    else:
        if tokenizer is None:
            raise ValueError("evaluate_model: a model object needs tokenizer= (its tokenizer)")
        model_name = getattr(model.config, "name_or_path", "") or type(model).__name__
        model = place_model(model, device=torch_device, dtype=torch_dtype)
    model.eval()
    engine = LLMEngine(model, max_num_seqs=max(256, settings.n))
    results, samples = {}, []
    for name, spec in benchmarks.items():
        source, local = spec if isinstance(spec, tuple) else (spec, None)
        examples = load_eval_examples(source, tokenizer, path=local, prompt_format=prompt_format,
                                      prompt_key=prompt_key, answer_key=answer_key,
                                      announce=functools.partial(_announce, name))
        results[name] = evaluate_examples(engine, tokenizer, examples, settings, progress=progress, name=name,
                                          keep_samples=True, reward_fn=capped_reward if reward_fn is None else reward_fn)
        samples += [{"benchmark": name, **row} for row in results[name].pop("samples")]
    step = _checkpoint_step(model_name)
    write_eval_report(out, model=model_name, label=label or Path(model_name).name, step=step,
                      settings=settings, results=results, prompt=prompt_format.to_dict())
    write_text_atomic(samples_path(out), "".join(json.dumps(row) + "\n" for row in samples))
    return json.loads(Path(out).read_text())


def _announce(benchmark: str, line: str) -> None:
    print(f"{benchmark}: {line}")


def samples_path(report_path: str | os.PathLike) -> Path:
    """Where :func:`evaluate_model` writes every response of the report at ``report_path``:
    ``eval/step_320.json`` -> ``eval/step_320.samples.jsonl``."""
    report_path = Path(report_path)
    return report_path.with_name(f"{report_path.stem}.samples.jsonl")


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
