"""Loading the policy (a Hugging Face causal LM and its tokenizer) onto the right device."""
from __future__ import annotations

from pathlib import Path

import torch

from siri._ext import has_cuda_kernels

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_device(device: str) -> torch.device:
    """"auto" -> CUDA when a device is visible and siri has CUDA kernels, else the CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() and has_cuda_kernels() else "cpu")
    if device == "cuda" and not (torch.cuda.is_available() and has_cuda_kernels()):
        raise ValueError("device 'cuda' was asked for, but " + (
            "no CUDA device is visible" if not torch.cuda.is_available()
            else "siri was built without CUDA kernels (reinstall with SIRI_CUDA=1)"))
    return torch.device(device)


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """"auto" -> bfloat16 on CUDA, float32 on the CPU."""
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if dtype == "float16" and device.type != "cuda":
        raise ValueError("model.dtype float16 is only supported on CUDA; use float32 or bfloat16")
    return _DTYPES[dtype]


def local_model_config(path: str, *, trust_remote_code: bool = False):
    """The model's transformers config if it is on this machine (a directory, or a Hub id
    already in the local cache), else None. Never downloads."""
    import transformers

    try:
        return transformers.AutoConfig.from_pretrained(path, local_files_only=True,
                                                       trust_remote_code=trust_remote_code)
    except (OSError, ValueError):
        if Path(path).is_dir():
            raise
        return None


def load_model(path: str, *, device: torch.device, dtype: torch.dtype, trust_remote_code: bool = False):
    """A causal LM from a directory or Hub id, on ``device`` in ``dtype``, with SDPA attention."""
    import transformers

    check_model_reference(path)
    model = transformers.AutoModelForCausalLM.from_pretrained(
        path, dtype=dtype, attn_implementation="sdpa", trust_remote_code=trust_remote_code)
    return model.to(device)  # type: ignore[arg-type]  # transformers types .to by its decorator


def check_model_reference(path: str) -> None:
    """Raise FileNotFoundError (one line) for a model reference that names a local directory
    that is not there (an absolute or relative path, or one with more than one "/": a Hub id
    is "org/name"), or a directory without config.json. Hub ids are left to transformers."""
    p = Path(path).expanduser()
    if p.is_dir():
        if not (p / "config.json").is_file():
            raise FileNotFoundError(2, "not a Hugging Face model directory (no config.json)", path)
        return
    if p.is_absolute() or path.startswith((".", "~")) or path.count("/") > 1 or p.exists():
        raise FileNotFoundError(2, "no such model directory", path)


def load_tokenizer(path: str, *, trust_remote_code: bool = False):
    import transformers

    check_model_reference(path)
    tokenizer = transformers.AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def stop_token_ids(tokenizer, model) -> list[int]:
    """End-of-sequence ids: the tokenizer's eos plus the generation config's (may be a list)."""
    ids = set()
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    gen = getattr(model, "generation_config", None)
    eos = getattr(gen, "eos_token_id", None)
    if isinstance(eos, int):
        ids.add(eos)
    elif eos:
        ids.update(int(e) for e in eos)
    return sorted(ids)
