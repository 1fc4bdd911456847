"""``siri export``: a training checkpoint as a standalone Hugging Face model directory.

``OUT`` gets the weights alone (safetensors, every floating-point tensor cast to one dtype),
``config.json`` recording that dtype, the tokenizer files, ``generation_config.json`` whose
``eos_token_id`` lists the stop tokens training sampled with, and ``siri_prompt.json`` (the
prompt format ``siri eval`` reads); never the trainer state (optimizer moments, RNG, cursor).
``AutoModelForCausalLM.from_pretrained(OUT)`` loads it and ``vllm serve OUT`` serves it.

The weights are converted one safetensors file at a time (peak memory: one file's tensors in
the output dtype), and ``OUT`` is written atomically: into ``.tmp-<name>-<pid>`` next to it,
fsynced, then renamed into place.
"""
from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch

from siri.train.checkpoint import (MARKER, checkpoint_dir, latest_checkpoint, publish_directory, read_marker,
                                   state_file)

EXPORT_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}
INDEX = "model.safetensors.index.json"
GENERATION_CONFIG = "generation_config.json"
#: Rewritten by the export, or never exported (weights are converted, trainer state left out).
_NOT_COPIED = {"config.json", GENERATION_CONFIG, INDEX, MARKER}
_NOT_COPIED_SUFFIXES = {".safetensors", ".pt", ".pth", ".bin"}


@dataclass(frozen=True)
class Export:
    """What :func:`export_checkpoint` wrote.

    Attributes:
        checkpoint: the checkpoint directory exported (a run directory's newest, when given one).
        source: how ``checkpoint`` was found, in words.
        out: the model directory written.
        dtype: the weights' floating-point dtype (a key of ``EXPORT_DTYPES``).
        dtype_source: why that dtype (the argument, or what the training config says).
        stop_token_ids: ``generation_config.json``'s ``eos_token_id``.
        files: the names in ``out``.
    """
    checkpoint: Path
    source: str
    out: Path
    dtype: str
    dtype_source: str
    stop_token_ids: list[int]
    files: list[str]


