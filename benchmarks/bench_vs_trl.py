"""siri's trainer against TRL's GRPOTrainer, step for step, in one process.

Both train the same model (a tiny random Qwen2 by default; ``--model DIR`` for a local Hugging
Face model directory) on the same prompts, in the same order, with the same recipe: group size,
prompts per step, a constant cap, sampling at temperature 1, lr with no decay or weight decay,
gradient clipping at 1, DAPO's token-mean loss with clip 0.2 / 0.28, no KL, one exactly
on-policy optimizer step per step (siri: ``algo.old_logprobs: auto``; TRL skips its old-logprob
forward then too) and the same reward: ``siri.rewards.capped_reward``, truncated responses 0.
What differs is each tool's own machinery: siri's paged engine and fused loss against TRL's
``model.generate`` and its loss.

The steps are interleaved (a TRL step, then a siri step, ...: a callback of TRL's trainer runs
siri's ``Trainer.train_step`` after each of TRL's steps), so load from other jobs on a shared
machine hits both alike. Reported per tool, as medians over the timed steps (after
``--warmup``): seconds per step and per generated token; the split into generation, reward and
update (siri: its ``time_*_s`` metrics; TRL: its ``_generate`` and ``_calculate_rewards``
timed, the rest of the step counted as the update); the peak memory above the step's start
(CUDA: the allocator's peak; CPU: the peak resident set). Then the ratios TRL / siri.

    .venv/bin/python benchmarks/bench_vs_trl.py --repeats 2 --warmup 1          # smoke
    .venv/bin/python benchmarks/bench_vs_trl.py --model DIR --prompts 8 --group 8 --cap 1024 \\
        --dtype bfloat16 --repeats 10                                           # a measurement

Needs TRL (``pip install "siri[trl]"``). TRL generates with transformers' ``generate``, or with
vLLM colocated in the process with ``--trl-vllm`` (a GPU and vllm; the GPU suite passes it when
vllm is importable).
"""
from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

INSTRUCTION = "Let's think step by step and output the final answer within \\boxed{}."
MAX_PROMPT_TOKENS = 256


def problems(count: int) -> list[dict[str, str]]:
    g = torch.Generator().manual_seed(0)
    pairs = torch.randint(0, 100, (count, 2), generator=g).tolist()
    return [{"prompt": f"What is {a} + {b}?", "answer": str(a + b)} for a, b in pairs]


def corpus(rows: list[dict[str, str]]) -> list[str]:
    """The texts a benchmark model's tokenizer is trained on: the prompts and a boxed answer."""
    return [f"{r['prompt']} {INSTRUCTION} The answer is \\boxed{{{r['answer']}}}." for r in rows]


def tiny_model_dir(root: Path, rows: list[dict[str, str]]) -> Path:
    """A tiny random Qwen2 and byte-level BPE tokenizer with a chat template, saved under ``root``."""
    from siri.models.tiny_lm import save_tiny_lm

    save_tiny_lm(root / "model", corpus(rows), vocab_size=512, hidden_size=128, layers=2, max_positions=2048)
    return root / "model"


