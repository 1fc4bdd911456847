"""siri.data: loading rows from local files (never the network), prompt formatting,
the tokenized prompt dataset and the resumable sampler."""
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import tokenizers
from tokenizers import decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from siri.data import (DEEPSCALER_INSTRUCTION, NAMED_DATASETS, LoadedRows, PromptDataset, PromptFormatter,
                       PromptSampler, load_rows)

try:
    import datasets
except ImportError:  # an optional extra (siri[data]; CI has it through siri[test]); the GPU
    datasets = None  # machine lacks it, and a failed import here would stop the whole run there
needs_datasets = pytest.mark.skipif(datasets is None,
                                    reason="the optional 'datasets' package is not installed (pip install siri[data])")

ROWS = [{"prompt": "What is 1 + 1?", "answer": "2"},
        {"prompt": "Compute 6 * 7.", "answer": "42"},
        {"prompt": "Halve 1.", "answer": "\\frac{1}{2}"}]
TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
            "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(path)


def expected(rows, prompt_key="prompt", answer_key="answer"):
    return [{"prompt": r[prompt_key], "answer": r[answer_key], "index": i, "row": r} for i, r in enumerate(rows)]


@pytest.fixture(scope="module")
def tokenizer():
    """A small byte-level BPE with ChatML-style markers and a Jinja chat template."""
    tok = tokenizers.Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=320, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
    tok.train_from_iterator([r["prompt"] for r in ROWS] + [DEEPSCALER_INSTRUCTION, "user assistant"], trainer)
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    hf.chat_template = TEMPLATE
    return hf


# ---------------------------------------------------------------- load_rows: formats


@needs_datasets
def test_jsonl_parquet_and_save_to_disk_load_the_same_rows(tmp_path):
    jsonl = write_jsonl(tmp_path / "d.jsonl", ROWS)
    parquet = str(tmp_path / "d.parquet")
    pq.write_table(pa.Table.from_pylist(ROWS), parquet)
    single = str(tmp_path / "single")
    datasets.Dataset.from_list(ROWS).save_to_disk(single)
    multi = str(tmp_path / "multi")
    datasets.DatasetDict({"train": datasets.Dataset.from_list(ROWS[:1]),
                          "test": datasets.Dataset.from_list(ROWS)}).save_to_disk(multi)

    for source, split in ((jsonl, None), (parquet, None), (single, None), (multi, "test")):
        loaded = load_rows(source, split=split)
        assert isinstance(loaded, LoadedRows)
        assert loaded.rows == expected(ROWS), source
        assert loaded.skipped == {}
        assert source in loaded.source
    assert load_rows(multi).rows == expected(ROWS[:1])  # a DatasetDict defaults to "train"
    with pytest.raises(ValueError, match="no split 'validation'.*'test', 'train'"):
        load_rows(multi, split="validation")


def test_custom_field_names_and_numeric_answers(tmp_path):
    records = [{"question": "q1", "solution": 42}, {"question": "q2", "solution": 0.5},
               {"question": "q3", "solution": 142.0}, {"question": "q4", "solution": "x^2"}]
    path = write_jsonl(tmp_path / "d.jsonl", records)
    loaded = load_rows(path, prompt_key="question", answer_key="solution")
    assert [r["answer"] for r in loaded.rows] == ["42", "0.5", "142", "x^2"]
    assert [r["prompt"] for r in loaded.rows] == ["q1", "q2", "q3", "q4"]
    parquet = str(tmp_path / "d.parquet")
    pq.write_table(pa.Table.from_pylist([{"question": "q", "solution": 7}]), parquet)
    assert load_rows(parquet, prompt_key="question", answer_key="solution").rows == [
        {"prompt": "q", "answer": "7", "index": 0, "row": {"question": "q", "solution": 7}}]
    with pytest.raises(ValueError, match="no column 'prompt'.*question"):
        load_rows(parquet, prompt_key="prompt")


