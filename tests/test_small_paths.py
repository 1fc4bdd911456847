"""Small paths of siri's helpers that the larger tests do not reach: fault injection,
atomic writes, device/dtype resolution, prompt formats, progress bars, sampling-parameter
validation and the KV page pool."""
import os
import sys
import signal

import pytest

from siri.train import faults


class _Killed(Exception):
    pass


@pytest.fixture
def kills(monkeypatch):
    """os.kill recorded (and turned into an exception) instead of killing the test process."""
    seen = []

    def fake_kill(pid, sig):
        seen.append((pid, sig))
        raise _Killed

    monkeypatch.setattr(faults, "_reached", {})
    monkeypatch.setattr(os, "kill", fake_kill)
    return seen


def test_fault_point_does_nothing_without_siri_fault(kills, monkeypatch):
    monkeypatch.delenv("SIRI_FAULT", raising=False)
    for _ in range(3):
        faults.fault_point("update")
    assert kills == [] and faults._reached == {}


def test_fault_point_kills_on_the_nth_visit_of_its_point_only(kills, monkeypatch):
    monkeypatch.setenv("SIRI_FAULT", "update:3")
    monkeypatch.delenv("RANK", raising=False)
    calls = []
    faults.fault_point("rollout", lambda: calls.append("rollout"))      # another point: not counted
    faults.fault_point("update", lambda: calls.append("update"))
    faults.fault_point("update", lambda: calls.append("update"))
    assert kills == [] and calls == [] and faults._reached == {"update": 2}
    with pytest.raises(_Killed):
        faults.fault_point("update", lambda: calls.append("update"))
    assert calls == ["update"]                  # before_kill ran, just before the kill
    assert kills == [(os.getpid(), signal.SIGKILL)]


def test_fault_point_without_a_count_kills_on_the_first_visit(kills, monkeypatch):
    monkeypatch.setenv("SIRI_FAULT", "checkpoint_write")
    with pytest.raises(_Killed):
        faults.fault_point("checkpoint_write")
    assert len(kills) == 1


@pytest.mark.parametrize("rank, killed", [(None, False), ("0", False), ("1", True)])
def test_fault_point_with_a_rank_fires_only_in_that_rank(kills, monkeypatch, rank, killed):
    monkeypatch.setenv("SIRI_FAULT", "update:1@1")
    if rank is None:
        monkeypatch.delenv("RANK", raising=False)       # no RANK: rank 0
    else:
        monkeypatch.setenv("RANK", rank)
    if killed:
        with pytest.raises(_Killed):
            faults.fault_point("update")
    else:
        faults.fault_point("update")
    assert len(kills) == int(killed)


# ---- siri.atomic_io ------------------------------------------------------------------------

def test_a_failed_atomic_write_keeps_the_old_file_and_leaves_no_temp_file(tmp_path):
    from siri.atomic_io import write_text_atomic

    path = tmp_path / "state.json"
    write_text_atomic(path, "old")
    with pytest.raises(UnicodeEncodeError):
        write_text_atomic(path, "new \ud800")       # a lone surrogate cannot be written as UTF-8
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]
    write_text_atomic(tmp_path / "a" / "b" / "new.txt", "x")      # parents are created
    assert (tmp_path / "a" / "b" / "new.txt").read_text() == "x"


# ---- siri.models.loading -------------------------------------------------------------------

def test_cuda_without_a_visible_device_is_a_clear_error(monkeypatch):
    import torch

    from siri.models import loading as model_loading

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="^device 'cuda' was asked for, but no CUDA device is visible$"):
        model_loading.resolve_device("cuda")
    assert model_loading.resolve_device("auto") == torch.device("cpu")
    assert model_loading.resolve_device("cpu") == torch.device("cpu")


def test_cuda_with_a_device_but_a_cpu_only_build_is_a_clear_error(monkeypatch):
    import torch

    from siri.models import loading as model_loading

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(model_loading, "has_cuda_kernels", lambda: False)
    with pytest.raises(ValueError, match=r"siri was built without CUDA kernels \(reinstall with SIRI_CUDA=1\)"):
        model_loading.resolve_device("cuda")
    assert model_loading.resolve_device("auto") == torch.device("cpu")   # auto never picks unusable CUDA
    monkeypatch.setattr(model_loading, "has_cuda_kernels", lambda: True)
    assert model_loading.resolve_device("auto") == torch.device("cuda")
    assert model_loading.resolve_device("cuda") == torch.device("cuda")


def test_dtypes_resolve_per_device_and_float16_needs_cuda():
    import torch

    from siri.models.loading import resolve_dtype

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert resolve_dtype("auto", cpu) == torch.float32 and resolve_dtype("auto", cuda) == torch.bfloat16
    assert resolve_dtype("bfloat16", cpu) == torch.bfloat16 and resolve_dtype("float32", cuda) == torch.float32
    assert resolve_dtype("float16", cuda) == torch.float16
    with pytest.raises(ValueError, match="float16 is only supported on CUDA; use float32 or bfloat16"):
        resolve_dtype("float16", cpu)


