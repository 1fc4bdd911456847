"""Bring-your-own data: prompts as chat messages (verl's parquet, TRL's conversational jsonl)
that reach the chat template intact, dotted keys into nested fields, key auto-pick, whole rows
kept, any Hub dataset through ``datasets.load_dataset`` (never the network here), and
``chat_template_kwargs``."""
import copy
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import transformers
import yaml

from siri import Trainer, load_config
from siri.config import ConfigError
from siri.data import (PROMPT_FILE, PromptDataset, PromptFormat, PromptFormatter, load_prompt_dataset, load_rows,
                       resolve_prompt_format, rows_from_records, saved_prompt_format)
from siri.models.tiny_lm import build_tokenizer

from training_run import problems

try:
    import datasets
except ImportError:  # an optional extra (siri[data]); the GPU machine lacks it
    datasets = None
needs_datasets = pytest.mark.skipif(datasets is None,
                                    reason="the optional 'datasets' package is not installed (pip install siri[data])")

# renders enable_thinking, so a test can see the kwargs reach the template
THINKING_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n"
    "{% if enable_thinking is defined and not enable_thinking %}<think></think>{% endif %}{% endif %}")
SYSTEM = "Be brief."
INSTRUCTION = "Answer in \\boxed{}."        # the workspace config's data.instruction


def verl_records(rows):
    """verl's math parquet layout: chat prompt, nested ground truth, extra columns."""
    return [{"data_source": "tiny/add", "prompt": [{"role": "system", "content": SYSTEM},
                                                   {"role": "user", "content": r["prompt"]}],
             "ability": "math", "reward_model": {"ground_truth": r["answer"], "style": "rule"},
             "extra_info": {"index": i, "split": "train"}} for i, r in enumerate(rows)]


def trl_records(rows):
    """TRL's conversational prompt-only layout with a reference column."""
    return [{"prompt": [{"role": "user", "content": r["prompt"]}], "solution": r["answer"]} for r in rows]


@pytest.fixture(scope="module")
def tokenizer():
    tok = build_tokenizer([r["prompt"] for r in problems(8, seed=0)] + [SYSTEM, INSTRUCTION, "system user"], 320)
    tok.chat_template = THINKING_TEMPLATE
    return tok


@pytest.fixture
def template_calls(monkeypatch):
    """Every ``apply_chat_template`` call as ``(messages as received, keyword arguments)``."""
    calls = []
    original = transformers.PreTrainedTokenizerBase.apply_chat_template

    def spy(self, conversation, *args, **kwargs):
        calls.append((copy.deepcopy(conversation), dict(kwargs)))
        return original(self, conversation, *args, **kwargs)

    monkeypatch.setattr(transformers.PreTrainedTokenizerBase, "apply_chat_template", spy)
    return calls


def train_two_steps(workspace, run_dir, train, *overrides):
    cfg = load_config(workspace / "config.yaml", [f"trainer.run_dir={run_dir}", "trainer.steps=2",
                                                  f"data.train={train}", "data.max_prompt_tokens=128", *overrides])
    trainer = Trainer(cfg)
    result = trainer.fit()
    assert result["checkpoint"] == str(run_dir / "checkpoints" / "step_2")
    return trainer


def rollout_answers(run_dir):
    return {json.loads(line)["answer"] for step in (0, 1)
            for line in (run_dir / "rollouts" / f"step_{step}.jsonl").open()}


# ---------------------------------------------------------------- training on message-list datasets