def test_missing_file_and_unknown_format(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        load_rows(str(tmp_path / "nope.jsonl"))
    csv = tmp_path / "d.csv"
    csv.write_text("prompt,answer\nq,1\n")
    with pytest.raises(ValueError, match="unknown format.*jsonl.*parquet.*save_to_disk"):
        load_rows(str(csv))
    with pytest.raises(ValueError, match="save_to_disk did not write"):
        load_rows(str(tmp_path))
    with pytest.raises(ValueError, match="on_error"):
        load_rows(str(csv), on_error="ignore")
    with pytest.raises(ValueError, match="path= is for named datasets"):
        load_rows(str(csv), path=str(csv))


# ---------------------------------------------------------------- load_rows: named datasets


@needs_datasets
def test_named_dataset_from_local_path_uses_the_spec_fields(tmp_path):
    spec = NAMED_DATASETS["deepscaler"]
    assert (spec.hf_id, spec.prompt_key, spec.answer_key) == ("agentica-org/DeepScaleR-Preview-Dataset",
                                                             "problem", "answer")
    assert {"aime24", "aime25", "amc", "math500"} <= set(NAMED_DATASETS)
    records = [{"problem": r["prompt"], "answer": r["answer"], "solution": "..."} for r in ROWS]
    path = write_jsonl(tmp_path / "deepscaler.jsonl", records)
    loaded = load_rows("deepscaler", path=path)
    assert loaded.rows == expected(records, prompt_key="problem")
    assert "deepscaler" in loaded.source and path in loaded.source
    # math500's spec split ("test") picks the split of a local DatasetDict copy
    saved = str(tmp_path / "math500")
    datasets.DatasetDict({"test": datasets.Dataset.from_list(records)}).save_to_disk(saved)
    assert load_rows("math500", path=saved).rows == expected(records, prompt_key="problem")


@needs_datasets
def test_named_dataset_offline_gives_a_clear_error(monkeypatch):
    calls = []

    def offline(*args, **kwargs):
        calls.append((args, kwargs))
        raise ConnectionError("no network")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(OSError, match=r"(?s)aime24.*HuggingFaceH4/aime_2024.*no network.*path=.*--data aime24="):
        load_rows("aime24")
    assert calls == [(("HuggingFaceH4/aime_2024", None), {"split": "train"})]


@needs_datasets
def test_named_dataset_from_the_hub_is_read_like_a_local_one(monkeypatch):
    records = [{"problem": "p", "answer": 5.0}]
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: datasets.Dataset.from_list(records))
    loaded = load_rows("amc")
    assert loaded.rows == [{"prompt": "p", "answer": "5", "index": 0, "row": records[0]}]
    assert "AI-MO/aimo-validation-amc" in loaded.source


# ---------------------------------------------------------------- load_rows: bad rows


GOOD_LINE = json.dumps({"prompt": "good", "answer": "1"}).encode()
BAD_LINES = {  # reason -> (line, what the raised message says)
    "bad_json": (b'{"prompt": "unterminated", ', "not valid JSON"),
    "bad_utf8": (b'{"prompt": "caf\xe9", "answer": "2"}', "not valid UTF-8"),
    "missing_prompt": (json.dumps({"answer": "3"}).encode(), "no 'prompt' field"),
    "empty_answer": (json.dumps({"prompt": "q", "answer": ""}).encode(), "'answer' is empty"),
    "bad_prompt": (json.dumps({"prompt": ["a", "list"], "answer": "4"}).encode(), "'prompt' is a list"),
    "missing_answer": (json.dumps({"prompt": "q", "answer": None}).encode(), "no 'answer' field"),
    "not_an_object": (json.dumps(["a", "list"]).encode(), "not an object"),
}


def test_corrupted_jsonl_skip_counts_each_reason(tmp_path):
    lines = [GOOD_LINE, b""] + [line for line, _ in BAD_LINES.values()] + [GOOD_LINE]
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    loaded = load_rows(str(path))
    last = len(lines) - 1
    good = json.loads(GOOD_LINE)
    assert loaded.rows == [{"prompt": "good", "answer": "1", "index": 0, "row": good},
                           {"prompt": "good", "answer": "1", "index": last, "row": good}]
    assert loaded.skipped == {reason: 1 for reason in BAD_LINES}


