"""Where prompt/answer rows come from: local files (jsonl, parquet, a ``save_to_disk``
directory), the named benchmarks, any other Hugging Face Hub dataset, or records already in
memory; with bad rows skipped and counted (or raised) by reason.

A prompt is a string or a list of chat messages (``[{"role": ..., "content": ...}, ...]``, as
in verl's parquet files and TRL's conversational datasets). Keys may be dotted paths into
nested fields (``reward_model.ground_truth``). Every row keeps its whole record."""
from __future__ import annotations

import json
import math
import os
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

__all__ = ["ANSWER_KEYS", "DatasetSpec", "NAMED_DATASETS", "LoadedRows", "PROMPT_KEYS", "chat_messages_problem",
           "load_rows", "looks_like_local_path", "rows_from_records"]

PROMPT_KEYS = ("prompt", "problem", "question")
"""The prompt fields tried in order when ``prompt_key`` is not given."""
ANSWER_KEYS = ("answer", "solution", "ground_truth", "reward_model.ground_truth")
"""The answer fields tried in order when ``answer_key`` is not given."""

_JSONL_SUFFIXES = (".jsonl", ".jsonlines", ".ndjson")
# names ending so are files even when missing (a Hub dataset id never does)
_FILE_SUFFIXES = _JSONL_SUFFIXES + (".parquet", ".json", ".csv", ".tsv", ".arrow", ".txt")
_ABSENT = object()
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
        rows (list[dict]): ``{"prompt": str | list[dict], "answer": str, "index": int, "row": dict}``
            per usable row: the prompt as given (text, or chat messages), the answer as a
            string, ``index`` the row's 0-based position in the source (for jsonl, its
            line - 1) and ``row`` the whole record (every column; JSON-like values).
        skipped (dict[str, int]): reason -> number of rows skipped for it.
        source (str): where the rows came from, for logs.
        prompt_key, answer_key (str): the fields read (given, or picked from ``PROMPT_KEYS`` /
            ``ANSWER_KEYS``).
    """

    rows: list[dict]
    skipped: dict[str, int] = field(default_factory=dict)
    source: str = ""
    prompt_key: str = "prompt"
    answer_key: str = "answer"

    def describe_keys(self) -> str:
        """One line for logs: ``"prompt from 'problem', answer from 'reward_model.ground_truth'"``."""
        return f"prompt from {self.prompt_key!r}, answer from {self.answer_key!r}"


class _BadRow(Exception):
    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


@dataclass
class _Opened:
    """A source opened before its keys are chosen.

    ``columns`` are the top-level field names (of the first record, for row-wise sources);
    ``has`` says whether a (dotted) key exists; ``records`` yields ``(1-based number, record
    dict or _BadRow)``; ``columnar`` sources have a schema, so a missing key is an error up front."""

    described: str
    columns: list[str]
    has: Callable[[str], bool]
    records: Iterable
    columnar: bool
    unit: str = "row"


def load_rows(source: str | os.PathLike, *, path: str | os.PathLike | None = None, split: str | None = None,
              subset: str | None = None, prompt_key: str | None = None, answer_key: str | None = None,
              on_error: str = "skip") -> LoadedRows:
    """Read prompt/answer rows from a local file, a named dataset or a Hub dataset.

    Args:
        source: a name in ``NAMED_DATASETS`` (names win over a local path of the same
            name; write ``./aime24`` for the directory); a local path: a
            .jsonl/.jsonlines/.ndjson file, a .parquet file, or a directory written by
            ``datasets``' ``save_to_disk``; or else any Hugging Face Hub dataset id, read with
            ``datasets.load_dataset(source, subset, split=split)``. A string that looks like a
            path (starts with ``./``, ``../``, ``/`` or ``~``, or ends in a file suffix such as
            .jsonl or .parquet) is always a path.
        path: for a named dataset, a local copy (any format above) to read instead of the
            Hub; it is read with the spec's field names unless overridden.
        split: the split of a DatasetDict directory or of a Hub dataset. Default: the
            spec's split for a name, "train" otherwise. Ignored for single-split files.
        subset: the Hub dataset's config name (``load_dataset``'s second argument); for a
            named dataset it replaces the spec's ``hf_config``.
        prompt_key, answer_key: the fields to read; a dotted path (``reward_model.ground_truth``)
            reaches into nested fields (a field literally named so wins). Default: the
            spec's fields for a name; otherwise the first of ``PROMPT_KEYS`` / ``ANSWER_KEYS``
            present (a column of a parquet file or dataset, a field of a jsonl file's first
            record).
        on_error: "skip" drops bad rows and counts them in ``LoadedRows.skipped`` by
            reason; "raise" raises ValueError naming the file, the row (1-based; the line
            for jsonl) and what is wrong.

    The Hub ids in ``NAMED_DATASETS`` are defaults: assign a new ``DatasetSpec`` to a name
    to read another copy, or pass ``path``. Without ``path`` a name is fetched with
    ``datasets.load_dataset`` (which uses its cache when offline).

    Rows are unusable when the prompt or the answer is missing, null or blank, when the
    prompt is neither a string nor a list of chat messages (dicts with string "role" and
    "content", at least one of them a "user" message), when the answer is neither a string
    nor a finite number, or when a jsonl line is not UTF-8 or not a JSON object (reasons:
    missing_prompt, empty_prompt, bad_prompt, missing_answer, empty_answer, bad_answer,
    bad_utf8, bad_json, not_an_object). Numeric answers become strings (42 -> "42",
    0.5 -> "0.5", and 142.0 -> "142").

    Returns:
        LoadedRows with at least one row.

    Raises:
        FileNotFoundError: a path that does not exist.
        ValueError: an unknown format, a missing column, a bad row with on_error="raise",
            a missing split, or no usable rows at all.
        OSError: a Hub dataset could not be loaded (the message says how to pass a local copy).
    """
    _check_on_error(on_error)
    source, path = os.fspath(source), None if path is None else os.fspath(path)
    spec = NAMED_DATASETS.get(source)
    if spec is not None:
        prompt_key, answer_key = prompt_key or spec.prompt_key, answer_key or spec.answer_key
        split = split or spec.split
        if path is None:
            hint = f"data.path=FILE in a training config, --data {source}=FILE for siri eval"
            opened = _hub_records(source, spec.hf_id, subset or spec.hf_config, split, hint)
        else:
            opened = _local_records(path, split)
            opened.described = f"{source} from {opened.described}"
    else:
        if path is not None:
            raise ValueError(f"path= is for named datasets ({', '.join(sorted(NAMED_DATASETS))}); "
                             f"{source!r} is not one: pass the file itself as source")
        split = split or "train"
        local = os.path.expanduser(source)
        if os.path.exists(local) or looks_like_local_path(source):
            opened = _local_records(local, split)
        else:
            hint = ("data.train=FILE in a training config, --data FILE for siri eval (no local file or "
                    f"directory is named {source!r}; named datasets: {', '.join(sorted(NAMED_DATASETS))})")
            opened = _hub_records(source, source, subset, split, hint)
    return _read(opened, prompt_key, answer_key, on_error)


def rows_from_records(records, *, prompt_key: str | None = None, answer_key: str | None = None,
                      on_error: str = "skip", source: str = "records") -> LoadedRows:
    """Rows already in memory, read like a file: ``records`` is a list of dicts (like a jsonl
    file's lines) or a ``datasets.Dataset``; keys, bad rows and the result as in
    :func:`load_rows`; ``source`` names them in messages."""
    _check_on_error(on_error)
    if hasattr(records, "column_names") and hasattr(records, "features"):
        return _read(_dataset_records(records, source), prompt_key, answer_key, on_error)
    numbered = [(number, r if isinstance(r, dict) else _BadRow("not_an_object", f"a {type(r).__name__}, not a dict"))
                for number, r in enumerate(records, start=1)]
    return _read(_row_wise(source, numbered, "row"), prompt_key, answer_key, on_error)


def looks_like_local_path(source: str | os.PathLike) -> bool:
    """Whether ``source`` names a local file or directory even if it does not exist: it
    starts with ``./``, ``../``, ``/`` or ``~``, or ends in a file suffix (.jsonl, .parquet,
    ...). Other strings that do not exist are Hub dataset ids."""
    text = os.fspath(source)
    return (text in (".", "..") or text.startswith(("./", "../", "/", "~", ".\\", "..\\"))
            or text.lower().endswith(_FILE_SUFFIXES))


def chat_messages_problem(messages) -> tuple[str, str] | None:
    """Why ``messages`` is not a usable chat prompt, or None when it is one.

    A usable one is a non-empty list of dicts with string "role" and "content" (other keys
    are kept), with at least one "user" message and some non-blank content.

    Returns:
        ``(reason, what)``: ``reason`` is "bad_prompt" or "empty_prompt"; ``what`` completes
        "the prompt is ...", e.g. "a list, but message 2 has no string 'content'".
    """
    if not isinstance(messages, list):
        return "bad_prompt", f"a {type(messages).__name__}, not a string or a list of chat messages"
    if not messages:
        return "empty_prompt", "an empty list of messages"
    for number, message in enumerate(messages, start=1):
        if not isinstance(message, dict):
            return "bad_prompt", (f"a list, but item {number} is a {type(message).__name__}, not a message "
                                  "{'role': str, 'content': str}")
        for key in ("role", "content"):
            if not isinstance(message.get(key), str):
                return "bad_prompt", f"a list, but message {number} has no string {key!r}"
    if not any(m["role"] == "user" for m in messages):
        return "bad_prompt", f"a list of messages with no 'user' message (roles: {[m['role'] for m in messages]})"
    if not any(m["content"].strip() for m in messages):
        return "empty_prompt", "a list of messages whose contents are all empty"
    return None


def _check_on_error(on_error: str) -> None:
    if on_error not in ("skip", "raise"):
        raise ValueError(f"on_error must be 'skip' or 'raise', got {on_error!r}")


def _read(opened: _Opened, prompt_key: str | None, answer_key: str | None, on_error: str) -> LoadedRows:
    """Choose the keys, then turn ``opened``'s records into LoadedRows."""
    described = opened.described
    prompt_key = prompt_key or _pick_key(opened, PROMPT_KEYS, "prompt_key")
    answer_key = answer_key or _pick_key(opened, ANSWER_KEYS, "answer_key")
    if opened.columnar:
        missing = [k for k in (prompt_key, answer_key) if not opened.has(k)]
        if missing:
            raise ValueError(f"{described}: no column {missing[0]!r}; it has {opened.columns} "
                             f"(set prompt_key / answer_key)")
    rows: list[dict] = []
    skipped: Counter[str] = Counter()
    for number, record in opened.records:
        try:
            if isinstance(record, _BadRow):
                raise record
            rows.append({"prompt": _prompt(record, prompt_key), "answer": _answer(record, answer_key),
                         "index": number - 1, "row": record})
        except _BadRow as bad:
            if on_error == "raise":
                raise ValueError(f"{described}: {opened.unit} {number}: {bad}") from None
            skipped[bad.reason] += 1
    if not rows:
        why = f"skipped {dict(skipped)}" if skipped else "it is empty"
        raise ValueError(f"{described}: no usable rows ({why}; prompt_key={prompt_key!r}, answer_key={answer_key!r})")
    return LoadedRows(rows=rows, skipped=dict(skipped), source=described, prompt_key=prompt_key,
                      answer_key=answer_key)


def _pick_key(opened: _Opened, candidates: tuple[str, ...], name: str) -> str:
    """The first of ``candidates`` that ``opened`` has; the first candidate for a source
    with no record to look at (it then reports itself empty)."""
    for key in candidates:
        if opened.has(key):
            return key
    if not opened.columns and not opened.columnar:
        return candidates[0]
    raise ValueError(f"{opened.described}: no column {candidates[0]!r} (nor any of {list(candidates[1:])}); "
                     f"it has {opened.columns} (set {name})")


def _lookup(record: dict, key: str, default=None):
    """``record[key]``, else the value at the dotted path ``key``; ``default`` when absent."""
    if key in record:
        return record[key]
    value = record
    for part in key.split("."):
        if not isinstance(value, dict) or part not in value:
            return default
        value = value[part]
    return value


def _prompt(record: dict, key: str) -> str | list[dict]:
    value = _lookup(record, key)
    if value is None:
        raise _BadRow("missing_prompt", f"no {key!r} field (or it is null)")
    if isinstance(value, str):
        if not value.strip():
            raise _BadRow("empty_prompt", f"{key!r} is empty")
        return value
    problem = chat_messages_problem(value)
    if problem is not None:
        raise _BadRow(problem[0], f"{key!r} is {problem[1]}")
    return value


def _answer(record: dict, key: str) -> str:
    value = _lookup(record, key)
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


def _local_records(path: str, split: str) -> _Opened:
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such file or directory (named datasets: "
                                f"{', '.join(sorted(NAMED_DATASETS))})")
    if os.path.isdir(path):
        if not any(os.path.exists(os.path.join(path, f)) for f in ("dataset_dict.json", "state.json")):
            raise ValueError(f"{path}: a directory that save_to_disk did not write; supported: {'; '.join(_SUPPORTED)}")
        return _saved_records(path, split)
    if path.endswith(_JSONL_SUFFIXES):
        return _row_wise(path, list(_jsonl_records(path)), "line")
    if path.endswith(".parquet"):
        return _parquet_records(path)
    raise ValueError(f"{path}: unknown format; supported: {'; '.join(_SUPPORTED)}")


def _row_wise(described: str, numbered: list, unit: str) -> _Opened:
    """A source without a schema: its keys are those of its first record."""
    first = next((r for _, r in numbered if isinstance(r, dict)), None)
    return _Opened(described, [] if first is None else list(first),
                   lambda key: first is not None and _lookup(first, key, _ABSENT) is not _ABSENT, numbered, False, unit)


def _jsonl_records(path: str) -> Iterable:
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


def _parquet_records(path: str) -> _Opened:
    try:
        import pyarrow.parquet as pq
    except ImportError as e:
        raise ImportError("reading parquet needs pyarrow: pip install 'siri[data]'") from e
    table = pq.read_table(path)
    return _table_records(path, table.schema, table.to_pylist())


def _saved_records(path: str, split: str) -> _Opened:
    datasets = _import_datasets()
    ds = datasets.load_from_disk(path)
    described = path
    if isinstance(ds, datasets.DatasetDict):
        if split not in ds:
            raise ValueError(f"{path}: no split {split!r}; it has {sorted(ds)}")
        ds, described = ds[split], f"{path} (split {split})"
    return _dataset_records(ds, described)


def _hub_records(name: str, hf_id: str, subset: str | None, split: str, hint: str) -> _Opened:
    """``datasets.load_dataset(hf_id, subset, split=split)``; any failure is one OSError
    line ending in ``hint`` (how to pass a local copy instead)."""
    where = (f"{hf_id}, " if hf_id != name else "") + (f"subset {subset}, " if subset else "") + f"split {split}"
    try:
        datasets = _import_datasets()
        ds = datasets.load_dataset(hf_id, subset, split=split)
    except Exception as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise OSError(f"could not load dataset {name!r} ({where}) from the Hugging Face Hub "
                      f"({type(e).__name__}: {reason}); when offline, give a local copy (jsonl, parquet or "
                      f"a save_to_disk directory): {hint}") from e
    return _dataset_records(ds, f"{name} ({where})")


def _dataset_records(ds, described: str) -> _Opened:
    """A ``datasets.Dataset``'s records, read as Arrow (so no feature decodes its values)."""
    return _table_records(described, ds.features.arrow_schema, ds.with_format("arrow")[:].to_pylist())


def _table_records(described: str, schema, records: list[dict]) -> _Opened:
    return _Opened(described, list(schema.names), lambda key: _schema_has(schema, key),
                   ((number, _plain(r)) for number, r in enumerate(records, start=1)), True)


def _schema_has(schema, key: str) -> bool:
    """Whether a pyarrow schema has the column ``key`` or, for a dotted key, the nested
    struct field it names."""
    if key in schema.names:
        return True
    head, *rest = key.split(".")
    if head not in schema.names:
        return False
    kind = schema.field(head).type
    for part in rest:
        index = kind.get_field_index(part) if hasattr(kind, "get_field_index") else -1
        if index < 0:
            return False
        kind = kind[index].type
    return True


def _plain(value):
    """``value`` with JSON types only: dicts, lists, str, int, float, bool, None; anything
    else (dates, bytes, decimals) becomes its ``str``."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return str(value)


def _import_datasets():
    try:
        import datasets
    except ImportError as e:
        raise ImportError("reading save_to_disk directories and Hub datasets needs the 'datasets' "
                          "package: pip install 'siri[data]'") from e
    return datasets