def test_verl_parquet_trains_with_its_messages_intact(workspace, tmp_path, template_calls):
    rows = problems(8, seed=5)
    records = verl_records(rows)
    path = tmp_path / "verl.parquet"
    pq.write_table(pa.Table.from_pylist(records), path)
    trainer = train_two_steps(workspace, tmp_path / "run", path, "data.chat_template_kwargs={enable_thinking: false}")

    report = trainer.data_report
    assert (report["prompt_key"], report["answer_key"]) == ("prompt", "reward_model.ground_truth")
    assert report["usable_prompts"] == len(rows) and report["skipped_too_long"] == 0
    example = trainer.dataset[0]
    assert example.row == records[0] and example.prompt == records[0]["prompt"]    # untouched by formatting
    assert example.answer == rows[0]["answer"]
    assert example.text.endswith("<|im_start|>assistant\n")

    assert len(template_calls) >= len(rows)
    for messages, kwargs in template_calls:
        assert [m["role"] for m in messages] == ["system", "user"]
        assert messages[0]["content"] == SYSTEM
        assert messages[1]["content"] in {f"{r['prompt']} {INSTRUCTION}" for r in rows}
        assert kwargs["enable_thinking"] is False and kwargs["add_generation_prompt"] is True
    assert rollout_answers(tmp_path / "run") <= {r["answer"] for r in rows}
    saved = json.loads((tmp_path / "run" / "checkpoints" / "step_2" / PROMPT_FILE).read_text())
    assert saved["chat_template_kwargs"] == {"enable_thinking": False}


def test_trl_conversational_jsonl_trains_with_the_system_prompt_put_first(workspace, tmp_path, template_calls):
    rows = problems(8, seed=6)
    path = tmp_path / "trl.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in trl_records(rows)))
    trainer = train_two_steps(workspace, tmp_path / "run", path, f"data.system_prompt={SYSTEM}")

    assert (trainer.data_report["prompt_key"], trainer.data_report["answer_key"]) == ("prompt", "solution")
    assert trainer.dataset[0].row == trl_records(rows)[0]
    assert template_calls
    for messages, kwargs in template_calls:
        assert messages[0] == {"role": "system", "content": SYSTEM}
        assert messages[1]["role"] == "user" and messages[1]["content"].endswith(f"? {INSTRUCTION}")
        assert "enable_thinking" not in kwargs
    assert rollout_answers(tmp_path / "run") <= {r["answer"] for r in rows}


# ---------------------------------------------------------------- formatting message lists


def test_message_lists_keep_roles_and_get_the_instruction_on_the_last_user_turn(tokenizer):
    chat = [{"role": "system", "content": "Own system."}, {"role": "user", "content": "First?"},
            {"role": "assistant", "content": "Yes.", "name": "bot"}, {"role": "user", "content": "Second?"}]
    original = copy.deepcopy(chat)
    fmt = PromptFormatter(tokenizer, instruction="Box it.", system_prompt="Config system.")
    assert fmt.messages(chat) == [chat[0], chat[1], chat[2], {"role": "user", "content": "Second? Box it."}]
    assert chat == original                                 # the row's prompt is not modified
    assert fmt.text(chat) == ("<|im_start|>system\nOwn system.<|im_end|>\n<|im_start|>user\nFirst?<|im_end|>\n"
                              "<|im_start|>assistant\nYes.<|im_end|>\n<|im_start|>user\nSecond? Box it.<|im_end|>\n"
                              "<|im_start|>assistant\n")
    assert fmt.ids(chat) == tokenizer(fmt.text(chat), add_special_tokens=False)["input_ids"]
    # without a system message of its own, the configured one goes first
    assert fmt.messages(chat[1:2])[0] == {"role": "system", "content": "Config system."}
    # a string prompt formats as before
    assert fmt.text("Q?") == ("<|im_start|>system\nConfig system.<|im_end|>\n<|im_start|>user\nQ? Box it.<|im_end|>\n"
                              "<|im_start|>assistant\n")


def test_message_lists_need_the_chat_template(tokenizer):
    raw = PromptFormatter(tokenizer, use_chat_template=False)
    assert raw.text("q") == "q"
    with pytest.raises(ValueError, match="chat messages needs the chat template: set use_chat_template=True"):
        raw.text([{"role": "user", "content": "q"}])
    with pytest.raises(ValueError, match="the prompt is a list of messages with no 'user' message"):
        PromptFormatter(tokenizer).text([{"role": "system", "content": "s"}])


