"""Independent check of a `siri demo` run with plain Hugging Face `generate` (no siri kernels,
no siri engine): re-evaluates the five checkpoints in DIR/summary.json on DIR/data/eval.jsonl's
`input` texts, compares with the reported numbers, and tests the demo's claims.

    python scripts/verify_demo.py siri-demo [--samples 4]

Exit status 0 when the re-evaluation agrees with the report (accuracy within 4 points, mean
tokens within 10%); the claims are printed as PASS/MISS either way.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch
import transformers

from siri.rewards.capped import capped_reward

CHECKPOINTS = ("base", "siri_low", "siri_high", "baseline", "compress_only")


def hf_evaluate(checkpoint: str, rows: list[dict], samples: int, temperature: float, max_tokens: int,
                seed: int, batch: int = 16) -> dict:
    model = transformers.AutoModelForCausalLM.from_pretrained(checkpoint).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(checkpoint)
    tokenizer.padding_side = "left"
    eos = tokenizer.eos_token_id
    correct, lengths = [], []
    torch.manual_seed(seed)
    for start in range(0, len(rows), batch):
        chunk = rows[start:start + batch]
        enc = tokenizer([r["input"] for r in chunk], add_special_tokens=False, return_tensors="pt", padding=True)
        with torch.no_grad():
            out = model.generate(**enc, do_sample=True, temperature=temperature, top_k=0, top_p=1.0,
                                 max_new_tokens=max_tokens, num_return_sequences=samples, eos_token_id=eos,
                                 pad_token_id=tokenizer.pad_token_id)
        new = out[:, enc["input_ids"].shape[1]:].tolist()
        for i, ids in enumerate(new):
            row = chunk[i // samples]
            finished = eos in ids
            ids = ids[:ids.index(eos) + 1] if finished else ids
            lengths.append(len(ids))
            text = tokenizer.decode(ids, skip_special_tokens=True)
            correct.append(capped_reward(text, row["answer"], "stop" if finished else "length") > 0.5)
    return {"accuracy": statistics.fmean(correct), "mean_tokens": statistics.fmean(lengths)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("demo_dir")
    parser.add_argument("--samples", type=int, default=None, help="samples per prompt (default: the demo's)")
    parser.add_argument("--seed", type=int, default=1234)
    args = parser.parse_args()
    out = Path(args.demo_dir)
    summary = json.loads((out / "summary.json").read_text())
    settings = summary["eval_settings"]
    rows = [json.loads(line) for line in Path(summary["eval_file"]).open()]
    samples = args.samples or settings["n"]
    agree = True
    hf = {}
    print(f"{'checkpoint':14} {'siri acc':>9} {'hf acc':>8} {'siri tok':>9} {'hf tok':>8}")
    for name in CHECKPOINTS:
        hf[name] = hf_evaluate(summary[name]["checkpoint"], rows, samples, settings["temperature"],
                               settings["max_tokens"], args.seed)
        s = summary[name]
        ok = abs(hf[name]["accuracy"] - s["accuracy"]) <= 0.04 and \
            abs(hf[name]["mean_tokens"] - s["mean_tokens"]) <= 0.10 * s["mean_tokens"]
        agree &= ok
        print(f"{name:14} {100 * s['accuracy']:8.1f}% {100 * hf[name]['accuracy']:7.1f}% "
              f"{s['mean_tokens']:9.1f} {hf[name]['mean_tokens']:8.1f}  {'agrees' if ok else 'DIFFERS'}")
    base, low, baseline = hf["base"], hf["siri_low"], hf["baseline"]
    first = summary["first_cycle"]
    claims = {
        "SIRI-low tokens <= 0.7 x base": low["mean_tokens"] <= 0.7 * base["mean_tokens"],
        "SIRI-low accuracy >= base - 2 points": low["accuracy"] >= base["accuracy"] - 0.02,
        "first cycle: SIRI's training length falls below the baseline's and stays there": _below_and_stays(
            first["siri"], first["baseline"]),
        "SIRI-low not dominated by the baseline's final": not (
            baseline["accuracy"] > low["accuracy"] and baseline["mean_tokens"] < low["mean_tokens"]),
    }
    for claim, held in claims.items():
        print(f"{'PASS' if held else 'MISS'}  {claim}")
    c = hf["compress_only"]
    print(f"compress-only (reported, no claim): accuracy {100 * c['accuracy']:.1f}%, {c['mean_tokens']:.1f} tokens")
    return 0 if agree else 1


def _below_and_stays(siri: list[float], baseline: list[float], window: int = 5) -> bool:
    """With a trailing moving average over ``window`` steps, SIRI's mean length drops below the
    baseline's at some step of the first cycle and stays below for the rest of it."""
    def smooth(xs):
        return [statistics.fmean(xs[max(0, i - window + 1):i + 1]) for i in range(len(xs))]

    s, b = smooth(siri), smooth(baseline)
    below = [x < y for x, y in zip(s, b)]
    return any(all(below[i:]) for i in range(len(below) - 1))


if __name__ == "__main__":
    sys.exit(main())