def test_local_model_config_never_downloads(tmp_path, monkeypatch):
    from siri.models.loading import local_model_config

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert local_model_config("siri-tests/no-such-model-anywhere") is None     # a Hub id not in the cache
    (tmp_path / "broken").mkdir()
    with pytest.raises((OSError, ValueError)):     # a local directory that is not a model: the real error
        local_model_config(str(tmp_path / "broken"))
    tiny = tmp_path / "tiny"
    tiny.mkdir()
    (tiny / "config.json").write_text('{"model_type": "qwen2", "max_position_embeddings": 96}')
    assert local_model_config(str(tiny)).max_position_embeddings == 96


def test_stop_token_ids_merge_the_tokenizer_and_generation_config():
    from types import SimpleNamespace as NS

    from siri.models.loading import stop_token_ids

    def model(eos):
        return NS(generation_config=NS(eos_token_id=eos))

    assert stop_token_ids(NS(eos_token_id=5), model(7)) == [5, 7]
    assert stop_token_ids(NS(eos_token_id=5), model([9, 5, 3])) == [3, 5, 9]
    assert stop_token_ids(NS(eos_token_id=None), model(None)) == []
    assert stop_token_ids(NS(eos_token_id=2), NS()) == [2]          # a model without a generation config


def test_a_tokenizer_without_a_pad_token_pads_with_eos(tmp_path):
    from siri.models.loading import load_tokenizer
    from siri.models.tiny_lm import build_tokenizer

    tokenizer = build_tokenizer(["one two three", "four five"], vocab_size=300)
    tokenizer.pad_token = None
    assert tokenizer.pad_token_id is None and tokenizer.eos_token is not None
    tokenizer.save_pretrained(tmp_path / "tok")
    (tmp_path / "tok" / "config.json").write_text("{}")
    loaded = load_tokenizer(str(tmp_path / "tok"))
    assert loaded.pad_token == loaded.eos_token and loaded.pad_token_id == loaded.eos_token_id


# ---- siri.data.formatting -------------------------------------------------------------------

def test_prompt_format_from_a_data_config_object_and_a_dict():
    from siri.config import DataConfig
    from siri.data import PromptFormat

    fmt = PromptFormat.from_data_config(DataConfig(instruction="Box it.", use_chat_template=False,
                                                   system_prompt="Be brief."), source="cfg")
    assert fmt == PromptFormat("Box it.", use_chat_template=False, system_prompt="Be brief.", source="cfg")
    assert PromptFormat.from_data_config({"instruction": None}, source="d") == PromptFormat(None, True, None, "d", None)


def test_a_checkpoint_without_its_own_file_uses_its_runs_config(tmp_path):
    import yaml

    from siri.config import DataConfig
    from siri.data import PromptFormat, resolve_prompt_format, saved_prompt_format

    step = tmp_path / "run" / "checkpoints" / "step_4"
    step.mkdir(parents=True)
    assert saved_prompt_format(step) is None                   # no run config yet
    (tmp_path / "run" / "config.yaml").write_text(yaml.safe_dump({"data": {"use_chat_template": False}}))
    fmt = saved_prompt_format(step)
    assert fmt == PromptFormat(DataConfig.instruction, use_chat_template=False, system_prompt=None,
                               source=str(tmp_path / "run" / "config.yaml"))
    (tmp_path / "run" / "config.yaml").write_text("")          # an empty run config: the defaults
    assert saved_prompt_format(step).use_chat_template is True
    # a directory that is not under checkpoints/ does not look two levels up
    other = tmp_path / "run" / "elsewhere" / "model"
    other.mkdir(parents=True)
    assert saved_prompt_format(other) is None
    default = PromptFormat("D", source="default")
    assert resolve_prompt_format(other, default) == default
    assert resolve_prompt_format(other, default, instruction="X").source == "command line over default"


# ---- siri.progress ---------------------------------------------------------------------------

def test_progress_bar_shows_stage_and_step_results(monkeypatch):
    from rich.console import Console

    from siri import progress

    console = Console(record=True, width=200, force_terminal=False)
    monkeypatch.setattr(progress, "make_console", lambda **kwargs: console)
    bar = progress.TrainProgress(True, total=4, start=1, description="train")
    bar.stage("rollout", step=1, cap=64, phase="compress")
    assert "step 1 cap 64 compress [rollout]" in bar._bar.tasks[0].description
    bar.step_done({"step": 1, "cap": 64, "phase": "compress", "reward_mean": 0.5, "response_len_mean": 30.4,
                   "truncation_rate": 0.25})
    task = bar._bar.tasks[0]
    assert task.completed == 2 and task.description == "step 1 cap 64 compress reward 0.500 len 30 trunc 0.25"
    bar.stage("update", step=2, cap=48, phase="compress")
    assert bar._bar.tasks[0].description.endswith("[update] reward 0.500 len 30 trunc 0.25")
    bar.advance("eval 3/4")
    assert bar._bar.tasks[0].completed == 3 and bar._bar.tasks[0].description == "eval 3/4"
    bar.close()
    assert "eval 3/4" in console.export_text()


