"""Where prompt/answer rows come from: local files (jsonl, parquet, a ``save_to_disk``
directory) or the named benchmarks on the Hugging Face Hub, with bad rows skipped and
counted (or raised) by reason."""
from __future__ import annotations

import json
import math
import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

__all__ = ["DatasetSpec", "NAMED_DATASETS", "LoadedRows", "load_rows"]

_JSONL_SUFFIXES = (".jsonl", ".jsonlines", ".ndjson")
_SUPPORTED = ("a .jsonl/.jsonlines/.ndjson file (one JSON object per line)", "a .parquet file",
              "a directory written by datasets' save_to_disk (Dataset or DatasetDict)")


@dataclass(frozen=True)
class DatasetSpec:
    """A dataset on the Hugging Face Hub and the fields that hold the prompt and the answer.

    Attributes:
        hf_id (str): the Hub dataset id.
        split (str): the split to read ("train", "test", ...).
        prompt_key (str): the field with the problem text.
        answer_key (str): the field with the reference answer.
        hf_config (str | None): the dataset's config name, if it has several.
    """

    hf_id: str
    split: str
    prompt_key: str
    answer_key: str
    hf_config: str | None = None


NAMED_DATASETS: dict[str, DatasetSpec] = {
    # the SIRI training set (about 40k problems, DeepScaleR's mix)
    "deepscaler": DatasetSpec("agentica-org/DeepScaleR-Preview-Dataset", "train", "problem", "answer"),
    # evaluation benchmarks
    "aime24": DatasetSpec("HuggingFaceH4/aime_2024", "train", "problem", "answer"),
    "aime25": DatasetSpec("yentinglin/aime_2025", "train", "problem", "answer"),
    "amc": DatasetSpec("AI-MO/aimo-validation-amc", "train", "problem", "answer"),
    "math500": DatasetSpec("HuggingFaceH4/MATH-500", "test", "problem", "answer"),
}


@dataclass
class LoadedRows:
    """The usable rows of one source.

    Attributes:
        rows (list[dict]): ``{"prompt": str, "answer": str, "index": int}`` per usable row;
            ``index`` is the row's 0-based position in the source (for jsonl, its line - 1).
        skipped (dict[str, int]): reason -> number of rows skipped for it.
        source (str): where the rows came from, for logs.
    """

    rows: list[dict]
    skipped: dict[str, int] = field(default_factory=dict)
    source: str = ""


class _BadRow(Exception):
    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