def test_chat_template_kwargs_reach_the_template(tokenizer):
    plain = PromptFormatter(tokenizer).text("q")
    off = PromptFormatter(tokenizer, chat_template_kwargs={"enable_thinking": False})
    assert off.text("q") == plain + "<think></think>"
    assert off.text([{"role": "user", "content": "q"}]) == plain + "<think></think>"
    for bad, match in (({1: True}, "must be a mapping with string keys"), ([1], "must be a mapping"),
                       ({"tokenize": True}, r"must not set \['tokenize'\]")):
        with pytest.raises(ValueError, match=f"chat_template_kwargs {match}"):
            PromptFormatter(tokenizer, chat_template_kwargs=bad)


def test_chat_template_kwargs_are_saved_with_the_format(tmp_path):
    fmt = PromptFormat("Box it.", chat_template_kwargs={"enable_thinking": False})
    fmt.save(tmp_path)
    loaded = saved_prompt_format(tmp_path)
    assert loaded.chat_template_kwargs == {"enable_thinking": False} and loaded.instruction == "Box it."
    assert resolve_prompt_format(tmp_path, PromptFormat(), instruction="x").chat_template_kwargs == \
        {"enable_thinking": False}
    # a file written before the field existed still loads
    (tmp_path / PROMPT_FILE).write_text(json.dumps({"instruction": "i", "use_chat_template": True,
                                                    "system_prompt": None}))
    assert saved_prompt_format(tmp_path).chat_template_kwargs is None
    # a checkpoint without the file is read through its run's config.yaml
    step = tmp_path / "run" / "checkpoints" / "step_3"
    step.mkdir(parents=True)
    (tmp_path / "run" / "config.yaml").write_text(yaml.safe_dump(
        {"data": {"chat_template_kwargs": {"enable_thinking": True}}}))
    assert saved_prompt_format(step).chat_template_kwargs == {"enable_thinking": True}


def test_chat_template_kwargs_config_errors_name_the_key(tmp_path):
    train = tmp_path / "d.jsonl"
    train.write_text('{"prompt": "q", "answer": "1"}\n')
    for value, match in (("5", "'data.chat_template_kwargs' must be a mapping, got 5"),
                         ("{1: true}", "'data.chat_template_kwargs' must be a mapping with string keys"),
                         ("{add_generation_prompt: false}", "'data.chat_template_kwargs' must not set")):
        with pytest.raises(ConfigError, match=match):
            load_config(None, [f"data.train={train}", f"data.chat_template_kwargs={value}"])
    cfg = load_config(None, [f"data.train={train}", "data.chat_template_kwargs={enable_thinking: false}"])
    assert cfg.data.chat_template_kwargs == {"enable_thinking": False}


# ---------------------------------------------------------------- bad message lists


BAD_MESSAGES = {  # prompt -> (reason, what the raised message says)
    "empty": ([], "empty_prompt", "'prompt' is an empty list of messages"),
    "strings": (["hi"], "bad_prompt", "'prompt' is a list, but item 1 is a str"),
    "no content": ([{"role": "user"}], "bad_prompt", "message 1 has no string 'content'"),
    "number content": ([{"role": "user", "content": 5}], "bad_prompt", "message 1 has no string 'content'"),
    "no role": ([{"content": "q"}], "bad_prompt", "message 1 has no string 'role'"),
    "no user": ([{"role": "system", "content": "s"}], "bad_prompt", "no 'user' message"),
    "blank": ([{"role": "user", "content": "  "}], "empty_prompt", "contents are all empty"),
    "a dict": ({"role": "user", "content": "q"}, "bad_prompt", "'prompt' is a dict, not a string or a list"),
}


def test_bad_message_lists_are_skipped_by_reason(tmp_path):
    good = {"prompt": [{"role": "user", "content": "q"}], "answer": "1"}
    records = [good] + [{"prompt": p, "answer": "1"} for p, _, _ in BAD_MESSAGES.values()]
    path = tmp_path / "chat.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    loaded = load_rows(path)
    assert [r["prompt"] for r in loaded.rows] == [good["prompt"]]
    expected = {}
    for _, reason, _ in BAD_MESSAGES.values():
        expected[reason] = expected.get(reason, 0) + 1
    assert loaded.skipped == expected


