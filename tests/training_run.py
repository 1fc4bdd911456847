"""A tiny training setup shared by the trainer and reliability tests: a Qwen2 model and
byte-level BPE tokenizer built and saved by the test, a jsonl dataset, a config with a
cosine cap, and a way to run `python -m siri train` in a subprocess.

``python training_run.py probe CONFIG OUT [OVERRIDES...]`` (a rank of a distributed test)
builds the Trainer, which resumes as configured, and saves the step and the full weights it
resumed with to ``OUT/rank<R>.pt``."""
import json
import os
import subprocess
import sys
from pathlib import Path

import torch
import yaml
from safetensors.torch import load_file

from siri.models.tiny_lm import save_tiny_lm

TESTS = Path(__file__).resolve().parent
# Fields that measure time, not the computation: they differ between any two runs.
TIMING = ("rollout_tokens_per_s", "time_rollout_s", "time_reward_s", "time_update_s", "time_step_s", "eval_seconds")
STEPS = 6


def problems(n, seed):
    g = torch.Generator().manual_seed(seed)
    pairs = torch.randint(0, 50, (n, 2), generator=g).tolist()
    return [{"prompt": f"What is {a} + {b}?", "answer": str(a + b)} for a, b in pairs]


def make_workspace(root):
    rows = problems(24, seed=1)
    corpus = [f"{r['prompt']} Let's add. {r['answer']} wait, re-check. \\boxed{{{r['answer']}}}" for r in rows]
    save_tiny_lm(root / "model", corpus, vocab_size=300, hidden_size=128, layers=2, max_positions=256)
    (root / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = {
        "model": {"path": str(root / "model")},
        "data": {"train": str(root / "train.jsonl"), "instruction": "Answer in \\boxed{}.", "max_prompt_tokens": 64},
        "schedule": {"kind": "cosine", "l_max": 24, "l_min": 8, "period": 4, "multiple_of": 1},
        "rollout": {"prompts_per_step": 4, "group_size": 4, "page_size": 4, "max_num_seqs": 64,
                    "kv_cache_gb": 0.01},
        "algo": {"micro_batch_tokens": 200},
        "optim": {"lr": 3e-3},
        # in-process Trainer tests score serially (a pool's fork server costs ~3 s per Trainer
        # on 2 cores); every `siri train` subprocess (run_cli) uses the default worker pool
        "reward": {"fn": "reward_fns:even_length", "workers": 0},
        "trainer": {"steps": STEPS, "seed": 3, "save_every": 3, "keep_last": 1, "progress": False,
                    "save_rollouts": True},
    }
    (root / "config.yaml").write_text(yaml.safe_dump(config))
    return root


def run_cli(workspace, run_dir, *extra, wait=True, env=None, check=True):
    """`python -m siri train` on the workspace config, scoring rewards in the default worker pool
    as users do; ``env`` adds variables (e.g. SIRI_FAULT)."""
    env = {**os.environ, "PYTHONPATH": str(TESTS), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", **(env or {})}
    cmd = [sys.executable, "-m", "siri", "train", str(workspace / "config.yaml"), f"trainer.run_dir={run_dir}",
           "reward.workers=null", *extra]
    if not wait:
        return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    if check:
        assert out.returncode == 0, out.stderr[-3000:]
    return out


def deterministic(rows):
    return [{k: v for k, v in row.items() if k not in TIMING} for row in rows]


def weights(checkpoint_dir):
    return load_file(Path(checkpoint_dir) / "model.safetensors")


def update_stats(initial, final):
    """(fraction of parameter elements that changed, norm of the whole update) between two
    state dicts with the same keys."""
    changed = total = 0
    squares = 0.0
    for name, w0 in initial.items():
        delta = final[name].double() - w0.double()
        changed += int((delta != 0).sum())
        total += delta.numel()
        squares += float((delta ** 2).sum())
    return changed / total, squares ** 0.5


def probe_resume(config, out, overrides):
    """Build the Trainer (it resumes as configured) and save ``{"step", "weights"}`` of this
    rank to ``out/rank<R>.pt``: what each rank starts training from."""
    from siri.config import load_config
    from siri.train.distributed import shutdown
    from siri.train.trainer import Trainer

    trainer = Trainer(load_config(config, overrides))
    state = {k: v.detach().cpu().clone() for k, v in trainer.weights.checkpoint_state().items()}  # all ranks
    torch.save({"step": trainer.step, "weights": state}, Path(out) / f"rank{trainer.dist.rank}.pt")
    trainer.scorer.close()
    shutdown(trainer.dist)


if __name__ == "__main__" and sys.argv[1:2] == ["probe"]:
    probe_resume(sys.argv[2], sys.argv[3], sys.argv[4:])
