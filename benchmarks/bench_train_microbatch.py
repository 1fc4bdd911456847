"""One training micro-batch, fwd+bwd through a Qwen2 model with Qwen's vocabulary (151,936):
the trainer's path before and after response-only logits.

  full_logits     the model's [B, T, V] logits, sliced logits[:, :-1] into grpo_loss with the
                  response mask (the trainer until response-only logits): the slice's backward
                  allocates a second [B, T, V] buffer, and prompt rows are computed for nothing
  response_rows   siri.algo.response_logits: the LM head sees only the [N, H] response rows;
                  grpo_loss writes dlogits into that [N, V] tensor in place

Measured: extra peak memory beyond the model and inputs (CUDA: the allocator's peak; CPU: the
peak resident set), and fwd+bwd time, interleaved repeats, median and min/max of the per-repeat
ratios. The model is small (the logits dominate, as they do at 16K-token rollouts).

    .venv/bin/python benchmarks/bench_train_microbatch.py       # 4 x (512 prompt + 1024 response)
"""
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

from siri.algo.response_logits import response_logits  # noqa: E402
from siri.ops import grpo_loss  # noqa: E402


def build_model(args, dtype, device):
    import transformers

    config = transformers.Qwen2Config(
        vocab_size=151936, hidden_size=args.hidden, intermediate_size=2 * args.hidden, num_hidden_layers=args.layers,
        num_attention_heads=args.hidden // 64, num_key_value_heads=1, head_dim=64, tie_word_embeddings=False,
        max_position_embeddings=args.prompt + args.response + 1)
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config, attn_implementation="sdpa")
    return model.to(device=device, dtype=dtype).train()


def make_batch(args, device):
    """B sequences of prompt + response tokens (no padding), the response mask over the
    T-1 next-token positions, and per-token old logprobs / advantages."""
    g = torch.Generator().manual_seed(1)
    b, t = args.sequences, args.prompt + args.response
    input_ids = torch.randint(0, 151936, (b, t), generator=g)
    response_mask = torch.zeros(b, t - 1, dtype=torch.bool)
    response_mask[:, args.prompt - 1:] = True                      # positions predicting response tokens
    targets = input_ids[:, 1:]
    n = int(response_mask.sum())
    batch = dict(input_ids=input_ids, attention_mask=torch.ones(b, t, dtype=torch.long), targets=targets,
                 response_mask=response_mask, response_targets=targets[response_mask],
                 old=-12.0 + 0.1 * torch.randn(n, generator=g), advantages=torch.randn(n, generator=g))
    return {k: v.to(device) for k, v in batch.items()}


def step(kind, model, batch):
    """Forward + backward of the GRPO loss into the model's parameters."""
    if kind == "full_logits":
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False).logits
        mask = batch["response_mask"]
        old = torch.zeros(mask.shape, device=mask.device).masked_scatter_(mask, batch["old"])
        adv = torch.zeros(mask.shape, device=mask.device).masked_scatter_(mask, batch["advantages"])
        loss, _ = grpo_loss(logits[:, :-1], batch["targets"], old, adv, mask)
    else:
        logits = response_logits(model, batch["input_ids"], batch["attention_mask"], batch["response_mask"])
        everywhere = torch.ones(logits.shape[:1], dtype=torch.bool, device=logits.device)
        loss, _ = grpo_loss(logits, batch["response_targets"], batch["old"], batch["advantages"], everywhere)
    del logits
    loss.backward()
    model.zero_grad(set_to_none=True)


KINDS = ("full_logits", "response_rows")


def main() -> None:
    p = common.parser(__doc__)
    p.add_argument("--sequences", type=int, default=4)
    p.add_argument("--prompt", type=int, default=512)
    p.add_argument("--response", type=int, default=1024)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--layers", type=int, default=2)
    args = p.parse_args()
    device = torch.device(args.device) if args.device else common.default_device()
    common.cpu_allocations_return_to_os()
    repeats = max(3, args.repeats // 2)
    rows = []
    for dtype in (torch.bfloat16, torch.float32):
        model = build_model(args, dtype, device)
        batch = make_batch(args, device)
        memory = {}
        for kind in KINDS:
            step(kind, model, batch)   # warm-up: first-touch allocations, grad buffers
            with common.PeakMemory(device) as peak:
                step(kind, model, batch)
            memory[kind] = peak.extra
        times = common.compare({kind: (lambda k=kind, m=model, b=batch: step(k, m, b)) for kind in KINDS}, device,
                               repeats=repeats, warmup=0)
        n = int(batch["response_mask"].sum())
        row = dict(dtype=str(dtype).removeprefix("torch."), sequences=args.sequences, prompt=args.prompt,
                   response=args.response, response_tokens=n, vocab=151936, repeats=repeats,
                   response_logits_MiB=n * 151936 * dtype.itemsize / 2**20,
                   **{f"{k}_extra_peak_MiB": v / 2**20 for k, v in memory.items()},
                   **{f"{k}_ms": common.median(v) * 1e3 for k, v in times.items()},
                   speedup=common.ratio_spread(times["full_logits"], times["response_rows"]),
                   memory_ratio=memory["response_rows"] / memory["full_logits"])
        rows.append(row)
        s = row["speedup"]
        print(f"{row['dtype']:>8}: {args.sequences} x ({args.prompt} prompt + {args.response} response) tokens, "
              f"{n} response rows x V=151936 ({row['response_logits_MiB']:.0f} MiB of logits)\n"
              f"   extra peak: full logits {row['full_logits_extra_peak_MiB']:.0f} MiB | response rows "
              f"{row['response_rows_extra_peak_MiB']:.0f} MiB (ratio {row['memory_ratio']:.2f})\n"
              f"   fwd+bwd:    full logits {row['full_logits_ms']:.0f} ms | response rows {row['response_rows_ms']:.0f} ms"
              f" (x{s['median']:.2f} [{s['min']:.2f}, {s['max']:.2f}] over {repeats} repeats)")
        del model, batch
    common.write_results(args.out, "train_microbatch", dict(device=str(device), rows=rows))


if __name__ == "__main__":
    main()
