"""Loading the policy (a Hugging Face causal LM and its tokenizer) onto the right device."""
from __future__ import annotations

import copy
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
    return with_pad_token(transformers.AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code))


def with_pad_token(tokenizer):
    """``tokenizer``, its pad token set to its EOS when it has none (batches are padded)."""
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def place_model(model, *, device: torch.device, dtype: torch.dtype, weights_from: str | Path | None = None):
    """A causal LM a script built (a transformers ``PreTrainedModel``), on ``device`` in ``dtype``.

    Args:
        model: the model object; it is moved in place and returned.
        weights_from: a checkpoint directory whose ``*.safetensors`` weights are loaded into
            ``model`` first (a resumed run continues from them). Weights a checkpoint leaves out
            because they are tied to another (``lm_head`` tied to the embedding) may be missing.

    Raises:
        TypeError: ``model`` is not a ``torch.nn.Module`` with a transformers ``config``.
        ValueError: the checkpoint's weights do not match the model's parameters.
    """
    if not isinstance(model, torch.nn.Module) or not hasattr(model, "config"):
        raise TypeError(f"model must be a transformers causal LM (a torch.nn.Module with .config), "
                        f"got {type(model).__name__}")
    if weights_from is not None:
        _load_weights(model, Path(weights_from))
    return model.to(device=device, dtype=dtype)


def reference_model(config, model, device: torch.device, dtype: torch.dtype):
    """The frozen reference policy for the KL term (``algo.kl_coef > 0``), else None: a copy of
    the given ``model`` as it is now (before any checkpoint is loaded into it), or
    ``model.path`` loaded again, on ``device`` in ``dtype``."""
    if config.algo.kl_coef <= 0:
        return None
    m = config.model
    ref = (copy.deepcopy(model).to(device=device, dtype=dtype) if model is not None
           else load_model(m.path, device=device, dtype=dtype, trust_remote_code=m.trust_remote_code))
    return ref.eval().requires_grad_(False)


def _load_weights(model: torch.nn.Module, directory: Path) -> None:
    from safetensors.torch import load_file

    files = sorted(directory.glob("*.safetensors"))
    if not files:
        raise ValueError(f"{directory}: no *.safetensors weights to load into the given model")
    state: dict[str, torch.Tensor] = {}
    for f in files:
        state.update(load_file(str(f)))
    missing, unexpected = model.load_state_dict(state, strict=False)
    named = dict(model.named_parameters(remove_duplicate=False))
    untied = [k for k in missing if not any(named.get(k) is named.get(loaded) for loaded in state if loaded in named)]
    if untied or unexpected:
        raise ValueError(f"{directory}: its weights do not fit the given model (missing {untied[:3]}, "
                         f"unexpected {list(unexpected)[:3]})")


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