@pytest.mark.parametrize("name", sorted(BAD_MESSAGES))
def test_bad_message_lists_raise_naming_the_line(tmp_path, name):
    prompt, _, what = BAD_MESSAGES[name]
    path = tmp_path / "chat.jsonl"
    path.write_text(json.dumps({"prompt": "fine", "answer": "1"}) + "\n" + json.dumps({"prompt": prompt, "answer": "1"}))
    with pytest.raises(ValueError) as e:
        load_rows(path, on_error="raise")
    assert f"{path}: line 2: " in str(e.value) and what in str(e.value)


# ---------------------------------------------------------------- dotted keys, auto-pick, whole rows


NESTED = [{"data": {"q": "What is 2 + 2?"}, "meta": {"gt": 4, "note": "easy"}, "id": 7},
          {"data": {"q": "What is 3 + 3?"}, "meta": {"gt": 6, "note": "easy"}, "id": 8},
          {"data": {"q": "What is 4 + 4?"}, "meta": {"gt": None, "note": "no answer"}, "id": 9}]


def nested_sources(tmp_path):
    jsonl = tmp_path / "nested.jsonl"
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in NESTED))
    parquet = tmp_path / "nested.parquet"
    pq.write_table(pa.Table.from_pylist(NESTED), parquet)
    sources = [jsonl, parquet]
    if datasets is not None:
        saved = tmp_path / "nested_saved"
        datasets.Dataset.from_list(NESTED).save_to_disk(str(saved))
        sources.append(saved)
    return sources


def test_dotted_keys_reach_nested_fields_in_every_format(tmp_path):
    for source in nested_sources(tmp_path):
        loaded = load_rows(source, prompt_key="data.q", answer_key="meta.gt")
        assert [(r["prompt"], r["answer"], r["index"]) for r in loaded.rows] == [
            ("What is 2 + 2?", "4", 0), ("What is 3 + 3?", "6", 1)], source
        assert [r["row"] for r in loaded.rows] == NESTED[:2], source      # every column, nested as written
        assert loaded.skipped == {"missing_answer": 1}
        assert loaded.describe_keys() == "prompt from 'data.q', answer from 'meta.gt'"
        with pytest.raises(ValueError, match="row 3: no 'meta.gt' field|line 3: no 'meta.gt' field"):
            load_rows(source, prompt_key="data.q", answer_key="meta.gt", on_error="raise")
    parquet = tmp_path / "nested.parquet"
    with pytest.raises(ValueError, match=r"no column 'meta.missing'; it has \['data', 'meta', 'id'\]"):
        load_rows(parquet, prompt_key="data.q", answer_key="meta.missing")
    # a field literally named with a dot wins over the nested path
    literal = rows_from_records([{"a.b": "flat", "a": {"b": "nested"}, "answer": "1"}], prompt_key="a.b")
    assert literal.rows[0]["prompt"] == "flat"


def test_keys_are_picked_from_the_usual_names(tmp_path):
    verl = tmp_path / "verl.parquet"
    pq.write_table(pa.Table.from_pylist(verl_records(problems(2, seed=1))), verl)
    loaded = load_rows(verl)
    assert (loaded.prompt_key, loaded.answer_key) == ("prompt", "reward_model.ground_truth")
    assert loaded.rows[0]["row"]["extra_info"] == {"index": 0, "split": "train"}

    for record, keys in (({"problem": "p", "solution": "1", "answer": "2"}, ("problem", "answer")),
                         ({"question": "p", "ground_truth": 3}, ("question", "ground_truth")),
                         ({"question": "p", "reward_model": {"ground_truth": "4"}}, ("question",
                                                                                    "reward_model.ground_truth"))):
        jsonl = tmp_path / "pick.jsonl"
        jsonl.write_text(json.dumps(record) + "\n")
        picked = load_rows(jsonl)
        assert (picked.prompt_key, picked.answer_key) == keys, record
        assert rows_from_records([record]).rows == picked.rows

    jsonl.write_text(json.dumps({"text": "p", "label": "1"}) + "\n")
    with pytest.raises(ValueError, match=r"no column 'prompt' \(nor any of \['problem', 'question'\]\); "
                                         r"it has \['text', 'label'\] \(set prompt_key\)"):
        load_rows(jsonl)
    with pytest.raises(ValueError, match=r"no column 'answer' .*'reward_model.ground_truth'.*\(set answer_key\)"):
        load_rows(jsonl, prompt_key="text")
    assert load_rows(jsonl, prompt_key="text", answer_key="label").rows[0]["answer"] == "1"