def load_rows(source: str, *, path: str | None = None, split: str | None = None,
              prompt_key: str | None = None, answer_key: str | None = None,
              on_error: str = "skip") -> LoadedRows:
    """Read prompt/answer rows from a local file or a named dataset.

    Args:
        source: a name in ``NAMED_DATASETS`` (names win over a local path of the same
            name; write ``./aime24`` for the directory), or a local path: a
            .jsonl/.jsonlines/.ndjson file, a .parquet file, or a directory written by
            ``datasets``' ``save_to_disk``.
        path: for a named dataset, a local copy (any format above) to read instead of the
            Hub; it is read with the spec's field names unless overridden.
        split: the split of a DatasetDict directory or of a Hub dataset. Default: the
            spec's split for a name, "train" for a path. Ignored for single-split files.
        prompt_key, answer_key: the fields to read. Default: "prompt" / "answer" for a
            path, the spec's fields for a name.
        on_error: "skip" drops bad rows and counts them in ``LoadedRows.skipped`` by
            reason; "raise" raises ValueError naming the file, the row (1-based; the line
            for jsonl) and what is wrong.

    The Hub ids in ``NAMED_DATASETS`` are defaults: assign a new ``DatasetSpec`` to a name
    to read another copy, or pass ``path``. Without ``path`` a name is fetched with
    ``datasets.load_dataset`` (which uses its cache when offline).

    Rows are unusable when the prompt or the answer is missing, null or blank, when the
    prompt is not a string, when the answer is neither a string nor a finite number, or
    when a jsonl line is not UTF-8 or not a JSON object (reasons: missing_prompt,
    empty_prompt, bad_prompt, missing_answer, empty_answer, bad_answer, bad_utf8,
    bad_json, not_an_object). Numeric answers become strings (42 -> "42", 0.5 -> "0.5",
    and 142.0 -> "142").

    Returns:
        LoadedRows with at least one row.

    Raises:
        FileNotFoundError: the path does not exist.
        ValueError: an unknown format, a missing column, a bad row with on_error="raise",
            a missing split, or no usable rows at all.
        RuntimeError: a named dataset could not be fetched (pass a local copy via ``path``).
    """
    if on_error not in ("skip", "raise"):
        raise ValueError(f"on_error must be 'skip' or 'raise', got {on_error!r}")
    source, path = os.fspath(source), None if path is None else os.fspath(path)
    spec = NAMED_DATASETS.get(source)
    if spec is not None:
        prompt_key = prompt_key or spec.prompt_key
        answer_key = answer_key or spec.answer_key
        split = split or spec.split
    else:
        if path is not None:
            raise ValueError(f"path= is for named datasets ({', '.join(sorted(NAMED_DATASETS))}); "
                             f"{source!r} is not one: pass the file itself as source")
        prompt_key, answer_key, split = prompt_key or "prompt", answer_key or "answer", split or "train"
        path = source
    if spec is not None and path is None:
        described = f"{source} ({spec.hf_id}, split {split})"
        records = _hub_records(source, spec, split, prompt_key, answer_key)
    else:
        described, records = _local_records(path, split, prompt_key, answer_key)
        if spec is not None:
            described = f"{source} from {described}"

    rows, skipped = [], Counter()
    for number, record in records:
        try:
            if isinstance(record, _BadRow):
                raise record
            rows.append({"prompt": _prompt(record, prompt_key), "answer": _answer(record, answer_key),
                         "index": number - 1})
        except _BadRow as bad:
            if on_error == "raise":
                unit = "line" if path is not None and path.endswith(_JSONL_SUFFIXES) else "row"
                raise ValueError(f"{described}: {unit} {number}: {bad}") from None
            skipped[bad.reason] += 1
    if not rows:
        why = f"skipped {dict(skipped)}" if skipped else "it is empty"
        raise ValueError(f"{described}: no usable rows ({why}; prompt_key={prompt_key!r}, answer_key={answer_key!r})")
    return LoadedRows(rows=rows, skipped=dict(skipped), source=described)


def _prompt(record: dict, key: str) -> str:
    value = record.get(key)
    if value is None:
        raise _BadRow("missing_prompt", f"no {key!r} field (or it is null)")
    if not isinstance(value, str):
        raise _BadRow("bad_prompt", f"{key!r} is a {type(value).__name__}, not a string")
    if not value.strip():
        raise _BadRow("empty_prompt", f"{key!r} is empty")
    return value


def _answer(record: dict, key: str) -> str:
    value = record.get(key)
    if value is None:
        raise _BadRow("missing_answer", f"no {key!r} field (or it is null)")
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _BadRow("bad_answer", f"{key!r} is {value}")
        value = str(int(value)) if value.is_integer() else repr(value)
    elif isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise _BadRow("bad_answer", f"{key!r} is a {type(value).__name__}, not a string or a number")
    if not value.strip():
        raise _BadRow("empty_answer", f"{key!r} is empty")
    return value