def test_a_disabled_progress_bar_does_nothing():
    from siri.progress import TrainProgress

    bar = TrainProgress(False, total=3)
    bar.stage("rollout", 0, 64, "compress")
    bar.step_done({})             # not even read
    bar.advance("x")
    bar.close()
    assert not hasattr(bar, "_bar")


def test_make_console_is_wide_when_not_a_terminal(monkeypatch):
    import io

    from siri.progress import LOG_WIDTH, make_console

    monkeypatch.delenv("COLUMNS", raising=False)
    assert make_console(file=io.StringIO()).width == LOG_WIDTH
    monkeypatch.setenv("COLUMNS", "90")
    assert make_console(file=io.StringIO()).width == 90


# ---- siri.engine.params / page_pool ----------------------------------------------------------

@pytest.mark.parametrize("kwargs, message", [
    (dict(n=0), "SamplingParams.n must be >= 1, got 0"),
    (dict(temperature=-0.5), "SamplingParams.temperature must be finite and >= 0, got -0.5"),
    (dict(temperature=float("inf")), "SamplingParams.temperature must be finite and >= 0, got inf"),
    (dict(temperature=float("nan")), "SamplingParams.temperature must be finite and >= 0, got nan"),
    (dict(top_p=0.0), r"SamplingParams.top_p must be in \(0, 1\], got 0.0"),
    (dict(top_p=1.5), r"SamplingParams.top_p must be in \(0, 1\], got 1.5"),
    (dict(top_k=-1), "SamplingParams.top_k must be >= 0, got -1"),
    (dict(max_tokens=0), "SamplingParams.max_tokens must be >= 1, got 0"),
    (dict(max_tokens=[4, 0]), "SamplingParams.max_tokens must be >= 1, got 0"),
    (dict(max_tokens=[4, 4, 4]), "SamplingParams.max_tokens has 3 caps for 2 prompts"),
    (dict(stop_token_ids=[3, 100, -1]), r"SamplingParams.stop_token_ids \[100, -1\] are outside the vocabulary "
                                        r"\[0, 100\)"),
])
def test_sampling_params_reject_bad_values(kwargs, message):
    from siri.engine.params import SamplingParams

    with pytest.raises(ValueError, match=f"^{message}$"):
        SamplingParams(**kwargs).validate(num_prompts=2, vocab_size=100)


def test_sampling_params_accept_their_edge_values():
    from siri.engine.params import SamplingParams

    params = SamplingParams(n=1, temperature=0.0, top_p=1.0, top_k=0, max_tokens=[1, 7], stop_token_ids=[0, 99])
    params.validate(num_prompts=2, vocab_size=100)
    assert params.caps(2) == [1, 7] and SamplingParams(max_tokens=5).caps(3) == [5, 5, 5]


def test_page_pool_hands_out_pages_until_exhausted_and_refcounts_shared_ones():
    import torch

    from siri.engine.page_pool import PagePool

    with pytest.raises(ValueError, match="at least one page, got num_pages=0"):
        PagePool(0, 4, 1, 1, 8, torch.float32, torch.device("cpu"))
    pool = PagePool(3, page_size=4, num_layers=2, num_kv_heads=1, head_dim=8, dtype=torch.float32,
                    device=torch.device("cpu"))
    assert pool.nbytes == 3 * PagePool.bytes_per_page(4, 2, 1, 8, torch.float32) == 3 * 2 * 2 * 4 * 8 * 4
    assert [pool.allocate() for _ in range(3)] == [0, 1, 2]
    assert pool.allocate() is None and pool.num_free == 0
    pool.share(1)
    pool.release([1])
    assert pool.num_free == 0              # still held by its other owner
    pool.release([1, 2])
    assert pool.num_free == 2 and pool.allocate() == 2
    pool.k[1][0].fill_(3.0)
    pool.v[0][0].fill_(-1.0)
    pool.copy_page(0, 2)                   # every layer's K and V of page 0
    assert bool((pool.k[1][2] == 3.0).all()) and bool((pool.v[0][2] == -1.0).all())
    assert bool((pool.k[0][2] == 0).all())


