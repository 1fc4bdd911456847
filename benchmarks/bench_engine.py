"""siri's rollout engine vs Hugging Face `generate` on the same model, prompts and sampling.

Model: a Qwen2-architecture causal LM with random weights (about 30M parameters by default).
Both sides sample n completions of every prompt at temperature 1 with no stop token, so both
generate exactly prompts * n * max_tokens tokens; HF gets all prompts in one left-padded
batch with num_return_sequences=n, as HF users do. Two cases: a large batch (64 prompts x 8,
256 tokens) and a small one (32 prompts x 4, 128 tokens), where per-step overhead weighs
most. Reported: median tokens/s of each and the median and spread of the per-repeat ratios.
Then: step time as the cap varies while completions stop on their own (a set of stop tokens
with ~3% probability per step), to show that cost follows the tokens generated, not the cap.
On CUDA, last: a 0.5B-class Qwen2 (random weights, bf16) with and without CUDA graphs.
"""
import sys
from pathlib import Path

import torch
import transformers

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

from siri.engine import LLMEngine, SamplingParams  # noqa: E402


# name: (prompts, samples per prompt, new tokens)
CASES = {"large": (64, 8, 256), "small": (32, 4, 128)}


def build_model(vocab: int, hidden: int, layers: int, device) -> torch.nn.Module:
    torch.manual_seed(0)
    config = transformers.Qwen2Config(
        vocab_size=vocab, hidden_size=hidden, intermediate_size=hidden * 11 // 4, num_hidden_layers=layers,
        num_attention_heads=hidden // 64, num_key_value_heads=2, head_dim=64, max_position_embeddings=4096,
        tie_word_embeddings=False)
    model = transformers.AutoModelForCausalLM.from_config(config, attn_implementation="sdpa").to(device).eval()
    model.generation_config.eos_token_id = None
    model.generation_config.pad_token_id = 0
    return model


def make_prompts(count: int, vocab: int) -> list[list[int]]:
    g = torch.Generator().manual_seed(1)
    lengths = torch.randint(16, 129, (count,), generator=g).tolist()
    return [torch.randint(1, vocab, (n,), generator=g).tolist() for n in lengths]


