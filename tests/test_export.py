"""`siri export`: a trained checkpoint becomes a model directory that transformers loads and
generates with, in the asked dtype, with the training stop tokens and prompt format, and
without the trainer state; bad input gives one-line errors and a failed export leaves nothing."""
import json
import shutil

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from siri import Trainer, load_config
from siri.cli import main
from siri.export import export_checkpoint
from siri.models.loading import load_tokenizer, stop_token_ids
from siri.train import checkpoint

EXPECTED_FILES = {"config.json", "generation_config.json", "model.safetensors", "siri_prompt.json",
                  "tokenizer.json", "tokenizer_config.json", "chat_template.jinja"}


@pytest.fixture(scope="module")
def run_dir(workspace, tmp_path_factory):
    """Two training steps on the tiny model: checkpoints step_1 and step_2."""
    run_dir = tmp_path_factory.mktemp("export") / "run"
    cfg = load_config(workspace / "config.yaml", [f"trainer.run_dir={run_dir}", "trainer.steps=2",
                                                  "trainer.save_rollouts=false"])
    Trainer(cfg).fit()
    return run_dir


def test_the_export_loads_and_generates_with_transformers(run_dir, workspace, tmp_path):
    ckpt = run_dir / "checkpoints" / "step_2"
    out = tmp_path / "model"
    result = export_checkpoint(ckpt, out)
    # the run trained with model.dtype auto (the marker says so): bfloat16, the GPU compute dtype
    assert checkpoint.read_marker(ckpt)["compute_dtype"] == "auto"
    assert result.dtype == "bfloat16" and "auto" in result.dtype_source and result.checkpoint == ckpt
    assert set(result.files) == EXPECTED_FILES and {p.name for p in out.iterdir()} == EXPECTED_FILES
    assert not list(out.parent.glob(".tmp-*")) and not list(out.parent.glob(".old-*"))

    saved, exported = load_file(ckpt / "model.safetensors"), load_file(out / "model.safetensors")
    assert saved.keys() == exported.keys() and {t.dtype for t in saved.values()} == {torch.float32}
    for name, tensor in saved.items():
        assert exported[name].dtype == torch.bfloat16 and torch.equal(exported[name], tensor.to(torch.bfloat16))
    model = AutoModelForCausalLM.from_pretrained(out, dtype="auto")
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert json.loads((out / "config.json").read_text())["dtype"] == "bfloat16"
    state = model.state_dict()
    assert all(torch.equal(state[name], exported[name]) for name in exported)

    tokenizer = AutoTokenizer.from_pretrained(out)
    text = "What is 3 + 4? Let's add."
    ids = tokenizer(text, return_tensors="pt")["input_ids"]
    assert tokenizer.decode(ids[0]) == text
    trained_stops = stop_token_ids(load_tokenizer(str(workspace / "model")),
                                   AutoModelForCausalLM.from_pretrained(workspace / "model"))
    assert result.stop_token_ids == trained_stops
    eos = model.generation_config.eos_token_id
    assert sorted([eos] if isinstance(eos, int) else eos) == trained_stops
    generated = model.generate(ids, max_new_tokens=6, do_sample=False)
    assert generated.shape[1] > ids.shape[1] and torch.equal(generated[0, :ids.shape[1]], ids[0])
    assert (out / "siri_prompt.json").read_text() == (ckpt / "siri_prompt.json").read_text()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_other_dtypes_cast_the_saved_weights(run_dir, tmp_path, dtype):
    name = str(dtype).removeprefix("torch.")
    result = export_checkpoint(run_dir / "checkpoints" / "step_1", tmp_path / name, dtype=name)
    assert result.dtype == name and result.dtype_source == "asked for"
    saved, exported = load_file(run_dir / "checkpoints" / "step_1" / "model.safetensors"), \
        load_file(tmp_path / name / "model.safetensors")
    assert all(exported[k].dtype == dtype and torch.equal(exported[k], t.to(dtype)) for k, t in saved.items())
    assert json.loads((tmp_path / name / "config.json").read_text())["dtype"] == name


