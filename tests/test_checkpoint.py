"""Atomic checkpoints: complete ones are found, incomplete ones never loaded, pruning keeps extrema;
the top level is a model directory (trainer state in trainer_state/), and checkpoints of the
earlier layout (trainer_state.pt at the top) still load and resume exactly."""
import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

from siri import Trainer, load_config
from siri.train import checkpoint
from siri.train.metrics import read_metrics
from tiny_models import tiny_model
from training_run import deterministic, weights


@pytest.fixture(scope="module")
def model():
    return tiny_model(layers=1)


def save(run_dir, step, model, kinds=("periodic",)):
    return checkpoint.save_checkpoint(run_dir, step, model, None, {"step": step, "x": torch.arange(3)},
                                      {"kinds": list(kinds), "cap": 7})


def test_save_then_load_round_trips(tmp_path, model):
    path = save(tmp_path, 3, model)
    assert path == tmp_path / "checkpoints" / "step_3"
    assert checkpoint.read_info(path) == {"step": 3, "kinds": ["periodic"], "cap": 7}
    assert checkpoint.load_state(path)["x"].tolist() == [0, 1, 2]
    weights = load_file(path / "model.safetensors")
    for name, p in model.state_dict().items():
        if name in weights:
            assert torch.equal(weights[name], p)
    assert not [p for p in (tmp_path / "checkpoints").iterdir() if p.name.startswith(".")]
    # the top level is a model directory: the trainer state sits in its own subdirectory
    assert (path / "trainer_state" / "state.pt").is_file() and not (path / checkpoint.LEGACY_STATE).exists()
    assert {p.name for p in path.iterdir() if p.is_dir()} == {"trainer_state"}
    assert not [p.name for p in path.iterdir() if p.suffix == ".pt"]


def to_legacy_layout(path):
    """Rewrite a checkpoint in the earlier layout: trainer_state.pt at the top, no subdirectory."""
    (path / checkpoint.STATE).rename(path / checkpoint.LEGACY_STATE)
    (path / checkpoint.STATE_DIR).rmdir()


def test_checkpoints_of_the_earlier_layout_are_read(tmp_path, model):
    path = save(tmp_path, 3, model)
    to_legacy_layout(path)
    assert checkpoint.state_file(path) == path / "trainer_state.pt"
    assert checkpoint.read_info(path)["step"] == 3 and checkpoint.latest_checkpoint(tmp_path) == path
    assert checkpoint.load_state(path)["x"].tolist() == [0, 1, 2]
    assert checkpoint.load_for_resume(path, 3)["step"] == 3
    (path / checkpoint.LEGACY_STATE).unlink()
    assert checkpoint.state_file(path) is None and checkpoint.read_info(path) is None
    assert checkpoint.read_marker(path)["step"] == 3      # the marker alone: a model, not resumable


def test_incomplete_checkpoints_are_ignored(tmp_path, model):
    save(tmp_path, 2, model)
    newest = save(tmp_path, 4, model)
    # a crash while writing step 6: the temp dir exists, the final name does not
    shutil.copytree(newest, tmp_path / "checkpoints" / ".tmp-step_6-999999")
    # a step dir whose marker is missing or torn (not produced by save_checkpoint, but guard anyway)
    torn = tmp_path / "checkpoints" / "step_8"
    shutil.copytree(newest, torn)
    (torn / checkpoint.MARKER).write_text('{"step": 8')
    no_state = tmp_path / "checkpoints" / "step_9"
    shutil.copytree(newest, no_state)
    (no_state / checkpoint.STATE).unlink()
    assert checkpoint.latest_checkpoint(tmp_path) == newest
    assert [s for s, _ in checkpoint.list_checkpoints(tmp_path)] == [2, 4]
    with pytest.raises(ValueError, match="not a complete siri checkpoint"):
        checkpoint.load_state(torn)
    assert checkpoint.latest_checkpoint(tmp_path / "empty") is None