@pytest.mark.parametrize("reason", sorted(BAD_LINES))
def test_corrupted_jsonl_raise_names_file_line_and_problem(tmp_path, reason):
    line, what = BAD_LINES[reason]
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b"\n".join([GOOD_LINE, b"", line, GOOD_LINE]))   # the bad row is line 3
    with pytest.raises(ValueError) as e:
        load_rows(str(path), on_error="raise")
    assert str(path) in str(e.value) and "line 3:" in str(e.value) and what in str(e.value)


def test_bad_rows_in_columnar_files_name_the_row(tmp_path):
    parquet = str(tmp_path / "d.parquet")
    pq.write_table(pa.Table.from_pylist([{"prompt": "ok", "answer": "1"}, {"prompt": "  ", "answer": "2"}]),
                   parquet)
    assert load_rows(parquet).skipped == {"empty_prompt": 1}
    with pytest.raises(ValueError, match=rf"{parquet}: row 2: 'prompt' is empty"):
        load_rows(parquet, on_error="raise")


def test_no_usable_rows_raises(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(ValueError, match="no usable rows \\(it is empty"):
        load_rows(empty)  # a pathlib.Path works too
    wrong_keys = write_jsonl(tmp_path / "d.jsonl", ROWS)
    with pytest.raises(ValueError, match=r"no usable rows \(skipped.*missing_prompt.*3.*prompt_key='problem'"):
        load_rows(wrong_keys, prompt_key="problem")


# ---------------------------------------------------------------- PromptFormatter


def test_formatter_chat_template_instruction_and_ids(tokenizer):
    fmt = PromptFormatter(tokenizer, instruction=DEEPSCALER_INSTRUCTION)
    text = fmt.text("What is 1 + 1?")
    assert text == ("<|im_start|>user\nWhat is 1 + 1? " + DEEPSCALER_INSTRUCTION + "<|im_end|>\n"
                    "<|im_start|>assistant\n")
    ids = fmt.ids("What is 1 + 1?")
    assert ids == tokenizer(text, add_special_tokens=False)["input_ids"]
    assert ids[0] == tokenizer.convert_tokens_to_ids("<|im_start|>")
    assert tokenizer.decode(ids) == text

    with_system = PromptFormatter(tokenizer, system_prompt="Be brief.").text("q")
    assert with_system.startswith("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nq<|im_end|>")


def test_formatter_raw_text_and_missing_template(tokenizer):
    raw = PromptFormatter(tokenizer, instruction="Box it.", use_chat_template=False)
    assert raw.text("q") == "q Box it."
    assert raw.ids("q") == tokenizer("q Box it.", add_special_tokens=False)["input_ids"]
    assert PromptFormatter(tokenizer, use_chat_template=False).text("q") == "q"

    bare = PreTrainedTokenizerFast(tokenizer_object=tokenizer.backend_tokenizer)
    assert not bare.chat_template
    with pytest.raises(ValueError, match="no chat template.*use_chat_template=False"):
        PromptFormatter(bare).text("q")
    with pytest.raises(ValueError, match="system_prompt"):
        PromptFormatter(bare, use_chat_template=False, system_prompt="s")


# ---------------------------------------------------------------- PromptDataset


def test_dataset_formats_every_row_and_skips_too_long(tokenizer):
    fmt = PromptFormatter(tokenizer, instruction=DEEPSCALER_INSTRUCTION)
    rows = expected(ROWS) + [{"prompt": "long " * 200, "answer": "0", "index": 3}]
    full = PromptDataset(rows, fmt)
    assert len(full) == 4 and full.num_too_long == 0
    for i, ex in enumerate(full.examples):
        assert (ex.index, ex.prompt, ex.answer) == (i, rows[i]["prompt"], rows[i]["answer"])
        assert ex.text == fmt.text(ex.prompt) and ex.input_ids == fmt.ids(ex.prompt)

    limit = max(len(ex.input_ids) for ex in full.examples[:3])
    kept = PromptDataset(rows, fmt, max_prompt_tokens=limit)
    assert len(kept) == 3 and kept.num_too_long == 1
    assert [kept[i].index for i in range(3)] == [0, 1, 2]

    shortest = min(len(ex.input_ids) for ex in full.examples)
    with pytest.raises(ValueError, match="no usable prompts: 4 rows, 4 too long for max_prompt_tokens="):
        PromptDataset(rows, fmt, max_prompt_tokens=shortest - 1)
    with pytest.raises(ValueError, match="max_prompt_tokens"):
        PromptDataset(rows, fmt, max_prompt_tokens=0)


def test_dataset_progress_bar_path(tokenizer):
    fmt = PromptFormatter(tokenizer, use_chat_template=False)
    ds = PromptDataset(expected(ROWS), fmt, progress=True)
    assert [ex.input_ids for ex in ds.examples] == [fmt.ids(r["prompt"]) for r in ROWS]


# ---------------------------------------------------------------- PromptSampler


def epoch_batches(sampler, count):
    return [sampler.next_batch() for _ in range(count)]


def test_sampler_epochs_are_permutations_that_differ():
    s = PromptSampler(10, 3, seed=1, drop_last=False)
    epochs = [epoch_batches(s, 4) for _ in range(3)]   # 3 + 3 + 3 + 1 per epoch
    for batches in epochs:
        assert [len(b) for b in batches] == [3, 3, 3, 1]
        assert sorted(sum(batches, [])) == list(range(10))
    assert len({tuple(sum(b, [])) for b in epochs}) == 3
    assert s.epoch == 2 and s.position == 10

    d = PromptSampler(10, 3, seed=1)                   # drop_last: the tail of 1 is skipped
    for _ in range(3):
        flat = sum(epoch_batches(d, 3), [])
        assert len(set(flat)) == 9 and set(flat) <= set(range(10))
    assert d.epoch == 2

    ordered = PromptSampler(5, 2, shuffle=False, drop_last=False)
    assert epoch_batches(ordered, 4) == [[0, 1], [2, 3], [4], [0, 1]]


def test_sampler_is_reproducible_per_seed():
    a, b, c = (PromptSampler(50, 8, seed=s) for s in (7, 7, 8))
    seq_a, seq_b, seq_c = (epoch_batches(s, 20) for s in (a, b, c))
    assert seq_a == seq_b
    assert seq_a != seq_c


def test_sampler_resumes_mid_epoch_exactly():
    original = PromptSampler(23, 4, seed=3)
    epoch_batches(original, 7)                          # 5 per epoch: mid-way through epoch 1
    state = original.state_dict()
    assert (state["epoch"], state["position"]) == (1, 8)
    resumed = PromptSampler(23, 4, seed=3)
    resumed.load_state_dict(json.loads(json.dumps(state)))  # survives a JSON round trip
    assert (resumed.epoch, resumed.position) == (1, 8)
    assert epoch_batches(resumed, 12) == epoch_batches(original, 12)

    with pytest.raises(ValueError, match="num_examples=23 \\(now 24\\)"):
        PromptSampler(24, 4, seed=3).load_state_dict(state)
    with pytest.raises(ValueError, match="cursor"):
        PromptSampler(23, 4, seed=3).load_state_dict({**state, "position": 99})


@pytest.mark.parametrize("args, kwargs", [((0, 1), {}), ((5, 0), {}), ((3, 4), {}), ((-1, 1), {})])
def test_sampler_bad_args_raise(args, kwargs):
    with pytest.raises(ValueError):
        PromptSampler(*args, **kwargs)


def test_sampler_batch_larger_than_data_without_drop_last():
    s = PromptSampler(3, 5, seed=0, drop_last=False)
    first, second = s.next_batch(), s.next_batch()
    assert sorted(first) == sorted(second) == [0, 1, 2]
