"""What a decode step costs the host: siri's engine vs Hugging Face `generate`.

Model: a 28-layer Qwen2 (the 1.5B model's depth) with negligible math: hidden 128, head_dim
64, 2 query heads over 1 KV head, vocab 512, random weights, bf16. What is left is per-step
and per-layer overhead, the part that a 16K-step rollout multiplies by 16K.

Reported:
1. torch ops per layer per decode step, counted with torch.profiler (top-level ops only, i.e.
   what Python dispatches; deterministic): the ops of a whole decode step at 28 layers minus
   those at 2 layers, over 26. Same for HF's forward. Goal: at most 20 for siri.
2. Decode step time with 256 sequences at a 256-token context, siri vs HF `generate` (HF's
   step = (time of 1 + N new tokens - time of 1) / N; both sample at temperature 1).
3. Step time at contexts of 256 and 4,096 tokens (256 samples of one prompt, so the prompt's
   pages are shared), split into the forward pass (which reads the KV: it grows with the
   context), sampling, and the engine's host bookkeeping (batch state, scheduler, outputs),
   which must not grow with the context.
"""
from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import torch
import transformers

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

from siri.engine import LLMEngine, SamplingParams  # noqa: E402
from siri.engine.op_count import DECODE_STEP, ops_per_decode_step, top_level_ops  # noqa: E402

VOCAB = 512


def build_model(layers: int, dtype: torch.dtype, device) -> torch.nn.Module:
    torch.manual_seed(0)
    config = transformers.Qwen2Config(
        vocab_size=VOCAB, hidden_size=128, intermediate_size=256, num_hidden_layers=layers,
        num_attention_heads=2, num_key_value_heads=1, head_dim=64, max_position_embeddings=8192,
        tie_word_embeddings=False)
    model = transformers.AutoModelForCausalLM.from_config(config, attn_implementation="sdpa")
    model = model.to(device=device, dtype=dtype).eval()
    model.generation_config.eos_token_id = None
    model.generation_config.pad_token_id = 0
    return model


def make_engine(model, sequences: int, pages: int) -> LLMEngine:
    return LLMEngine(model, page_size=16, max_num_seqs=sequences, num_pages=pages)


class StepTimer:
    """Wraps an engine's decode step, the step's forward pass and its sampler, to time each
    part."""

    def __init__(self, engine: LLMEngine, device):
        self.device = device
        self.step, self.forward, self.sample = [], [], []
        decode, forward = engine._decode, engine.runner.forward

        def step(*args, **kwargs):
            sampler = engine._sampler  # made per generate call: wrap the current one
            if not getattr(sampler, "_timed", False):
                sampler.launch_step, sampler._timed = self._timed(sampler.launch_step, self.sample), True
            return decode(*args, **kwargs)

        def decode_forward(batch, k, v):  # prefill batches carry query_seq; decode ones do not
            return timed_forward(batch, k, v) if batch.query_seq is None else forward(batch, k, v)

        timed_forward = self._timed(forward, self.forward)
        engine._decode = self._timed(step, self.step)
        engine.runner.forward = decode_forward

    def _timed(self, fn, into):
        def wrapper(*args, **kwargs):
            common.sync(self.device)
            start = time.perf_counter()
            result = fn(*args, **kwargs)
            common.sync(self.device)
            into.append(time.perf_counter() - start)
            return result
        return wrapper

    def medians(self) -> dict:
        step, forward, sample = (statistics.median(x) for x in (self.step, self.forward, self.sample))
        return dict(step=step, forward=forward, sample=sample, host=step - forward - sample)


def siri_step_parts(engine: LLMEngine, prompts, n: int, tokens: int, device) -> dict:
    """Median decode step seconds of one generate call, and its parts."""
    timer = StepTimer(engine, device)
    engine.generate(prompts, SamplingParams(n=n, temperature=1.0, max_tokens=tokens, seed=0))
    return timer.medians()


def siri_ops_per_step(layers: int, sequences: int, device) -> float:
    engine = make_engine(build_model(layers, torch.bfloat16, device), sequences, pages=sequences * 4)
    prompts = [[1 + (i % 100)] * 20 for i in range(sequences)]
    return ops_per_decode_step(engine, prompts, SamplingParams(n=1, temperature=1.0, max_tokens=6, seed=0))


