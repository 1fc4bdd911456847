"""The memory plan (`siri train --dry-run`) against the measured peak of a real training run.

Builds a Qwen2 model of a few hundred million parameters (random weights, a byte-level BPE
tokenizer trained here), trains it for a few steps with bf16 compute and fp32 master weights
(the layout of a GPU run), and measures the peak memory of each phase: on CUDA
`torch.cuda.max_memory_allocated`, on the CPU the process's peak resident set above what it
held before the trainer started (glibc is told to return freed buffers, so the resident set
follows the live tensors). The plan is computed from the same config; its error is
(plan - measured) / measured per phase.

    .venv/bin/python benchmarks/bench_memory_plan.py               # about 3 minutes on 2 CPU cores
    .venv/bin/python benchmarks/bench_memory_plan.py --layers 4    # quicker, smaller model
    .venv/bin/python benchmarks/bench_memory_plan.py --keep-kv-cache   # the pool stays through the update

The trainer allocates AdamW's moments when it builds the optimizer, so every step, the first
included, has the whole persistent state; with ``--keep-kv-cache`` the update's measured peak
includes the kept KV pool, as the plan's does.
"""
import json
import sys
import tempfile
from pathlib import Path

import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

from siri import Trainer, load_config  # noqa: E402
from siri.train.memory_plan import GiB, plan_memory  # noqa: E402
from siri.models.tiny_lm import build_tokenizer  # noqa: E402


