"""The demo's base model: a tiny Qwen2 and its byte-level BPE tokenizer, built from scratch and
fine-tuned on verbose traces; cached in ``DIR/base`` keyed by everything that shapes it."""
from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

from siri.data import PromptFormat
from siri.demo.sft import SftSettings, supervised_finetune
from siri.demo.task import INSTRUCTION, Problem, verbose_trace
from siri.models.tiny_lm import build_model, build_tokenizer

MARKER = "demo_base.json"


@dataclass
class BaseModelSettings:
    vocab_size: int = 400
    hidden_size: int = 128
    layers: int = 2
    heads: int = 2
    kv_heads: int = 2
    max_positions: int = 1024
    sft: SftSettings = field(default_factory=SftSettings)


def fingerprint(settings: BaseModelSettings, seed: int, problems: list[Problem]) -> str:
    """A hash of the settings, the seed and the SFT data (prompts and traces): a cached base
    model is reused only when all of them match."""
    rng = random.Random(seed)
    text = json.dumps([asdict(settings), seed, [(p.prompt, verbose_trace(p, rng)) for p in problems]])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def load_cached(directory: Path, key: str):
    """``(model, tokenizer)`` from ``directory`` if it holds a base model built with ``key``."""
    try:
        info = json.loads((directory / MARKER).read_text())
    except (OSError, ValueError):
        return None
    if info.get("key") != key:
        return None
    import transformers

    model = transformers.AutoModelForCausalLM.from_pretrained(directory, attn_implementation="sdpa").eval()
    return model, transformers.AutoTokenizer.from_pretrained(directory)


def build_base_model(directory: Path, problems: list[Problem], format_prompt, settings: BaseModelSettings, *,
                     seed: int, key: str, progress: bool = True):
    """Build the tokenizer on the prompts and traces, SFT a fresh model on one verbose trace per
    problem, and save both to ``directory`` (HF format) atomically: a temp dir, the marker
    file (with ``key``) written last, then a rename. Returns ``(model, tokenizer)``.

    Args:
        problems: the training problems; each gets a trace drawn with ``random.Random(seed)``.
        format_prompt: ``(tokenizer, problem) -> str``, the full model input of a problem.
    """
    rng = random.Random(seed)
    traces = [verbose_trace(p, rng) for p in problems]
    # the chat template's role names and the instruction belong in the corpus too, so prompts
    # tokenize into few tokens
    tokenizer = build_tokenizer([f"user\n{p.prompt} {INSTRUCTION}\nassistant\n" for p in problems] + traces,
                                settings.vocab_size)
    model = build_model(len(tokenizer), hidden_size=settings.hidden_size, layers=settings.layers,
                        heads=settings.heads, kv_heads=settings.kv_heads,
                        max_positions=settings.max_positions, eos_token_id=tokenizer.eos_token_id,
                        pad_token_id=tokenizer.pad_token_id, seed=seed)
    examples = [(tokenizer(format_prompt(tokenizer, p), add_special_tokens=False)["input_ids"],
                 tokenizer(t, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id])
                for p, t in zip(problems, traces)]
    sft = SftSettings(**{**asdict(settings.sft), "seed": seed})
    losses = supervised_finetune(model, examples, sft, pad_id=tokenizer.pad_token_id, progress=progress)
    tmp = directory.with_name(directory.name + f".tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    PromptFormat(instruction=INSTRUCTION, use_chat_template=True).save(tmp)   # as format_prompt formats
    (tmp / MARKER).write_text(json.dumps({"key": key, "sft_final_loss": losses[-1], "sft_steps": len(losses)},
                                         indent=1))
    shutil.rmtree(directory, ignore_errors=True)
    os.replace(tmp, directory)
    return model, tokenizer