def test_a_run_directory_of_the_earlier_layout_exports_its_newest_checkpoint(run_dir, tmp_path):
    """trainer_state.pt at the top and no compute dtype in the marker (checkpoints written
    before both existed): the dtype comes from the config inside the trainer state, and the
    state file stays out of the export."""
    old_run = tmp_path / "old_run"
    shutil.copytree(run_dir / "checkpoints", old_run / "checkpoints")
    ckpt = old_run / "checkpoints" / "step_2"
    state = torch.load(ckpt / checkpoint.STATE, weights_only=False)
    state["config"]["model"]["dtype"] = "float32"
    torch.save(state, ckpt / checkpoint.LEGACY_STATE)
    shutil.rmtree(ckpt / checkpoint.STATE_DIR)
    marker = json.loads((ckpt / checkpoint.MARKER).read_text())
    del marker["compute_dtype"]
    (ckpt / checkpoint.MARKER).write_text(json.dumps(marker))
    assert checkpoint.latest_checkpoint(old_run) == ckpt
    result = export_checkpoint(old_run, tmp_path / "out")
    assert result.checkpoint == ckpt and "newest" in result.source and "step_2" in result.source
    assert result.dtype == "float32" and "trainer_state.pt" in result.dtype_source
    assert set(result.files) == EXPECTED_FILES
    exported, saved = load_file(tmp_path / "out" / "model.safetensors"), load_file(ckpt / "model.safetensors")
    assert all(torch.equal(exported[k], saved[k]) for k in saved)


def test_siri_export_command_and_its_errors(run_dir, tmp_path, capsys):
    out = tmp_path / "served"
    assert main(["export", str(run_dir), str(out), "--dtype", "float16"]) == 0
    printed = capsys.readouterr().out
    assert "step_2, the newest complete checkpoint" in printed and "dtype float16" in printed
    assert "weights 1/1: model.safetensors" in printed and f"wrote {out}" in printed
    assert {t.dtype for t in load_file(out / "model.safetensors").values()} == {torch.float16}

    def error(*argv):
        assert main(["export", *map(str, argv)]) == 2
        message = capsys.readouterr().err
        assert message.startswith("siri export: error: ") and message.count("\n") == 1, message
        return message

    assert "no such checkpoint or run directory" in error(tmp_path / "missing", tmp_path / "x")
    assert "neither a siri checkpoint" in error(tmp_path, tmp_path / "x")
    assert "exists and is not empty: pass --overwrite" in error(run_dir, out)
    assert "is or holds the checkpoint" in error(run_dir, run_dir, "--overwrite")
    torn = tmp_path / "torn"
    shutil.copytree(run_dir / "checkpoints" / "step_1", torn)
    (torn / checkpoint.MARKER).write_text('{"step": 1')
    assert "its siri_checkpoint.json is torn" in error(torn, tmp_path / "x")
    (tmp_path / "empty_run" / "checkpoints").mkdir(parents=True)
    assert "has no complete checkpoint" in error(tmp_path / "empty_run", tmp_path / "x")
    with pytest.raises(SystemExit) as e:
        main(["export", str(run_dir), str(tmp_path / "x"), "--dtype", "int8"])
    assert e.value.code == 2 and "invalid choice: 'int8'" in capsys.readouterr().err
    with pytest.raises(ValueError, match="dtype must be one of bfloat16, float16, float32, got 'int8'"):
        export_checkpoint(run_dir, tmp_path / "x", dtype="int8")
    assert not (tmp_path / "x").exists()

    (out / "stale.txt").write_text("from an earlier export")
    assert main(["export", str(run_dir / "checkpoints" / "step_1"), str(out), "--overwrite"]) == 0
    assert "stale.txt" not in {p.name for p in out.iterdir()} and "bfloat16" in capsys.readouterr().out


def test_a_failed_export_leaves_no_output_and_keeps_the_old_one(run_dir, tmp_path, monkeypatch):
    import siri.export

    def fail(*args):
        raise OSError("disk full")

    monkeypatch.setattr(siri.export, "_write_generation_config", fail)
    with pytest.raises(OSError, match="disk full"):
        export_checkpoint(run_dir, tmp_path / "new")
    kept = tmp_path / "kept"
    kept.mkdir()
    (kept / "config.json").write_text("{}")
    with pytest.raises(OSError, match="disk full"):
        export_checkpoint(run_dir, kept, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept"]
    assert [p.name for p in kept.iterdir()] == ["config.json"]
