"""siri's rollout engine vs Hugging Face `generate` on the same model, prompts and sampling.

Model: a Qwen2-architecture causal LM with random weights (about 30M parameters by default).
Both sides sample n completions of every prompt at temperature 1 with no stop token, so both
generate exactly prompts * n * max_tokens tokens; HF gets all prompts in one left-padded
batch with num_return_sequences=n, as HF users do. Reported: median tokens/s of each and the
median ratio. Then: step time as the cap varies (64/128/256) while completions stop on their
own (a set of stop tokens with ~3% probability per step), to show that cost follows the
tokens generated, not the cap.
"""
import sys
from pathlib import Path

import torch
import transformers

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

from siri.engine import LLMEngine, SamplingParams  # noqa: E402


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


def main() -> None:
    p = common.parser(__doc__)
    p.add_argument("--prompts", type=int, default=64)
    p.add_argument("--n", type=int, default=8)
    p.add_argument("--max-tokens", type=int, default=256)
    p.add_argument("--vocab", type=int, default=8192)
    p.add_argument("--hidden", type=int, default=512)
    p.add_argument("--layers", type=int, default=8)
    args = p.parse_args()
    device = torch.device(args.device) if args.device else common.default_device()
    model = build_model(args.vocab, args.hidden, args.layers, device)
    params = sum(p.numel() for p in model.parameters())
    prompts = make_prompts(args.prompts, args.vocab)
    engine = LLMEngine(model, page_size=16, max_num_seqs=args.prompts * args.n)
    repeats = max(1, args.repeats // 5)
    tokens = {}
    times = common.compare({
        "siri": lambda: tokens.__setitem__("siri", siri_generate(engine, prompts, args.n, args.max_tokens)),
        "hf": lambda: tokens.__setitem__("hf", hf_generate(model, prompts, args.n, args.max_tokens, device)),
    }, device, repeats=repeats, warmup=0)
    assert tokens["siri"] == tokens["hf"] == args.prompts * args.n * args.max_tokens
    siri_tps = tokens["siri"] / common.median(times["siri"])
    hf_tps = tokens["hf"] / common.median(times["hf"])
    ratio = common.median_ratio(times["hf"], times["siri"])
    print(f"model {params / 1e6:.1f}M params, {args.prompts} prompts x n={args.n}, max_tokens {args.max_tokens}, "
          f"{device}, {repeats} repeats")
    print(f"  siri engine {siri_tps:8.0f} tok/s   HF generate {hf_tps:8.0f} tok/s   ratio x{ratio:.2f}")

    # Cost follows generated tokens, not the cap: completions stop on their own (a stop set
    # of 1/32 of the vocabulary: mean length ~32, rarely above 256), caps vary. Caps 64/128
    # truncate some completions; from 256 up the cap almost never binds.
    stop = range(1, args.vocab, 32)
    cap_rows = []
    for cap in (64, 128, 256, 1024, 4096):
        counts = []
        run = common.compare({"cap": lambda: counts.append(siri_generate(engine, prompts, args.n, cap, stop))},
                             device, repeats=repeats, warmup=0)["cap"]
        seconds = common.median(run)
        cap_rows.append(dict(cap=cap, generated_tokens=counts[-1], seconds=seconds,
                             ms_per_1k_tokens=1e3 * seconds / counts[-1] * 1e3))
        print(f"  cap {cap:4d}: {counts[-1]:7d} tokens generated in {seconds:6.2f} s "
              f"({cap_rows[-1]['ms_per_1k_tokens']:.1f} ms per 1k tokens)")
    common.write_results(args.out, "engine", dict(
        device=str(device), params=params, prompts=args.prompts, n=args.n, max_tokens=args.max_tokens,
        siri_tokens_per_s=siri_tps, hf_tokens_per_s=hf_tps, speedup=ratio,
        siri_seconds=times["siri"], hf_seconds=times["hf"], caps=cap_rows))


if __name__ == "__main__":
    main()