@needs_datasets
def test_rows_from_a_dataset_object():
    ds = datasets.Dataset.from_list(trl_records(problems(3, seed=2)))
    loaded = rows_from_records(ds, source="my set")
    assert (loaded.prompt_key, loaded.answer_key, loaded.source) == ("prompt", "solution", "my set")
    assert [r["row"] for r in loaded.rows] == trl_records(problems(3, seed=2))


def test_prompt_examples_carry_the_row(tokenizer):
    records = trl_records(problems(2, seed=3))
    loaded = rows_from_records(records)
    dataset = PromptDataset(loaded.rows, PromptFormatter(tokenizer))
    assert [e.row for e in dataset.examples] == records
    assert [e.prompt for e in dataset.examples] == [r["prompt"] for r in records]
    # rows given without a record still work
    bare = PromptDataset([{"prompt": "q", "answer": "1"}], PromptFormatter(tokenizer))
    assert bare[0].row == {}


# ---------------------------------------------------------------- any Hub dataset


@needs_datasets
def test_other_hub_names_go_to_load_dataset_with_the_subset(monkeypatch, tmp_path):
    calls = []
    records = [{"question": "What is 1 + 1?", "answer": "2"}]

    def fake_load_dataset(*args, **kwargs):
        calls.append((args, kwargs))
        return datasets.Dataset.from_list(records)

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    loaded = load_rows("someone/gsm-like", subset="main", split="test")
    assert calls == [(("someone/gsm-like", "main"), {"split": "test"})]
    assert loaded.rows == [{"prompt": "What is 1 + 1?", "answer": "2", "index": 0, "row": records[0]}]
    assert "someone/gsm-like" in loaded.source and loaded.prompt_key == "question"
    load_rows("someone/gsm-like")
    assert calls[-1] == (("someone/gsm-like", None), {"split": "train"})
    load_rows("aime24", subset="other", prompt_key="question")   # a named dataset's config can be replaced too
    assert calls[-1] == (("HuggingFaceH4/aime_2024", "other"), {"split": "train"})

    # the training config's data.subset reaches it, and a Hub name passes the file check
    cfg = load_config(None, ["data.train=someone/gsm-like", "data.subset=main", "data.use_chat_template=false"])
    dataset, report = load_prompt_dataset(cfg.data, build_tokenizer(["What is 1 + 1?"], 300))
    assert calls[-1] == (("someone/gsm-like", "main"), {"split": "train"})
    assert (len(dataset), report["prompt_key"], report["answer_key"]) == (1, "question", "answer")


@needs_datasets
def test_hub_names_offline_and_missing_local_paths(monkeypatch, tmp_path):
    calls = []

    def offline(*args, **kwargs):
        calls.append(args)
        raise ConnectionError("no network\nsecond line")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(OSError) as e:
        load_rows("someone/thing", subset="main")
    message = str(e.value)
    assert "\n" not in message
    assert "'someone/thing' (subset main, split train)" in message and "ConnectionError: no network" in message
    assert "data.train=FILE" in message and "--data FILE" in message
    monkeypatch.chdir(tmp_path)
    for missing in ("./nope", "nope.jsonl", "data/nope.parquet", "~/siri-surely-missing.jsonl", str(tmp_path / "x")):
        with pytest.raises(FileNotFoundError, match="no such file or directory"):
            load_rows(missing)
        with pytest.raises(ConfigError, match="'data.train': no such file or directory"):
            load_config(None, [f"data.train={missing}"])
    assert calls == [("someone/thing", "main")]