def _local_records(path: str, split: str, prompt_key: str, answer_key: str) -> tuple[str, Iterator]:
    """(description, iterator of (1-based row number, record dict or _BadRow)) for a local path."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such file or directory (named datasets: "
                                f"{', '.join(sorted(NAMED_DATASETS))})")
    if os.path.isdir(path):
        if not any(os.path.exists(os.path.join(path, f)) for f in ("dataset_dict.json", "state.json")):
            raise ValueError(f"{path}: a directory that save_to_disk did not write; supported: {'; '.join(_SUPPORTED)}")
        return _saved_records(path, split, prompt_key, answer_key)
    if path.endswith(_JSONL_SUFFIXES):
        return path, _jsonl_records(path)
    if path.endswith(".parquet"):
        return path, _parquet_records(path, prompt_key, answer_key)
    raise ValueError(f"{path}: unknown format; supported: {'; '.join(_SUPPORTED)}")


def _jsonl_records(path: str) -> Iterator:
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                yield number, _BadRow("bad_utf8", f"not valid UTF-8 ({e.reason} at byte {e.start})")
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                yield number, _BadRow("bad_json", f"not valid JSON ({e.msg} at column {e.colno})")
                continue
            if not isinstance(record, dict):
                yield number, _BadRow("not_an_object", f"a JSON {type(record).__name__}, not an object")
                continue
            yield number, record


def _parquet_records(path: str, prompt_key: str, answer_key: str) -> Iterator:
    try:
        import pyarrow.parquet as pq
    except ImportError as e:
        raise ImportError("reading parquet needs pyarrow: pip install 'siri[data]'") from e
    _check_columns(path, pq.read_schema(path).names, prompt_key, answer_key)
    table = pq.read_table(path, columns=list(dict.fromkeys((prompt_key, answer_key))))
    return _columns_records(table.column(prompt_key).to_pylist(), table.column(answer_key).to_pylist(),
                            prompt_key, answer_key)


def _saved_records(path: str, split: str, prompt_key: str, answer_key: str) -> tuple[str, Iterator]:
    datasets = _import_datasets()
    ds = datasets.load_from_disk(path)
    described = path
    if isinstance(ds, datasets.DatasetDict):
        if split not in ds:
            raise ValueError(f"{path}: no split {split!r}; it has {sorted(ds)}")
        ds, described = ds[split], f"{path} (split {split})"
    return described, _dataset_records(ds, described, prompt_key, answer_key)


def _hub_records(name: str, spec: DatasetSpec, split: str, prompt_key: str, answer_key: str) -> Iterator:
    try:
        datasets = _import_datasets()
        ds = datasets.load_dataset(spec.hf_id, spec.hf_config, split=split)
    except Exception as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise OSError(f"could not load dataset {name!r} ({spec.hf_id}, split {split}) from the Hugging Face "
                      f"Hub ({type(e).__name__}: {reason}); when offline, give a local copy (jsonl, parquet or "
                      f"a save_to_disk directory): data.path=FILE in a training config, --data {name}=FILE "
                      f"for siri eval") from e
    return _dataset_records(ds, spec.hf_id, prompt_key, answer_key)


def _dataset_records(ds, described: str, prompt_key: str, answer_key: str) -> Iterator:
    _check_columns(described, ds.column_names, prompt_key, answer_key)
    return _columns_records(list(ds[prompt_key]), list(ds[answer_key]), prompt_key, answer_key)


def _columns_records(prompts: list, answers: list, prompt_key: str, answer_key: str) -> Iterator:
    for number, (prompt, answer) in enumerate(zip(prompts, answers), start=1):
        yield number, {prompt_key: prompt, answer_key: answer}


def _check_columns(described: str, columns: list[str], prompt_key: str, answer_key: str) -> None:
    missing = [k for k in (prompt_key, answer_key) if k not in columns]
    if missing:
        raise ValueError(f"{described}: no column {missing[0]!r}; it has {list(columns)} "
                         f"(set prompt_key / answer_key)")


def _import_datasets():
    try:
        import datasets
    except ImportError as e:
        raise ImportError("reading save_to_disk directories and Hub datasets needs the 'datasets' "
                          "package: pip install 'siri[data]'") from e
    return datasets