def test_prune_keeps_the_last_periodic_and_every_extremum(tmp_path, model):
    for step, kinds in [(1, ["peak"]), (2, ["periodic"]), (3, ["periodic", "trough"]), (4, ["periodic"]),
                        (5, ["periodic"]), (6, ["periodic"]), (7, ["final"])]:
        save(tmp_path, step, model, kinds)
    dead = tmp_path / "checkpoints" / ".tmp-step_9-999999"
    dead.mkdir()
    deleted = checkpoint.prune(tmp_path, keep_last=2)
    assert [s for s, _ in checkpoint.list_checkpoints(tmp_path)] == [1, 3, 5, 6, 7]
    assert dead in deleted and not dead.exists()


def test_resaving_a_step_replaces_it(tmp_path, model):
    save(tmp_path, 1, model, ["periodic"])
    path = save(tmp_path, 1, model, ["final"])
    assert json.loads((path / checkpoint.MARKER).read_text())["kinds"] == ["final"]
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["step_1"]


def test_load_for_resume_reads_the_whole_checkpoint_or_says_why_not(tmp_path, model):
    """What every rank checks before the ranks agree to resume: the checkpoint is complete, of
    the chosen step, and its weights and trainer state can be read; else one clear line."""
    path = save(tmp_path, 3, model)
    assert checkpoint.latest_step(tmp_path) == 3 and checkpoint.latest_step(tmp_path / "empty") is None
    assert checkpoint.load_for_resume(path, 3)["x"].tolist() == [0, 1, 2]
    assert checkpoint.load_for_resume(path)["step"] == 3
    with pytest.raises(ValueError, match="holds step 3, not step 5"):
        checkpoint.load_for_resume(path, 5)
    with pytest.raises(ValueError, match="step_9 does not exist"):
        checkpoint.load_for_resume(tmp_path / "checkpoints" / "step_9", 9)
    cases = {"torn weights": ("model.safetensors", b"\x08\x00\x00\x00\x00\x00\x00\x00{"),
             "torn state": (checkpoint.STATE, b"not a torch file")}
    for name, (file, data) in cases.items():
        broken = tmp_path / name / "checkpoints" / "step_3"
        shutil.copytree(path, broken)
        (broken / file).write_bytes(data)
        with pytest.raises(ValueError, match="cannot be read") as e:
            checkpoint.load_for_resume(broken, 3)
        assert str(broken) in str(e.value) and "\n" not in str(e.value), name
    missing = tmp_path / "missing" / "checkpoints" / "step_3"
    shutil.copytree(path, missing)
    (missing / "model.safetensors").unlink()
    with pytest.raises(ValueError, match="no config.json or no"):
        checkpoint.load_for_resume(missing, 3)


def test_a_checkpoint_of_the_earlier_layout_resumes_exactly(workspace, tmp_path):
    """Two steps straight through, against one step, the step_1 checkpoint rewritten in the
    earlier layout, then a resume (trainer.resume=auto) for the second step."""
    def run(run_dir, steps):
        cfg = load_config(workspace / "config.yaml", [f"trainer.run_dir={run_dir}", f"trainer.steps={steps}",
                                                      "trainer.save_rollouts=false", "trainer.save_every=1",
                                                      "trainer.keep_last=4"])
        seen = []
        Trainer(cfg, callbacks=[seen.append]).fit()
        return [m["step"] for m in seen]

    assert run(tmp_path / "straight", 2) == [0, 1]
    assert run(tmp_path / "resumed", 1) == [0]
    step_1 = tmp_path / "resumed" / "checkpoints" / "step_1"
    to_legacy_layout(step_1)
    assert run(tmp_path / "resumed", 2) == [1], "it did not resume from the earlier layout's checkpoint"
    straight, resumed = (tmp_path / name / "checkpoints" / "step_2" for name in ("straight", "resumed"))
    a, b = weights(straight), weights(resumed)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], weights(step_1)[k]) for k in a), "the resumed step changed nothing"
    assert deterministic(read_metrics(tmp_path / "resumed" / "metrics.jsonl")) == \
        deterministic(read_metrics(tmp_path / "straight" / "metrics.jsonl"))
    assert (resumed / checkpoint.STATE).is_file() and (step_1 / checkpoint.LEGACY_STATE).is_file()
