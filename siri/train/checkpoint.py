"""Atomic training checkpoints: ``RUN_DIR/checkpoints/step_<N>/``.

A checkpoint's top level is a Hugging Face model directory (``save_pretrained``: config,
safetensors weights, generation config, tokenizer) plus the small files ``siri eval`` reads:
``siri_prompt.json`` (the prompt format) and ``siri_checkpoint.json`` (step, kinds, schedule
cap, compute dtype). What only resuming needs (optimizer moments, LR scheduler, data cursor,
RNG states, config: about 8 bytes per parameter more than the fp32 weights) lives in
``trainer_state/state.pt``, so the directory loads and serves as it is, and deleting
``trainer_state/`` leaves a plain model. ``N`` counts completed training steps, so resuming
from ``step_N`` runs step ``N`` next. Checkpoints of the earlier layout, with
``trainer_state.pt`` at the top, are read (and resumed from) too.

Writing is crash-safe: everything goes into ``checkpoints/.tmp-step_<N>-<pid>/``, every file
is fsynced, ``siri_checkpoint.json`` is written last, then the directory is renamed into
place and the parent fsynced. A directory without a valid ``siri_checkpoint.json`` is never
loaded, so a kill at any moment leaves the previous checkpoint as the newest complete one.
"""
from __future__ import annotations

import json
import os
import random
import re
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from siri.train.faults import fault_point

if TYPE_CHECKING:
    from siri.config import TrainerConfig
    from siri.train.distributed import DistContext

MARKER = "siri_checkpoint.json"
STATE_DIR = "trainer_state"
STATE = f"{STATE_DIR}/state.pt"
#: Where checkpoints of the earlier layout hold the trainer state (read, never written).
LEGACY_STATE = "trainer_state.pt"
_NAME = re.compile(r"^step_(\d+)$")


def checkpoint_dir(run_dir: str | os.PathLike) -> Path:
    return Path(run_dir) / "checkpoints"


def save_checkpoint(run_dir: str | os.PathLike, step: int, model, tokenizer, state: dict[str, Any],
                    info: dict[str, Any], model_state: dict[str, torch.Tensor] | None = None,
                    extra_files: dict[str, str] | None = None) -> Path:
    """Write ``checkpoints/step_<step>`` atomically and return its path.

    Args:
        step: completed training steps.
        model, tokenizer: saved with ``save_pretrained`` (safetensors).
        model_state: the weights to save instead of ``model``'s own (the trainer passes its fp32
            master weights); ``config.json`` then records their dtype.
        state: anything ``torch.save`` can write (optimizer state, cursors, RNG states); it
            goes to ``trainer_state/state.pt``.
        info: JSON-serialisable facts (e.g. ``kinds``, ``cap``), stored in the marker file.
        extra_files: file name -> text, written into the checkpoint too (the prompt format).
    """
    root = checkpoint_dir(run_dir)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step_{step}"
    tmp = root / f".tmp-step_{step}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    if model_state is None:
        model.save_pretrained(tmp, safe_serialization=True)
    else:
        _save_weights(model, model_state, tmp)
    if tokenizer is not None:
        tokenizer.save_pretrained(tmp)
    for name, text in (extra_files or {}).items():
        (tmp / name).write_text(text)
    (tmp / STATE_DIR).mkdir()
    torch.save(state, tmp / STATE)
    fault_point("checkpoint_write")
    (tmp / MARKER).write_text(json.dumps({"step": step, **info}, indent=1))
    publish_directory(tmp, final, old=root / f".old-step_{step}-{os.getpid()}")
    fault_point("checkpoint_renamed")
    return final


def publish_directory(tmp: Path, final: Path, old: Path) -> None:
    """Make the fully written directory ``tmp`` appear as ``final`` in one rename: fsync every
    file and directory in ``tmp``, rename, fsync the parent. An existing ``final`` is first
    renamed to ``old`` (a name in the same directory) and deleted after, so a crash leaves
    either the old or the new directory complete on disk, never neither."""
    for path in sorted(tmp.rglob("*"), reverse=True):      # files before the directories holding them
        if path.is_file():
            _fsync_file(path)
        elif path.is_dir():
            _fsync_dir(path)
    _fsync_dir(tmp)
    if final.exists():
        os.replace(final, old)
        os.replace(tmp, final)
        if old.is_dir():
            shutil.rmtree(old)
        else:
            old.unlink()
    else:
        os.replace(tmp, final)
    _fsync_dir(final.parent)