def test_release_freed_memory_on_the_cpu_calls_malloc_trim_when_there_is_a_libc(monkeypatch):
    import ctypes
    import ctypes.util

    import torch

    from siri.engine.page_pool import release_freed_memory

    trims = []

    class FakeLibc:
        def malloc_trim(self, pad):
            trims.append(pad)

    class NotGlibc:
        def __getattr__(self, name):
            raise AttributeError(name)

    monkeypatch.setattr(ctypes.util, "find_library", lambda name: "libc.so.6")
    monkeypatch.setattr(ctypes, "CDLL", lambda name: FakeLibc())
    release_freed_memory(torch.device("cpu"))
    assert trims == [0]
    monkeypatch.setattr(ctypes, "CDLL", lambda name: NotGlibc())
    release_freed_memory(torch.device("cpu"))          # no malloc_trim (musl, ...): nothing to do
    monkeypatch.setattr(ctypes.util, "find_library", lambda name: None)
    monkeypatch.setattr(ctypes, "CDLL", lambda name: pytest.fail("no libc to load"))
    release_freed_memory(torch.device("cpu"))
    release_freed_memory(torch.device("meta"))         # neither CUDA nor CPU: nothing
    assert trims == [0]
    emptied = []
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: emptied.append(True))
    release_freed_memory(torch.device("cuda"))         # CUDA: the caching allocator gives its cache back
    assert emptied == [True] and trims == [0]


# ---- siri.rewards.math_reward ----------------------------------------------------------------

def test_math_equal_basic_answers():
    from siri.rewards.math_reward import math_equal

    assert math_equal("\\frac{1}{2}", "0.5") is True
    assert math_equal("3", "4") is False
    assert math_equal(None, "4") is False and math_equal("4", None) is False
    assert math_equal("", "4") is False                     # nothing to parse


def test_math_equal_outside_the_main_thread_runs_without_alarms():
    import threading

    from siri.rewards.math_reward import math_equal

    results = []
    thread = threading.Thread(target=lambda: results.append((math_equal("2/4", "\\frac{1}{2}"),
                                                             math_equal("5", "6"))))
    thread.start()
    thread.join(60)
    assert results == [(True, False)]


def test_math_equal_turns_verifier_errors_and_timeouts_into_false(monkeypatch):
    import math_verify

    from siri.rewards.math_reward import math_equal

    class Timeout(BaseException):          # math-verify's TimeoutException is a BaseException
        pass

    def raise_(error):
        def verify(*args, **kwargs):
            raise error
        return verify

    monkeypatch.setattr(math_verify, "verify", raise_(ValueError("sympy broke")))
    assert math_equal("1", "1") is False
    monkeypatch.setattr(math_verify, "verify", raise_(Timeout()))
    assert math_equal("1", "1") is False
    monkeypatch.setattr(math_verify, "verify", raise_(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        math_equal("1", "1")


# ---- siri.data.sources ------------------------------------------------------------------------

def test_non_finite_and_non_scalar_answers_are_bad_answers(tmp_path):
    from siri.data.sources import load_rows

    path = tmp_path / "rows.jsonl"
    path.write_text('{"prompt": "a", "answer": NaN}\n{"prompt": "b", "answer": Infinity}\n'
                    '{"prompt": "c", "answer": [1, 2]}\n{"prompt": "d", "answer": true}\n'
                    '{"prompt": "e", "answer": 2.0}\n')
    loaded = load_rows(str(path))
    assert loaded.rows == [{"prompt": "e", "answer": "2", "index": 4, "row": {"prompt": "e", "answer": 2.0}}]
    assert loaded.skipped == {"bad_answer": 4}
    with pytest.raises(ValueError, match=r"rows.jsonl: line 1: 'answer' is nan"):
        load_rows(str(path), on_error="raise")
    path.write_text('{"prompt": "c", "answer": {"x": 1}}\n')
    with pytest.raises(ValueError, match=r"line 1: 'answer' is a dict, not a string or a number"):
        load_rows(str(path), on_error="raise")


def test_missing_optional_readers_name_the_pip_extra(tmp_path, monkeypatch):
    from siri.data.sources import load_rows

    parquet = tmp_path / "rows.parquet"
    parquet.write_bytes(b"")
    saved = tmp_path / "saved"
    saved.mkdir()
    (saved / "state.json").write_text("{}")
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    monkeypatch.setitem(sys.modules, "datasets", None)
    with pytest.raises(ImportError, match=r"^reading parquet needs pyarrow: pip install 'siri\[data\]'$"):
        load_rows(str(parquet))
    with pytest.raises(ImportError, match=r"needs the 'datasets' package: pip install 'siri\[data\]'$"):
        load_rows(str(saved))
    # a named dataset from the Hub: the missing package is reported with the offline hint
    with pytest.raises(OSError, match=r"could not load dataset 'aime24' .*ImportError: reading save_to_disk"):
        load_rows("aime24")
