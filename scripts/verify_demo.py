"""Independent check of a `siri demo` run with plain Hugging Face `generate` (no siri kernels,
no siri engine): re-evaluates every checkpoint of one seed in DIR/summary.json (the first by
default) on DIR/data/eval.jsonl's `input` texts and compares with the numbers siri's eval
reported for that seed, overall and per tier.

    python scripts/verify_demo.py siri-demo [--samples 4] [--seed-index 0 | --all-seeds] [--json verify.json]

Exit status 0 when the re-evaluation agrees with the report for every checkpoint (accuracy
within 4 points, mean tokens within 10%). The demo's own verdict is printed after it.
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
from siri.rewards.correctness import is_correct


def hf_evaluate(checkpoint: str, rows: list[dict], samples: int, temperature: float, max_tokens: int,
                seed: int, batch: int = 16) -> dict:
    model = transformers.AutoModelForCausalLM.from_pretrained(checkpoint).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(checkpoint)
    tokenizer.padding_side = "left"
    eos = tokenizer.eos_token_id
    correct, lengths, tiers = [], [], []
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
            tiers.append(row.get("tier", "all"))
            text = tokenizer.decode(ids, skip_special_tokens=True)
            correct.append(is_correct(capped_reward(text, row["answer"], "stop" if finished else "length")))
    per_tier = {}
    for tier in dict.fromkeys(tiers):
        picked = [i for i, t in enumerate(tiers) if t == tier]
        per_tier[tier] = {"accuracy": statistics.fmean(correct[i] for i in picked),
                          "mean_tokens": statistics.fmean(lengths[i] for i in picked)}
    return {"accuracy": statistics.fmean(correct), "mean_tokens": statistics.fmean(lengths), "tiers": per_tier}


TOLERANCE = {"accuracy_points": 4, "mean_tokens_fraction": 0.10}


def verify_seed(summary: dict, rows: list[dict], seed_index: int, samples: int, hf_seed: int) -> dict:
    """Re-evaluate seed ``seed_index``'s compared checkpoints with HF generate and print a line
    each; ``{"agree": bool, "checkpoints": {name: {"siri", "hf", "agrees"}}}``."""
    settings = summary["eval_settings"]
    reported = summary["per_seed"][str(summary["seeds"][seed_index])]
    agree, compared = True, {}
    print(f"seed {summary['seeds'][seed_index]}")
    print(f"{'checkpoint':15} {'siri acc':>9} {'hf acc':>8} {'siri tok':>9} {'hf tok':>8}   per tier (hf acc / tok)")
    for name in summary["checkpoints"]:
        s = reported[name]
        hf = hf_evaluate(s["checkpoint"], rows, samples, settings["temperature"], settings["max_tokens"], hf_seed)
        ok = abs(hf["accuracy"] - s["accuracy"]) <= TOLERANCE["accuracy_points"] / 100 and \
            abs(hf["mean_tokens"] - s["mean_tokens"]) <= TOLERANCE["mean_tokens_fraction"] * s["mean_tokens"]
        agree &= ok
        compared[name] = {"siri": {k: s[k] for k in ("accuracy", "mean_tokens")}, "hf": hf, "agrees": ok}
        tiers = "  ".join(f"{t} {100 * v['accuracy']:.0f}% / {v['mean_tokens']:.0f}" for t, v in hf["tiers"].items())
        print(f"{name:15} {100 * s['accuracy']:8.1f}% {100 * hf['accuracy']:7.1f}% "
              f"{s['mean_tokens']:9.1f} {hf['mean_tokens']:8.1f}  {'agrees ' if ok else 'DIFFERS'}  {tiers}")
    return {"agree": agree, "checkpoints": compared}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("demo_dir")
    parser.add_argument("--samples", type=int, default=None, help="samples per prompt (default: the demo's)")
    parser.add_argument("--seed-index", type=int, default=0, help="which of the demo's seeds to re-evaluate")
    parser.add_argument("--all-seeds", action="store_true", help="re-evaluate every seed of the demo")
    parser.add_argument("--seed", type=int, default=1234, help="torch seed of the HF sampling")
    parser.add_argument("--json", help="also write every checkpoint's two evaluations and whether they agree here")
    args = parser.parse_args()
    transformers.utils.logging.disable_progress_bar()   # one "Loading weights" bar per checkpoint
    out = Path(args.demo_dir)
    summary = json.loads((out / "summary.json").read_text())
    rows = [json.loads(line) for line in Path(summary["eval_file"]).open()]
    samples = args.samples or summary["eval_settings"]["n"]
    if not 0 <= args.seed_index < len(summary["seeds"]):
        parser.error(f"--seed-index must be in [0, {len(summary['seeds'])}), got {args.seed_index}")
    indices = range(len(summary["seeds"])) if args.all_seeds else [args.seed_index]
    seeds = {str(summary["seeds"][i]): verify_seed(summary, rows, i, samples, args.seed) for i in indices}
    agree = all(seed["agree"] for seed in seeds.values())
    if args.json:
        Path(args.json).write_text(json.dumps({"samples": samples, "hf_seed": args.seed, "tolerance": TOLERANCE,
                                               "agree": agree, "seeds": seeds}, indent=1))
    print("the demo's verdict:")
    for line in summary["verdict"]["lines"]:
        print(f"  {line}")
    return 0 if agree else 1


if __name__ == "__main__":
    sys.exit(main())
