"""Tiny random Hugging Face models that tests build themselves (never downloaded)."""
import torch
import transformers


def tiny_config(model_type: str = "qwen2", vocab_size: int = 256, layers: int = 2, **overrides):
    common = dict(vocab_size=vocab_size, hidden_size=128, intermediate_size=256, num_hidden_layers=layers,
                  num_attention_heads=4, num_key_value_heads=2, head_dim=64, max_position_embeddings=1024,
                  initializer_range=0.1, tie_word_embeddings=False, rms_norm_eps=1e-6)
    common.update(overrides)
    cls = {"qwen2": transformers.Qwen2Config, "qwen3": transformers.Qwen3Config,
           "llama": transformers.LlamaConfig}[model_type]
    return cls(**common)


def tiny_model(model_type: str = "qwen2", seed: int = 0, dtype=torch.float32, **overrides):
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(tiny_config(model_type, **overrides),
                                                         attn_implementation="sdpa")
    model.generation_config.eos_token_id = None
    model.generation_config.pad_token_id = 0
    return model.to(dtype).eval()


def random_prompts(count: int, vocab_size: int, generator: torch.Generator, min_len: int = 3, max_len: int = 40):
    lengths = torch.randint(min_len, max_len + 1, (count,), generator=generator).tolist()
    return [torch.randint(1, vocab_size, (n,), generator=generator).tolist() for n in lengths]


def hf_greedy(model, prompt: list[int], max_new_tokens: int) -> list[int]:
    ids = torch.tensor([prompt])
    out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False,
                         max_new_tokens=max_new_tokens, min_new_tokens=max_new_tokens)
    return out[0, len(prompt):].tolist()