def build_workspace(root: Path, args) -> Path:
    """A model directory, a jsonl dataset and a config in ``root``; returns the config path."""
    import transformers

    g = torch.Generator().manual_seed(0)
    pairs = torch.randint(10, 99, (32, 2), generator=g).tolist()
    rows = [{"prompt": f"What is {a} + {b}?", "answer": str(a + b)} for a, b in pairs]
    tokenizer = build_tokenizer([f"{r['prompt']} {r['answer']}" for r in rows], vocab_size=400)
    config = transformers.Qwen2Config(
        vocab_size=args.vocab, hidden_size=args.hidden, intermediate_size=args.intermediate,
        num_hidden_layers=args.layers, num_attention_heads=args.hidden // 128, num_key_value_heads=2, head_dim=128,
        max_position_embeddings=4096, tie_word_embeddings=False, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config)
    model.save_pretrained(root / "model")
    tokenizer.save_pretrained(root / "model")
    del model
    (root / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = {
        "model": {"path": str(root / "model"), "dtype": "bfloat16", "param_dtype": "float32", "device": args.device,
                  "gradient_checkpointing": args.gradient_checkpointing},
        "data": {"train": str(root / "train.jsonl"), "instruction": None, "max_prompt_tokens": 32},
        "schedule": {"kind": "constant", "l_max": args.cap, "multiple_of": 16},
        "rollout": {"prompts_per_step": 4, "group_size": 2, "page_size": 16, "max_num_seqs": 8,
                    "kv_cache_gb": 0.25, "keep_kv_cache": args.keep_kv_cache},
        # padded micro-batches of several sequences, and more than one per step
        "algo": {"micro_batch_tokens": args.micro_batch_seqs * (32 + args.cap)},
        "reward": {"fn": "bench_memory_plan:varied_reward", "truncated_reward": None},
        "trainer": {"steps": args.steps, "run_dir": str(root / "run"), "save_every": 0, "save_at_extrema": False,
                    "progress": False},
    }
    path = root / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def varied_reward(text: str, answer: str, finish_reason: str) -> float:
    """Rewards that differ within a group (random weights never answer), so every step has
    nonzero advantages and a real gradient."""
    return float(len(text) % 3 == 0)


def changed_fraction(trainer: Trainer, model_dir: Path) -> float:
    """Fraction of the master weights' elements that differ from the initial checkpoint."""
    from safetensors.torch import load_file

    initial = {}
    for file in sorted(model_dir.glob("*.safetensors")):
        initial.update(load_file(file))
    changed = total = 0
    for name, weight in trainer.weights.master_model.state_dict().items():
        if name in initial:
            changed += int((weight.detach().cpu().float() != initial[name].float()).sum())
            total += weight.numel()
    return changed / max(total, 1)


class PhasePeaks:
    """Wraps the trainer's rollout and update stages and records each one's peak memory."""

    def __init__(self, trainer: Trainer, device: torch.device, baseline: int):
        self.device, self.baseline = device, baseline
        self.peaks = {"rollout": [], "update": []}
        for stage, method in (("rollout", "_generate"), ("update", "_update")):
            original = getattr(trainer, method)
            setattr(trainer, method, self._measured(stage, original))

    def _measured(self, stage, original):
        def run(*args, **kwargs):
            with common.PeakMemory(self.device) as peak:
                result = original(*args, **kwargs)
            self.peaks[stage].append(peak.start + peak.extra - self.baseline)
            return result
        return run


def current_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.memory_allocated()
    return common.proc_status_kib("VmRSS") * 1024


def main() -> None:
    p = common.parser(__doc__)
    p.add_argument("--layers", type=int, default=16)
    p.add_argument("--hidden", type=int, default=1024)
    p.add_argument("--intermediate", type=int, default=2816)
    p.add_argument("--vocab", type=int, default=32768)
    p.add_argument("--cap", type=int, default=256, help="response cap (tokens)")
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--micro-batch-seqs", type=int, default=4, help="full-length sequences per micro-batch")
    p.add_argument("--gradient-checkpointing", action="store_true")
    p.add_argument("--keep-kv-cache", action="store_true", help="rollout.keep_kv_cache: true")
    p.add_argument("--max-error", type=float, default=None,
                   help="exit 1 when a phase's |plan error| exceeds this fraction (e.g. 0.2)")
    p.add_argument("--min-changed", type=float, default=None,
                   help="exit 1 when fewer of the master weights' elements changed than this fraction")
    args = p.parse_args()
    device = torch.device(args.device) if args.device else common.default_device()
    args.device = device.type
    common.cpu_allocations_return_to_os()
    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(build_workspace(Path(tmp), args))
        plan = plan_memory(cfg, device_memory_gb=1024, device=device.type)
        baseline = current_bytes(device)
        trainer = Trainer(cfg)
        phases = PhasePeaks(trainer, device, baseline)
        trainer.fit()
        changed = changed_fraction(trainer, Path(tmp) / "model")
    # AdamW's state exists from the start (allocated with the optimizer): every step counts
    measured = {stage: max(v) for stage, v in phases.peaks.items()}
    planned = {"rollout": plan.rollout_peak, "update": plan.training_peak}
    error = {stage: (planned[stage] - measured[stage]) / measured[stage] for stage in planned}
    print(f"Qwen2 {plan.num_parameters / 1e6:.0f}M parameters, compute {plan.compute_dtype}, master "
          f"{plan.param_dtype}, {args.steps} steps, largest planned micro-batch {plan.micro_batch.batch} x "
          f"{plan.micro_batch.length}, checkpointing {'on' if args.gradient_checkpointing else 'off'}, "
          f"keep_kv_cache {'on' if args.keep_kv_cache else 'off'}, on {device.type}")
    for stage in ("update", "rollout"):
        print(f"  {stage:<8} plan {planned[stage] / GiB:6.2f} GiB | measured {measured[stage] / GiB:6.2f} GiB "
              f"(per step: {', '.join(f'{b / GiB:.2f}' for b in phases.peaks[stage])}) | error {error[stage]:+.1%}")
    print(f"  master weights changed: {changed:.1%} of elements")
    for item in plan.persistent + plan.training + plan.rollout:
        print(f"    {item.name:<26} {item.nbytes / GiB:6.2f} GiB  {item.note}")
    common.write_results(args.out, "memory_plan", dict(
        device=str(device), num_parameters=plan.num_parameters, args=vars(args),
        planned_bytes=planned, measured_bytes=measured, per_step_bytes=phases.peaks, error=error,
        changed_fraction=changed, items={i.name: i.nbytes for i in plan.persistent + plan.training + plan.rollout}))
    failures = []
    if args.max_error is not None and max(abs(e) for e in error.values()) > args.max_error:
        failures.append(f"plan error above {args.max_error:.0%}")
    if args.min_changed is not None and changed < args.min_changed:
        failures.append(f"only {changed:.1%} of the weights changed (wanted {args.min_changed:.0%})")
    if failures:
        sys.exit("bench_memory_plan: " + "; ".join(failures))


if __name__ == "__main__":
    main()