def _save_weights(model, model_state: dict[str, torch.Tensor], directory: Path) -> None:
    """``model.save_pretrained`` with ``model_state`` as the weights; ``config.json`` is then
    corrected to record their dtype (save_pretrained writes the module's own)."""
    model.save_pretrained(directory, state_dict=model_state, safe_serialization=True)
    dtypes = {t.dtype for t in model_state.values() if t.is_floating_point()}
    if len(dtypes) == 1:
        config_file = directory / "config.json"
        config = json.loads(config_file.read_text())
        config["dtype"] = str(dtypes.pop()).removeprefix("torch.")
        config_file.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def read_marker(path: str | os.PathLike) -> dict[str, Any] | None:
    """The parsed ``siri_checkpoint.json`` of ``path`` (a dict with an int ``step``), or None
    if it is missing or torn. Says nothing of the trainer state: see :func:`read_info`."""
    try:
        info = json.loads((Path(path) / MARKER).read_text())
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) and isinstance(info.get("step"), int) else None


def state_file(path: str | os.PathLike) -> Path | None:
    """The trainer state file of checkpoint ``path``: ``trainer_state/state.pt``, else the
    earlier layout's ``trainer_state.pt``; None if it has neither."""
    for name in (STATE, LEGACY_STATE):
        if (Path(path) / name).is_file():
            return Path(path) / name
    return None


def read_info(path: str | os.PathLike) -> dict[str, Any] | None:
    """The marker of a complete (resumable) checkpoint directory, or None if it is
    incomplete/invalid: no valid marker, or no trainer state in either layout."""
    info = read_marker(path)
    return info if info is not None and state_file(path) is not None else None


