"""Tiny Hugging Face language models built from scratch (no download): a byte-level BPE
tokenizer trained with the ``tokenizers`` library on a given corpus, and a small Qwen2
model sized to it. Used by the tests and by ``siri demo``.

The tokenizer is byte-level BPE with Qwen's special tokens and a ChatML chat template, so
``transformers.AutoTokenizer`` loads it as a ``Qwen2Tokenizer`` that round-trips any text.
"""
from __future__ import annotations

import os
from typing import Iterable

import torch

CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def build_tokenizer(corpus: Iterable[str], vocab_size: int = 512):
    """A ``PreTrainedTokenizerFast``: byte-level BPE trained on ``corpus`` (every byte is in
    the vocabulary, so any text encodes), eos ``<|im_end|>``, pad ``<|endoftext|>``."""
    import transformers
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    # digits are single tokens (as in Qwen's tokenizer), so arithmetic is over digit tokens
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                 pre_tokenizers.ByteLevel(add_prefix_space=False)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus, trainer)
    tokenizer = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>",
                                                     pad_token="<|endoftext|>")
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def build_model(vocab_size: int, *, hidden_size: int = 128, layers: int = 2, heads: int = 2, kv_heads: int = 1,
                intermediate_size: int | None = None, max_positions: int = 2048, eos_token_id: int | None = None,
                pad_token_id: int | None = None, seed: int = 0):
    """A randomly initialised Qwen2 causal LM (float32, SDPA attention). The head size is
    ``hidden_size // heads``, which must be one the paged-attention kernels support
    (``siri._C.SUPPORTED_HEAD_DIMS``)."""
    import transformers

    config = transformers.Qwen2Config(
        vocab_size=vocab_size, hidden_size=hidden_size, intermediate_size=intermediate_size or 4 * hidden_size,
        num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
        head_dim=hidden_size // heads,  # type: ignore[call-arg]  # not a declared field; kept as an attribute
        max_position_embeddings=max_positions, tie_word_embeddings=True,
        eos_token_id=eos_token_id, pad_token_id=pad_token_id, bos_token_id=None)
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(config, attn_implementation="sdpa")
    model.generation_config.eos_token_id = eos_token_id
    model.generation_config.pad_token_id = pad_token_id
    return model


def save_tiny_lm(directory: str | os.PathLike, corpus: Iterable[str], *, vocab_size: int = 512, seed: int = 0,
                 **model_kwargs):
    """Build a tokenizer on ``corpus`` and a model sized to it, save both to ``directory``
    (HF format) and return ``(model, tokenizer)``."""
    tokenizer = build_tokenizer(corpus, vocab_size)
    model = build_model(len(tokenizer), eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                        seed=seed, **model_kwargs)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return model, tokenizer
