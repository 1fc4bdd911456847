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


def assert_greedy_matches_hf(model, prompt: list[int], token_ids: list[int], max_new_tokens: int,
                             tie_tol: float = 1e-4) -> None:
    """`token_ids` must equal Hugging Face's greedy continuation, except that the two may part
    at a numerical tie: where they first differ, the token chosen must have a logit (by HF's
    forward on the common prefix) within `tie_tol` of HF's choice. Random tiny models have
    near-ties (seen: 3.634871 vs 3.634867) that fp32 rounding in any summation order can flip."""
    ref = hf_greedy(model, prompt, max_new_tokens)
    if token_ids == ref:
        return
    assert len(token_ids) == len(ref), f"{len(token_ids)} tokens, HF generated {len(ref)}"
    d = next(i for i, (a, b) in enumerate(zip(token_ids, ref)) if a != b)
    with torch.no_grad():
        logits = model(torch.tensor([prompt + ref[:d]])).logits[0, -1].double()
    margin = (logits[ref[d]] - logits[token_ids[d]]).item()
    assert margin <= tie_tol, (f"greedy tokens part from HF at step {d}: {token_ids[d]} vs {ref[d]}, "
                               f"whose logit is higher by {margin:.3g} (not a tie)")