def list_checkpoints(run_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    """Complete checkpoints of a run as ``(step, path)``, oldest first."""
    root = checkpoint_dir(run_dir)
    if not root.is_dir():
        return []
    found = []
    for path in root.iterdir():
        match = _NAME.match(path.name)
        if match and path.is_dir() and read_info(path) is not None:
            found.append((int(match.group(1)), path))
    return sorted(found)


def latest_checkpoint(run_dir: str | os.PathLike) -> Path | None:
    """The newest complete checkpoint, or None. Incomplete ones are ignored."""
    found = list_checkpoints(run_dir)
    return found[-1][1] if found else None


def load_state(path: str | os.PathLike) -> dict[str, Any]:
    """The trainer state of a checkpoint (raises ValueError if it is not complete)."""
    path = Path(path)
    _, state = _complete(path)
    return torch.load(state, map_location="cpu", weights_only=False)


def _complete(path: Path) -> tuple[dict[str, Any], Path]:
    """The marker and trainer state file of a complete checkpoint; ValueError (one line) if
    either is missing."""
    info, state = read_marker(path), state_file(path)
    if info is None or state is None:
        raise ValueError(f"{path} is not a complete siri checkpoint (no valid {MARKER} and {STATE} or {LEGACY_STATE})")
    return info, state


def latest_step(run_dir: str | os.PathLike) -> int | None:
    """The step of the newest complete checkpoint, or None."""
    found = list_checkpoints(run_dir)
    return found[-1][0] if found else None


def load_for_resume(path: str | os.PathLike, step: int | None = None) -> dict[str, Any]:
    """The trainer state of the checkpoint a run resumes from, after checking that the whole
    checkpoint can be read here: complete, of ``step`` (when given), with a model config and
    safetensors weights whose headers parse. Raises ValueError with a one-line reason."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_dir():
        raise ValueError(f"{path} does not exist")
    info, state = _complete(path)
    if step is not None and info["step"] != step:
        raise ValueError(f"{path} holds step {info['step']}, not step {step}")
    weights = sorted(path.glob("*.safetensors"))
    if not (path / "config.json").is_file() or not weights:
        raise ValueError(f"{path} has no config.json or no *.safetensors weights")
    try:
        for file in weights:
            with safe_open(str(file), framework="pt"):
                pass
        return torch.load(state, map_location="cpu", weights_only=False)
    except Exception as e:      # torn or foreign files: say which checkpoint, in one line
        first = str(e).splitlines()[0] if str(e) else ""
        raise ValueError(f"{path} cannot be read: {type(e).__name__}: {first}") from e


def resume_source(run_dir: str | os.PathLike, mode: str, dist: DistContext
                  ) -> tuple[Path | None, dict[str, Any] | None]:
    """The checkpoint a run resumes from (``trainer.resume``: ``never``, ``auto`` or a
    checkpoint directory) and its trainer state, the same on every rank; (None, None) to
    start afresh.

    Rank 0 chooses the step (``auto``: its newest complete checkpoint; a directory: that
    checkpoint's step) and broadcasts it, because the ranks' run directories may be different
    disks (one per node) that hold different checkpoints. Every rank then reads that step from
    its own ``run_dir`` (or the given directory), and the ranks agree on success before any of
    them goes on: a rank that cannot read it makes every rank stop with the same error,
    instead of starting from other weights (or step 0) and hanging or silently diverging."""
    if mode == "never":
        return None, None
    if mode == "auto":
        chosen = latest_step(run_dir) if dist.is_main else None
        step = dist.broadcast_int(-1 if chosen is None else chosen)
        if step < 0:
            return None, None
        path = checkpoint_dir(run_dir) / f"step_{step}"
    else:
        path = Path(mode)
        info = read_info(path) if dist.is_main else None
        step = dist.broadcast_int(-1 if info is None else info["step"])
    error, state = None, None
    try:
        # step -1: rank 0 cannot read the trainer.resume directory (and says why below)
        state = load_for_resume(path, None if step < 0 else step)
    except ValueError as e:
        error = str(e)
    what = f"resuming from {path} (trainer.resume)" if mode != "auto" else \
        f"resuming from step_{step} (rank 0's newest checkpoint)"
    if dist.enabled:
        dist.agree(error, what, hint="every rank reads the checkpoint rank 0 chose from its own "
                   "trainer.run_dir: put the run directory on storage every node shares, or copy the "
                   "checkpoint to the same path on every node (trainer.resume=never starts afresh)")
    elif error is not None:
        raise ValueError(f"{what} failed: {error}")
    return path, state


def checkpoint_kinds(step: int, cfg: TrainerConfig, peaks: set[int], troughs: set[int]) -> list[str]:
    """Which checkpoints to write after step ``step`` (0-based): ``periodic`` every
    ``save_every`` steps, ``peak`` / ``trough`` at the schedule's extrema (``save_at_extrema``),
    ``final`` after the last step. Empty: none."""
    kinds = []
    if cfg.save_every and (step + 1) % cfg.save_every == 0:
        kinds.append("periodic")
    if cfg.save_at_extrema and step in peaks:
        kinds.append("peak")
    if cfg.save_at_extrema and step in troughs:
        kinds.append("trough")
    if step + 1 == cfg.steps:
        kinds.append("final")
    return kinds


def rng_states() -> dict[str, Any]:
    """The process's random states (torch, Python, numpy, every CUDA device) for the trainer state."""
    return {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def restore_rng_states(states: dict[str, Any]) -> None:
    """Set what :func:`rng_states` saved (the CUDA states only where CUDA is available)."""
    torch.set_rng_state(states["torch"])
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    if states.get("cuda") is not None and torch.cuda.is_available():  # gpu-only: tests/test_mixed_precision.py::test_mixed_precision_resume_is_exact
        torch.cuda.set_rng_state_all(states["cuda"])


def prune(run_dir: str | os.PathLike, keep_last: int) -> list[Path]:
    """Delete periodic checkpoints beyond the newest ``keep_last``, and stale temp dirs of
    dead writers. Checkpoints whose kinds include anything but "periodic" (peak, trough,
    final) are kept. Returns the deleted paths."""
    root = checkpoint_dir(run_dir)
    deleted = []
    periodic = [(step, path) for step, path in list_checkpoints(run_dir)
                if set((read_info(path) or {}).get("kinds", ["periodic"])) == {"periodic"}]
    for _, path in periodic[:max(0, len(periodic) - keep_last)]:
        shutil.rmtree(path)
        deleted.append(path)
    if root.is_dir():
        for path in root.iterdir():
            if path.name.startswith((".tmp-", ".old-")) and not _owned_by_live_process(path.name):
                shutil.rmtree(path, ignore_errors=True)
                deleted.append(path)
    return deleted


def _owned_by_live_process(name: str) -> bool:
    pid = int(name.rsplit("-", 1)[-1]) if name.rsplit("-", 1)[-1].isdigit() else -1
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except (OSError, ValueError):
        return False
    return True


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