def find_checkpoint(path: str | os.PathLike) -> tuple[Path, dict[str, Any], str]:
    """The checkpoint ``path`` names: a checkpoint directory (either layout; the trainer state
    may have been deleted) or a run directory (its newest complete checkpoint). Returns the
    directory, its ``siri_checkpoint.json`` and a phrase saying how it was found; raises
    FileNotFoundError / ValueError with a one-line reason."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(2, "no such checkpoint or run directory", str(path))
    marker = read_marker(path)
    if marker is not None:
        return path, marker, f"checkpoint {path} (step {marker['step']})"
    if (path / MARKER).exists():
        raise ValueError(f"{path} is not a complete siri checkpoint: its {MARKER} is torn")
    if checkpoint_dir(path).is_dir():
        latest = latest_checkpoint(path)
        if latest is None:
            raise ValueError(f"run directory {path} has no complete checkpoint in {checkpoint_dir(path)}")
        return latest, read_marker(latest) or {}, f"{latest.name}, the newest complete checkpoint of run {path}"
    raise ValueError(f"{path} is neither a siri checkpoint (no {MARKER}) nor a run directory (no checkpoints/)")


def trained_dtype(checkpoint: Path, marker: dict[str, Any]) -> tuple[str, str]:
    """The compute dtype the run trained with (``model.dtype``; ``auto``, or nothing recorded,
    gives bfloat16, what ``auto`` resolves to on a GPU) and where that was read: the marker,
    else the config inside the trainer state (memory-mapped: the moments are not read)."""
    state = state_file(checkpoint)
    if "compute_dtype" in marker:
        name, where = marker["compute_dtype"], MARKER
    elif state is not None:
        name, where = _state_dtype(state), f"the training config in {state.relative_to(checkpoint)}"
    else:
        name, where = None, "no training config kept"
    if name is None or name == "auto":
        return "bfloat16", f"model.dtype {name or 'unknown'} ({where}): bfloat16, the GPU compute dtype"
    if name not in EXPORT_DTYPES:
        raise ValueError(f"{checkpoint}: {where} says model.dtype {name!r}; pass dtype= one of "
                         f"{', '.join(EXPORT_DTYPES)}")
    return name, f"model.dtype in {where}"


def _state_dtype(state: Path) -> str | None:
    """``model.dtype`` of the config saved in a trainer state file; None if it cannot be read
    (a torn state does not stop an export of the weights)."""
    try:
        config = torch.load(state, map_location="cpu", mmap=True, weights_only=False).get("config") or {}
        return (config.get("model") or {}).get("dtype")
    except Exception:
        return None


def export_checkpoint(checkpoint: str | os.PathLike, out: str | os.PathLike, dtype: str | None = None, *,
                      overwrite: bool = False, log: Callable[[str], None] | None = None) -> Export:
    """Write checkpoint ``checkpoint`` (or a run directory's newest) as the model directory ``out``.

    Args:
        checkpoint: ``RUN_DIR/checkpoints/step_N`` (either layout) or ``RUN_DIR``.
        out: the directory to write; it must not exist, or be empty, unless ``overwrite``.
        dtype: ``bfloat16``, ``float16`` or ``float32`` for every floating-point weight; None:
            the compute dtype the run trained with (``model.dtype``, bfloat16 for ``auto``).
        overwrite: replace an existing, non-empty ``out`` (after the new one is complete).
        log: called with a line per step (which checkpoint, dtype, each weights file).

    Raises FileNotFoundError / ValueError with a one-line reason.
    """
    say = log or (lambda line: None)
    ckpt, marker, source = find_checkpoint(checkpoint)
    say(f"exporting {source}")
    if dtype is None:
        dtype, dtype_source = trained_dtype(ckpt, marker)
    elif dtype in EXPORT_DTYPES:
        dtype_source = "asked for"
    else:
        raise ValueError(f"dtype must be one of {', '.join(EXPORT_DTYPES)}, got {dtype!r}")
    say(f"dtype {dtype} ({dtype_source})")
    out = Path(os.path.abspath(out))        # so that out.parent and out.name are real (OUT may be ".")
    _check_out(out, ckpt, overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".tmp-{out.name}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        _write_config(ckpt, tmp, dtype)
        _write_weights(ckpt, tmp, EXPORT_DTYPES[dtype], say)
        _copy_files(ckpt, tmp)
        stop_ids = _write_generation_config(ckpt, tmp)
        publish_directory(tmp, out, old=out.parent / f".old-{out.name}-{os.getpid()}")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return Export(ckpt, source, out, dtype, dtype_source, stop_ids, sorted(p.name for p in out.iterdir()))


def _check_out(out: Path, ckpt: Path, overwrite: bool) -> None:
    resolved = out.resolve()
    if resolved == ckpt.resolve() or resolved in ckpt.resolve().parents:
        raise ValueError(f"output {out} is or holds the checkpoint {ckpt}: choose another directory")
    if out.exists() and not overwrite and not (out.is_dir() and not any(out.iterdir())):
        raise ValueError(f"output {out} exists and is not empty: pass --overwrite (overwrite=True) to replace it")


def _weight_files(ckpt: Path) -> list[str]:
    if (ckpt / INDEX).is_file():
        return sorted(set(json.loads((ckpt / INDEX).read_text())["weight_map"].values()))
    files = sorted(p.name for p in ckpt.glob("*.safetensors"))
    if not files or not (ckpt / "config.json").is_file():
        raise ValueError(f"{ckpt} has no config.json or no *.safetensors weights")
    return files


def _write_weights(ckpt: Path, tmp: Path, dtype: torch.dtype, say: Callable[[str], None]) -> None:
    """Each safetensors file of ``ckpt`` into ``tmp`` with its floating-point tensors cast to
    ``dtype`` (same names and keys; the index, if any, gets the new total size). ``tmp`` already
    holds ``config.json``."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    files, total = _weight_files(ckpt), 0
    for number, name in enumerate(files, 1):
        with safe_open(str(ckpt / name), framework="pt") as f:
            tensors = {key: _cast(f.get_tensor(key), dtype) for key in f.keys()}
            metadata = {"format": "pt", **(f.metadata() or {})}
        size = sum(t.numel() * t.element_size() for t in tensors.values())
        save_file(tensors, str(tmp / name), metadata=metadata)
        # safetensors creates the file 0600; a server often runs as another user: give it the
        # mode the other files get from the umask
        shutil.copymode(tmp / "config.json", tmp / name)
        total += size
        say(f"weights {number}/{len(files)}: {name} ({len(tensors)} tensors, {size / 2**30:.2f} GiB)")
        del tensors
    if (ckpt / INDEX).is_file():
        index = json.loads((ckpt / INDEX).read_text())
        index["metadata"] = {**index.get("metadata", {}), "total_size": total}
        (tmp / INDEX).write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")


def _cast(tensor: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return tensor.to(dtype) if tensor.is_floating_point() else tensor


def _write_config(ckpt: Path, tmp: Path, dtype: str) -> None:
    """``config.json`` with ``dtype`` (and the older ``torch_dtype``, where present) set."""
    config = json.loads((ckpt / "config.json").read_text())
    config["dtype"] = dtype
    if "torch_dtype" in config:
        config["torch_dtype"] = dtype
    (tmp / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def _copy_files(ckpt: Path, tmp: Path) -> None:
    """The checkpoint's other top-level files (tokenizer, chat template, prompt format, any
    remote code); not the trainer state (a subdirectory, or ``trainer_state.pt``). A checkpoint
    without ``siri_prompt.json`` gets the format its run's ``config.yaml`` records."""
    from siri.data import PROMPT_FILE
    from siri.data.formatting import saved_prompt_format

    for path in ckpt.iterdir():
        if path.is_file() and not path.name.startswith(".") and path.name not in _NOT_COPIED \
                and path.suffix not in _NOT_COPIED_SUFFIXES:
            shutil.copyfile(path, tmp / path.name)
    if not (tmp / PROMPT_FILE).exists():
        fmt = saved_prompt_format(ckpt)
        if fmt is not None:
            fmt.save(tmp)


def _write_generation_config(ckpt: Path, tmp: Path) -> list[int]:
    """``generation_config.json`` from the checkpoint's (or ``config.json``'s token ids) with
    ``eos_token_id`` = the stop tokens training sampled with (the tokenizer's eos plus the
    generation config's, as ``siri.models.loading.stop_token_ids``) and a pad token. Returns
    the stop token ids."""
    from transformers import GenerationConfig

    from siri.models.loading import load_tokenizer, stop_token_ids

    if (ckpt / GENERATION_CONFIG).is_file():
        generation = GenerationConfig.from_pretrained(str(ckpt))
    else:
        config = json.loads((ckpt / "config.json").read_text())
        generation = GenerationConfig(**{k: config[k] for k in ("bos_token_id", "eos_token_id", "pad_token_id")
                                         if config.get(k) is not None})
    tokenizer = load_tokenizer(str(tmp))
    stop_ids = stop_token_ids(tokenizer, SimpleNamespace(generation_config=generation))
    if stop_ids:
        generation.eos_token_id = stop_ids[0] if len(stop_ids) == 1 else stop_ids
    if generation.pad_token_id is None and tokenizer.pad_token_id is not None:
        generation.pad_token_id = tokenizer.pad_token_id
    generation._from_model_config = False     # written on purpose: generate() must not rebuild it
    generation.save_pretrained(str(tmp))
    return stop_ids