def hf_generate(model, prompts, n, max_tokens, device) -> int:
    width = max(map(len, prompts))
    ids = torch.zeros((len(prompts), width), dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, prompt in enumerate(prompts):  # left padding, as for batched generation
        ids[row, width - len(prompt):] = torch.tensor(prompt)
        mask[row, width - len(prompt):] = 1
    with torch.no_grad():
        out = model.generate(ids.to(device), attention_mask=mask.to(device), do_sample=True, temperature=1.0,
                             top_p=1.0, top_k=0, num_return_sequences=n, max_new_tokens=max_tokens,
                             min_new_tokens=max_tokens)
    return (out.shape[1] - width) * out.shape[0]


def siri_generate(engine, prompts, n, max_tokens, stop=()) -> int:
    outs = engine.generate(prompts, SamplingParams(n=n, temperature=1.0, max_tokens=max_tokens,
                                                   stop_token_ids=list(stop), seed=0))
    return sum(len(c.token_ids) for group in outs for c in group)


def compare_case(model, engine, prompts, n, max_tokens, device, repeats) -> dict:
    """siri and HF generate the same prompts alternately; tokens/s and the ratio's spread."""
    tokens = {}
    times = common.compare({
        "siri": lambda: tokens.__setitem__("siri", siri_generate(engine, prompts, n, max_tokens)),
        "hf": lambda: tokens.__setitem__("hf", hf_generate(model, prompts, n, max_tokens, device)),
    }, device, repeats=repeats, warmup=0)
    assert tokens["siri"] == tokens["hf"] == len(prompts) * n * max_tokens
    spread = common.ratio_spread(times["hf"], times["siri"])
    result = dict(prompts=len(prompts), n=n, max_tokens=max_tokens, repeats=repeats,
                  siri_tokens_per_s=tokens["siri"] / common.median(times["siri"]),
                  hf_tokens_per_s=tokens["hf"] / common.median(times["hf"]), speedup=spread,
                  siri_seconds=times["siri"], hf_seconds=times["hf"])
    print(f"  {len(prompts)} prompts x n={n}, max_tokens {max_tokens}: siri {result['siri_tokens_per_s']:8.0f} tok/s"
          f"   HF generate {result['hf_tokens_per_s']:8.0f} tok/s   ratio x{spread['median']:.2f} "
          f"[{spread['min']:.2f}, {spread['max']:.2f}]")
    return result


def cuda_graphs_case(device, repeats) -> dict:
    """A Qwen2-0.5B-shaped model (random weights, bf16): siri with and without CUDA graphs
    against HF generate, 64 prompts x 4, 256 tokens."""
    torch.manual_seed(0)
    config = transformers.Qwen2Config(
        vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
        num_key_value_heads=2, head_dim=64, max_position_embeddings=32768, tie_word_embeddings=True)
    model = transformers.AutoModelForCausalLM.from_config(config, attn_implementation="sdpa")
    model = model.to(device=device, dtype=torch.bfloat16).eval()
    model.generation_config.eos_token_id, model.generation_config.pad_token_id = None, 0
    prompts = make_prompts(64, config.vocab_size)
    n, max_tokens = 4, 256
    engines = {"graphs": LLMEngine(model, max_num_seqs=256, kv_cache_bytes=8 << 30, cuda_graphs=True),
               "eager": LLMEngine(model, max_num_seqs=256, kv_cache_bytes=8 << 30, cuda_graphs=False)}
    times = common.compare({
        **{name: (lambda e=e: siri_generate(e, prompts, n, max_tokens)) for name, e in engines.items()},
        "hf": lambda: hf_generate(model, prompts, n, max_tokens, device),
    }, device, repeats=repeats, warmup=1)
    total = len(prompts) * n * max_tokens
    rates = {name: total / common.median(t) for name, t in times.items()}
    print(f"  Qwen2-0.5B shape, bf16, 64 prompts x n=4, 256 tokens: siri with CUDA graphs {rates['graphs']:.0f} tok/s, "
          f"without {rates['eager']:.0f} tok/s, HF generate {rates['hf']:.0f} tok/s; graphs vs eager "
          f"x{common.median_ratio(times['eager'], times['graphs']):.2f}, graphs vs HF "
          f"x{common.median_ratio(times['hf'], times['graphs']):.2f}")
    return dict(tokens_per_s=rates, seconds=times)


def main() -> None:
    p = common.parser(__doc__)
    p.add_argument("--vocab", type=int, default=8192)
    p.add_argument("--hidden", type=int, default=512)
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--skip-caps", action="store_true", help="skip the cap sweep")
    p.add_argument("--cases", default="large,small",
                   help="comma-separated comparison cases against HF: large (64 prompts x 8, 256 tokens), "
                        "small (32 prompts x 4, 128 tokens), or none")
    args = p.parse_args()
    chosen = [c for c in args.cases.split(",") if c and c != "none"]
    if unknown := sorted(set(chosen) - set(CASES)):
        p.error(f"--cases: unknown case {unknown[0]!r}; expected a comma-separated subset of {', '.join(CASES)}")
    device = torch.device(args.device) if args.device else common.default_device()
    model = build_model(args.vocab, args.hidden, args.layers, device)
    params = sum(p.numel() for p in model.parameters())
    repeats = max(1, args.repeats // 5)
    print(f"model {params / 1e6:.1f}M params, {device}, {repeats} interleaved repeats")
    cases = {}
    for name in chosen:
        count, n, max_tokens = CASES[name]
        engine = LLMEngine(model, page_size=16, max_num_seqs=count * n)
        cases[name] = compare_case(model, engine, make_prompts(count, args.vocab), n, max_tokens, device, repeats)

    # Cost follows generated tokens, not the cap: completions stop on their own (a stop set
    # of 1/32 of the vocabulary: mean length ~32, rarely above 256), caps vary. Caps 64/128
    # truncate some completions; from 256 up the cap almost never binds.
    cap_rows = []
    engine, prompts = LLMEngine(model, page_size=16, max_num_seqs=512), make_prompts(64, args.vocab)
    stop = range(1, args.vocab, 32)
    for cap in () if args.skip_caps else (64, 128, 256, 1024, 4096):
        counts = []
        run = common.compare({"cap": lambda counts=counts, cap=cap: counts.append(
                                 siri_generate(engine, prompts, 8, cap, stop))},
                             device, repeats=repeats, warmup=0)["cap"]
        seconds = common.median(run)
        cap_rows.append(dict(cap=cap, generated_tokens=counts[-1], seconds=seconds,
                             ms_per_1k_tokens=1e3 * seconds / counts[-1] * 1e3))
        print(f"  cap {cap:4d}: {counts[-1]:7d} tokens generated in {seconds:6.2f} s "
              f"({cap_rows[-1]['ms_per_1k_tokens']:.1f} ms per 1k tokens)")
    graphs = cuda_graphs_case(device, repeats) if device.type == "cuda" else None
    common.write_results(args.out, "engine", dict(device=str(device), params=params, cases=cases, caps=cap_rows,
                                                  cuda_graphs=graphs))


if __name__ == "__main__":
    main()