def hf_ops_per_step(layers: int, sequences: int, device) -> float:
    model = build_model(layers, torch.bfloat16, device)
    forward = model.forward
    calls = []

    def annotated(*args, **kwargs):
        calls.append(1)
        name = "hf.prefill" if len(calls) == 1 else DECODE_STEP
        with torch.profiler.record_function(name):
            return forward(*args, **kwargs)

    model.forward = annotated
    ids = torch.randint(1, VOCAB, (sequences, 20), device=device)

    def run():
        calls.clear()
        model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=True, max_new_tokens=6, min_new_tokens=6)

    run()
    return top_level_ops(run, DECODE_STEP)


def hf_step_seconds(model, sequences: int, context: int, new_tokens: int, device, repeats: int) -> float:
    ids = torch.randint(1, VOCAB, (sequences, context), device=device)

    def generate(n):
        with torch.no_grad():
            model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=True, temperature=1.0, top_k=0,
                           max_new_tokens=n, min_new_tokens=n)

    times = common.compare({"one": lambda: generate(1), "many": lambda: generate(1 + new_tokens)}, device,
                           repeats=repeats, warmup=1)
    return (statistics.median(times["many"]) - statistics.median(times["one"])) / new_tokens


def main() -> None:
    p = common.parser(__doc__)
    p.add_argument("--sequences", type=int, default=256)
    p.add_argument("--layers", type=int, default=28)
    p.add_argument("--steps", type=int, default=24, help="decode steps per timed generate call")
    p.add_argument("--long-context", type=int, default=4096)
    p.add_argument("--max-ops-per-layer", type=float, default=None,
                   help="exit 1 when siri's ops per layer per step exceed this")
    args = p.parse_args()
    device = torch.device(args.device) if args.device else common.default_device()
    repeats = max(1, args.repeats // 5)
    print(f"{args.layers}-layer Qwen2, hidden 128, head_dim 64, bf16, {args.sequences} sequences, {device}")

    siri_full, siri_two = (siri_ops_per_step(n, args.sequences, device) for n in (args.layers, 2))
    hf_full, hf_two = (hf_ops_per_step(n, args.sequences, device) for n in (args.layers, 2))
    siri_per_layer = (siri_full - siri_two) / (args.layers - 2)
    hf_per_layer = (hf_full - hf_two) / (args.layers - 2)
    print(f"torch ops per decode step: siri {siri_full:.0f} ({siri_per_layer:.1f} per layer, "
          f"{siri_full - args.layers * siri_per_layer:.0f} per step outside the layers); "
          f"HF forward {hf_full:.0f} ({hf_per_layer:.1f} per layer)")

    model = build_model(args.layers, torch.bfloat16, device)
    rows = {}
    for context in (256, args.long_context):
        pages = args.sequences * (-(-(args.steps + 2) // 16) + 1) + context // 16 + 1
        engine = make_engine(model, args.sequences, pages)
        prompt = torch.randint(1, VOCAB, (context,), generator=torch.Generator().manual_seed(context)).tolist()
        samples = [siri_step_parts(engine, [prompt], args.sequences, args.steps, device) for _ in range(repeats)]
        rows[context] = {part: statistics.median(s[part] for s in samples) for part in samples[0]}
        r = rows[context]
        print(f"  context {context:5d}: siri step {1e3 * r['step']:7.2f} ms = forward {1e3 * r['forward']:7.2f} + "
              f"sampling {1e3 * r['sample']:5.2f} + host bookkeeping {1e3 * r['host']:5.2f} ms")
    short, long_ = rows[256], rows[args.long_context]
    host_growth = long_["host"] / short["host"]
    print(f"  host bookkeeping at {args.long_context} / at 256 tokens: x{host_growth:.2f} "
          f"(forward x{long_['forward'] / short['forward']:.2f}: the attention's KV reads)")

    hf_step = hf_step_seconds(model, args.sequences, 256, args.steps, device, repeats)
    print(f"  HF generate step at context 256: {1e3 * hf_step:7.2f} ms; siri is x{hf_step / short['step']:.2f} faster")
    common.write_results(args.out, "engine_overhead", dict(
        device=str(device), layers=args.layers, sequences=args.sequences,
        siri_ops_per_step=siri_full, siri_ops_per_layer=siri_per_layer, hf_ops_per_step=hf_full,
        hf_ops_per_layer=hf_per_layer, steps={str(k): v for k, v in rows.items()}, host_growth=host_growth,
        hf_step_seconds=hf_step, speedup_vs_hf=hf_step / short["step"]))
    if args.max_ops_per_layer is not None and siri_per_layer > args.max_ops_per_layer:
        sys.exit(f"siri runs {siri_per_layer:.1f} ops per layer per step, above --max-ops-per-layer "
                 f"{args.max_ops_per_layer}")


if __name__ == "__main__":
    main()