def llama_135m_dir(root: Path, rows: list[dict[str, str]]) -> Path:
    """A randomly initialised Llama with the shape of a 135M instruct model (30 layers, hidden
    576, 9 query / 3 KV heads of 64, MLP 1536, vocab 49,152, tied embeddings; 134.5M parameters),
    with a small BPE tokenizer whose ids fit its vocabulary. Random weights decode at the same
    speed as trained ones; they only differ in when a response stops."""
    import transformers

    from siri.models.tiny_lm import build_tokenizer

    tokenizer = build_tokenizer(corpus(rows), 512)
    config = transformers.LlamaConfig(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                                      num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=2048,
                                      tie_word_embeddings=True, rms_norm_eps=1e-5,
                                      eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    transformers.LlamaForCausalLM(config).save_pretrained(root / "model")
    tokenizer.save_pretrained(root / "model")
    return root / "model"


SHAPES = {"tiny": ("tiny random Qwen2", tiny_model_dir), "llama-135m": ("random Llama, 135M shape", llama_135m_dir)}


def kv_pool_gb(model_dir: Path, args) -> float:
    """Twice the KV cache a step's sequences can fill (prompt budget plus cap each): siri's pool
    sized to the work, as TRL's cache is, rather than siri's default share of free memory."""
    import transformers

    c = transformers.AutoConfig.from_pretrained(model_dir).get_text_config()
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    kv_heads = getattr(c, "num_key_value_heads", None) or c.num_attention_heads
    per_token = 2 * c.num_hidden_layers * kv_heads * head_dim * (2 if args.dtype == "bfloat16" else 4)
    return 2 * args.prompts * args.group * (MAX_PROMPT_TOKENS + args.cap) * per_token / 2**30


def siri_trainer(args, model_dir: Path, data: Path, root: Path, steps: int):
    from siri import Trainer
    from siri.config import config_from_dict

    cfg = config_from_dict({
        "model": {"path": str(model_dir), "dtype": args.dtype, "param_dtype": "float32", "device": args.device},
        "data": {"train": str(data), "instruction": INSTRUCTION, "max_prompt_tokens": MAX_PROMPT_TOKENS, "shuffle": False},
        "schedule": {"kind": "constant", "l_max": args.cap, "multiple_of": 1},
        "rollout": {"prompts_per_step": args.prompts, "group_size": args.group, "temperature": 1.0, "top_p": 1.0,
                    "kv_cache_gb": args.kv_cache_gb or kv_pool_gb(model_dir, args)},
        "algo": {"clip_low": 0.2, "clip_high": 0.28, "clip_c": None, "kl_coef": 0.0, "old_logprobs": "auto"},
        "optim": {"lr": args.lr, "weight_decay": 0.0, "grad_clip": 1.0},
        "reward": {"fn": "siri.rewards.capped:capped_reward", "workers": 0},
        "trainer": {"steps": steps, "seed": 0, "run_dir": str(root / "siri_run"), "progress": False,
                    "save_every": 0, "save_at_extrema": False, "save_rollouts": False},
    })
    cfg.validate()
    return Trainer(cfg)


def boxed_reward(prompts, completions, completion_ids, answer, **kwargs):
    """siri's capped_reward in TRL's form (CappedReward scores the truncated ones 0)."""
    from siri.rewards.capped import capped_reward

    texts = [c[0]["content"] if isinstance(c, list) else c for c in completions]
    return [capped_reward(text, ref, "stop") for text, ref in zip(texts, answer)]


def trl_generation(args) -> dict:
    """TRL's generation path: HF ``generate`` by default; ``--trl-vllm``: vLLM colocated in this
    process (TRL's fastest single-GPU setting), with a context that holds prompt plus cap."""
    if not args.trl_vllm:
        return {}
    return {"use_vllm": True, "vllm_mode": "colocate", "vllm_max_model_length": MAX_PROMPT_TOKENS + args.cap + 1}


def trl_trainer(args, model_dir: Path, rows: list[dict[str, str]], root: Path, steps: int):
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    from siri.integrations.trl import LengthScheduleCallback

    dataset = Dataset.from_list([{"prompt": [{"role": "user", "content": f"{r['prompt']} {INSTRUCTION}"}],
                                  "answer": r["answer"]} for r in rows])
    length = LengthScheduleCallback({"kind": "constant", "l_max": args.cap}, save_at_extrema=False)
    config = GRPOConfig(
        output_dir=str(root / "trl_run"), max_steps=steps, per_device_train_batch_size=args.prompts * args.group,
        gradient_accumulation_steps=1, num_generations=args.group, max_completion_length=args.cap,
        learning_rate=args.lr, lr_scheduler_type="constant", weight_decay=0.0, max_grad_norm=1.0, beta=0.0,
        loss_type="dapo", epsilon=0.2, epsilon_high=0.28, temperature=1.0, top_p=1.0, shuffle_dataset=False,
        logging_steps=1, save_strategy="no", report_to="none", use_cpu=args.device == "cpu",
        bf16=args.dtype == "bfloat16", seed=0, disable_tqdm=True,
        model_init_kwargs={"dtype": torch.float32}, **trl_generation(args))
    trainer = GRPOTrainer(model=str(model_dir), reward_funcs=[length.capped(boxed_reward)], args=config,
                          train_dataset=dataset)
    length.attach(trainer)
    return trainer


class Interleaved:
    """A TRL callback that times each TRL step and runs one siri step after it.

    ``rows[tool]`` gets one dict per step: step_s, generation_s, reward_s, update_s, tokens,
    peak_extra_bytes."""

    def __init__(self, trl, siri, device):
        from transformers import TrainerCallback

        self.trl, self.siri, self.device = trl, siri, torch.device(device)
        self.rows: dict[str, list[dict[str, float]]] = {"siri": [], "trl": []}
        self.stage = {"generation": 0.0, "reward": 0.0, "tokens": 0}
        self._wrap("_generate", "generation", count_tokens=True)
        self._wrap("_calculate_rewards", "reward")
        bench = self

        class Callback(TrainerCallback):
            def on_step_begin(self, args, state, control, **kwargs):
                bench.stage.update(generation=0.0, reward=0.0, tokens=0)
                bench.memory = common.PeakMemory(bench.device).__enter__()
                common.sync(bench.device)
                bench.start = time.perf_counter()

            def on_step_end(self, args, state, control, **kwargs):
                common.sync(bench.device)
                seconds = time.perf_counter() - bench.start
                bench.memory.__exit__(None, None, None)
                s = bench.stage
                bench.rows["trl"].append({"step_s": seconds, "generation_s": s["generation"], "reward_s": s["reward"],
                                          "update_s": seconds - s["generation"] - s["reward"],
                                          "tokens": s["tokens"], "peak_extra_bytes": bench.memory.extra})
                bench.siri_step()

        trl.add_callback(Callback())

    def _wrap(self, name: str, stage: str, count_tokens: bool = False) -> None:
        """Time TRL's method ``name`` (an instance attribute shadows the class's)."""
        original = getattr(self.trl, name)

        def timed(*args, **kwargs):
            common.sync(self.device)
            start = time.perf_counter()
            out = original(*args, **kwargs)
            common.sync(self.device)
            self.stage[stage] += time.perf_counter() - start
            if count_tokens:
                self.stage["tokens"] += sum(len(ids) for ids in out[1])      # _generate's completion_ids
            return out

        setattr(self.trl, name, timed)

    def siri_step(self) -> None:
        with common.PeakMemory(self.device) as memory:
            common.sync(self.device)
            start = time.perf_counter()
            m = self.siri.train_step()
            common.sync(self.device)
            seconds = time.perf_counter() - start
        self.rows["siri"].append({"step_s": seconds, "generation_s": m["time_rollout_s"], "reward_s": m["time_reward_s"],
                                  "update_s": m["time_update_s"], "tokens": m["tokens_generated"],
                                  "peak_extra_bytes": memory.extra})


def summarize(rows: list[dict[str, float]], warmup: int) -> dict:
    timed = rows[warmup:]
    out = {key: common.median([r[key] for r in timed]) for key in timed[0]}
    per_token = [r["step_s"] / max(r["tokens"], 1) for r in timed]
    out["s_per_token"] = common.median(per_token)
    out["s_per_token_range"] = [min(per_token), max(per_token)]     # the spread over the timed steps
    out["step_s_range"] = [min(r["step_s"] for r in timed), max(r["step_s"] for r in timed)]
    out["peak_extra_bytes"] = max(r["peak_extra_bytes"] for r in timed)
    out["steps"] = rows
    return out


def main() -> None:
    p = common.parser(__doc__)
    p.add_argument("--model", default=None, help="a local Hugging Face model directory (default: --shape)")
    p.add_argument("--shape", default="tiny", choices=tuple(SHAPES),
                   help="without --model: a random model of this shape, built here (nothing is downloaded)")
    p.add_argument("--prompts", type=int, default=2, help="prompts per step")
    p.add_argument("--group", type=int, default=4, help="responses per prompt (GRPO's G)")
    p.add_argument("--cap", type=int, default=64, help="max response tokens (a constant cap)")
    p.add_argument("--lr", type=float, default=1e-6)
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"),
                   help="compute dtype (master weights stay float32 in both)")
    p.add_argument("--trl-vllm", action="store_true",
                   help="TRL generates with vLLM (colocate) instead of HF generate (needs a GPU and vllm)")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps per tool before the --repeats timed ones")
    p.add_argument("--kv-cache-gb", type=float, default=None, help="siri's KV pool (default: twice what a step's sequences can fill)")
    args = p.parse_args()
    if args.warmup < 0 or args.repeats < 1:
        p.error(f"--warmup must be >= 0 and --repeats >= 1, got {args.warmup} / {args.repeats}")
    args.device = str(args.device or common.default_device())
    if args.device == "cpu":
        common.cpu_allocations_return_to_os()
    steps = args.warmup + args.repeats
    with tempfile.TemporaryDirectory(prefix="bench_vs_trl_") as tmp:
        root = Path(tmp)
        rows = problems(args.prompts * steps)
        data = root / "train.jsonl"
        data.write_text("".join(json.dumps(r) + "\n" for r in rows))
        model_dir = Path(args.model) if args.model else SHAPES[args.shape][1](root, rows)
        siri = siri_trainer(args, model_dir, data, root, steps)
        trl = trl_trainer(args, model_dir, rows, root, steps)
        bench = Interleaved(trl, siri, args.device)
        trl.train()
    results = {tool: summarize(bench.rows[tool], args.warmup) for tool in ("siri", "trl")}
    ratios = {key: results["trl"][key] / results["siri"][key]
              for key in ("step_s", "s_per_token", "generation_s", "update_s") if results["siri"][key] > 0}
    print(f"{'':6} {'s/step':>9} {'ms/token':>9} {'gen s':>8} {'reward s':>9} {'update s':>9} {'tokens':>7} "
          f"{'peak MiB':>9}")
    for tool, r in results.items():
        print(f"{tool:6} {r['step_s']:9.3f} {1e3 * r['s_per_token']:9.3f} {r['generation_s']:8.3f} "
              f"{r['reward_s']:9.3f} {r['update_s']:9.3f} {r['tokens']:7.0f} {r['peak_extra_bytes'] / 2**20:9.1f}")
    print("TRL / siri: " + ", ".join(f"{k} {v:.2f}x" for k, v in ratios.items()))
    common.write_results(args.out, "bench_vs_trl", {
        "device": args.device, "model": args.model or SHAPES[args.shape][0], "prompts_per_step": args.prompts,
        "group_size": args.group, "cap": args.cap, "dtype": args.dtype, "trl_generation": "vllm" if args.trl_vllm else "generate", "lr": args.lr, "warmup": args.warmup,
        "repeats": args.repeats, "process_peak_rss_bytes": common.proc_status_kib("VmHWM") * 1024,
        "siri": results["siri"], "trl": results["trl"], "ratios_trl_over_siri": ratios})


if __name__ == "__main__":
    main()
