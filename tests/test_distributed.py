"""Data-parallel training on the CPU with gloo, replicated (DDP-style) and sharded (FSDP2):
2 processes equal 1 process for the same global batch, a 2-process checkpoint resumes in 1
process, and a dead rank ends the job with a clear error."""
import os
import shutil
import socket
import subprocess
import sys
import time

import pytest
import torch

from siri.train.metrics import read_metrics
from training_run import TESTS, deterministic, run_cli, update_stats, weights

STEPS = 4
# the paper's lr: Adam's update of an element with a ~0 gradient is about +-lr whatever the
# rounding, so 1e-6 keeps the rounding differences between 1 and 2 processes below 1e-5
# model.device=cpu: these runs compare gloo ranks on the CPU (a one-GPU machine cannot give two
# ranks a device each)
COMMON = ("optim.lr=1e-6", f"trainer.steps={STEPS}", "trainer.save_rollouts=false", "trainer.save_every=2",
          "model.device=cpu")


def with_rank_options(workspace, *overrides):
    """``overrides`` plus the options whose rank logic the equality tests check: the ranks
    must agree on the groups dynamic sampling keeps, and gather their shares of an
    evaluation (5 problems: 3 on rank 0, 2 on rank 1)."""
    return (*overrides, "algo.dynamic_sampling=true", "algo.max_sampling_rounds=3", "trainer.eval_every=2",
            "eval.n=2", "eval.limit=5", f"eval.data={workspace / 'train.jsonl'}")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_ranks(workspace, run_dir, *overrides, world=2, env=None, probe=None):
    """Start the ranks by hand (the environment torchrun would set), so the test sees each
    rank's own exit status and message. ``run_dir`` may be a list, one per rank (a run
    directory per node). With ``probe`` (a directory) each rank only builds the Trainer and
    saves the step and weights it resumed with there (training_run.probe_resume)."""
    port = free_port()
    procs = []
    for rank in range(world):
        rank_env = {**os.environ, "PYTHONPATH": str(TESTS), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
                    "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world),
                    "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), **(env or {})}
        rank_dir = run_dir[rank] if isinstance(run_dir, (list, tuple)) else run_dir
        entry = ["-m", "siri", "train"] if probe is None else [str(TESTS / "training_run.py"), "probe"]
        # the default reward pool: min(8, CPUs // LOCAL_WORLD_SIZE) workers per rank
        cmd = [sys.executable, *entry, str(workspace / "config.yaml"), *([] if probe is None else [str(probe)]),
               f"trainer.run_dir={rank_dir}", "reward.workers=null", "model.device=cpu", *overrides]
        procs.append(subprocess.Popen(cmd, env=rank_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    return procs


def wait_all(procs, timeout=600):
    outs = [p.communicate(timeout=timeout) for p in procs]
    return [(p.returncode, out, err) for p, (out, err) in zip(procs, outs)]


@pytest.fixture(scope="module", params=["ddp", "fsdp"])
def parallelism(request):
    return request.param


@pytest.fixture(scope="module")
def two_ranks(workspace, tmp_path_factory, parallelism):
    run_dir = tmp_path_factory.mktemp("dist") / f"two-{parallelism}"
    for code, _, err in wait_all(launch_ranks(workspace, run_dir, *with_rank_options(workspace, *COMMON),
                                              f"trainer.parallelism={parallelism}")):
        assert code == 0, err[-3000:]
    return run_dir


@pytest.fixture(scope="module")
def one_rank(workspace, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("dist") / "one"
    run_cli(workspace, run_dir, *with_rank_options(workspace, *COMMON))
    return run_dir


def close_metrics(a, b, tol=1e-5):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.keys() == y.keys()
        for key in x:
            if isinstance(x[key], float):
                assert x[key] == pytest.approx(y[key], abs=tol), (x["step"], key)
            else:
                assert x[key] == y[key], (x["step"], key)


def test_two_processes_equal_one(one_rank, two_ranks):
    one = one_rank
    a = deterministic(read_metrics(one / "metrics.jsonl"))
    b = deterministic(read_metrics(two_ranks / "metrics.jsonl"))
    # rollouts are keyed by prompt and sample, not rank: identical lengths, rewards, truncation
    for x, y in zip(a, b):
        for key in ("response_len_mean", "response_len_max", "reward_mean", "truncation_rate", "tokens_generated",
                    "sampling_rounds", "groups_trained"):
            assert x[key] == y[key], key
    assert any(x["sampling_rounds"] > 1 for x in a), "no refill: the ranks' agreement on it is untested"
    assert [x["step"] for x in a if "eval_accuracy" in x] == [x["step"] for x in b if "eval_accuracy" in x] != []
    close_metrics(a, b)
    wa, wb = weights(one / "checkpoints" / f"step_{STEPS}"), weights(two_ranks / "checkpoints" / f"step_{STEPS}")
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], atol=1e-5, rtol=0)


def test_two_process_checkpoint_resumes_in_one(workspace, two_ranks, parallelism, tmp_path):
    run_dir = tmp_path / "resumed"
    for code, _, err in wait_all(launch_ranks(workspace, run_dir, *with_rank_options(workspace, *COMMON),
                                              "trainer.steps=2", f"trainer.parallelism={parallelism}")):
        assert code == 0, err[-3000:]
    run_cli(workspace, run_dir, *with_rank_options(workspace, *COMMON))        # 1 process, resume=auto from step_2
    close_metrics(deterministic(read_metrics(run_dir / "metrics.jsonl")),
                  deterministic(read_metrics(two_ranks / "metrics.jsonl")))
    wa, wb = weights(run_dir / "checkpoints" / f"step_{STEPS}"), weights(two_ranks / "checkpoints" / f"step_{STEPS}")
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], atol=1e-5, rtol=0)


def test_a_dead_rank_ends_the_job_with_a_clear_error(workspace, tmp_path):
    started = time.time()
    procs = launch_ranks(workspace, tmp_path / "dead", *COMMON, "trainer.dist_timeout_s=30",
                         env={"SIRI_FAULT": "update:2@1"})
    (code0, _, err0), (code1, _, _) = wait_all(procs, timeout=300)
    assert code1 == -9                       # the killed rank
    assert code0 != 0 and "another rank has probably died" in err0, err0[-3000:]
    assert time.time() - started < 120


def test_two_processes_train_bf16_compute_with_fp32_masters(workspace, parallelism, tmp_path):
    """bf16 compute over fp32 master weights on 2 ranks (DDP: fp32 master gradients summed;
    FSDP2: MixedPrecisionPolicy over fp32 shards, fp32 reduce-scatter) moves the weights at
    lr 1e-6 as far as one process does, and the checkpoint holds fp32."""
    mixed = ("model.dtype=bfloat16", "model.param_dtype=float32", "reward.truncated_reward=null")
    two, one = tmp_path / "two", tmp_path / "one"
    for code, _, err in wait_all(launch_ranks(workspace, two, *COMMON, *mixed, f"trainer.parallelism={parallelism}")):
        assert code == 0, err[-3000:]
    run_cli(workspace, one, *COMMON, *mixed)
    initial = weights(workspace / "model")
    stats = {}
    for name, run_dir in (("one", one), ("two", two)):
        final = weights(run_dir / "checkpoints" / f"step_{STEPS}")
        assert {t.dtype for t in final.values()} == {torch.float32}
        stats[name] = update_stats(initial, final)
    (one_fraction, one_norm), (two_fraction, two_norm) = stats["one"], stats["two"]
    assert one_fraction > 0.5 and two_fraction > 0.5
    assert 0.5 < two_norm / one_norm < 2.0


@pytest.fixture(scope="module")
def saved_steps(workspace, tmp_path_factory):
    """A run directory holding checkpoints step_2 and step_4 of the workspace config with
    different weights (saved by a Trainer in this process: resuming reads them the same
    however they were trained)."""
    from siri.config import load_config
    from siri.train.trainer import Trainer

    run_dir = tmp_path_factory.mktemp("dist") / "saved"
    trainer = Trainer(load_config(workspace / "config.yaml", [f"trainer.run_dir={run_dir}", "trainer.keep_last=5",
                                                                   "model.device=cpu"]))
    for step in (2, 4):
        with torch.no_grad():
            for p in trainer.weights.optimizer_parameters():
                p.add_(0.01)
        trainer.step = step
        trainer.save(["periodic"])
    trainer.scorer.close()
    return run_dir


def node_dirs(tmp_path, saved_steps, *steps_per_rank):
    """A run directory per rank (each node's local disk) holding copies of the given steps."""
    dirs = []
    for rank, steps in enumerate(steps_per_rank):
        run_dir = tmp_path / f"node{rank}"
        (run_dir / "checkpoints").mkdir(parents=True)
        for step in steps:
            shutil.copytree(saved_steps / "checkpoints" / f"step_{step}", run_dir / "checkpoints" / f"step_{step}")
        dirs.append(run_dir)
    return dirs


def test_every_rank_resumes_the_step_rank_0_chose(workspace, saved_steps, parallelism, tmp_path):
    """Run directories per node that disagree (rank 1's holds a newer step_4 too): every rank
    resumes rank 0's newest, step_2, with the same weights, under DDP and FSDP2."""
    dirs = node_dirs(tmp_path, saved_steps, [2], [2, 4])
    out = tmp_path / "probe"
    out.mkdir()
    for code, _, err in wait_all(launch_ranks(workspace, dirs, f"trainer.parallelism={parallelism}",
                                              "reward.workers=0", probe=out), timeout=300):
        assert code == 0, err[-3000:]
    saved = weights(saved_steps / "checkpoints" / "step_2")
    for rank in range(2):
        probe = torch.load(out / f"rank{rank}.pt")
        assert probe["step"] == 2, rank
        assert probe["weights"].keys() >= saved.keys()
        for name, tensor in saved.items():
            assert torch.equal(probe["weights"][name], tensor), (rank, name)


def test_a_rank_without_the_chosen_checkpoint_stops_every_rank_with_a_clear_error(workspace, saved_steps, tmp_path):
    """Rank 1's run directory lacks the checkpoint rank 0 resumes: both ranks exit with one line
    that names rank 1, the step and the fix, promptly (no rank waits in a collective)."""
    dirs = node_dirs(tmp_path, saved_steps, [4], [])
    started = time.time()
    results = wait_all(launch_ranks(workspace, dirs, *COMMON, "trainer.steps=6", "trainer.dist_timeout_s=60"),
                       timeout=120)
    for rank, (code, _, err) in enumerate(results):
        assert code == 2, (rank, err[-3000:])
        assert "Traceback" not in err, err[-3000:]
        line = next(x for x in err.splitlines() if x.startswith("siri train: error:"))
        assert "resuming from step_4" in line and "failed on 1 of 2 ranks" in line, line
        assert f"rank 1: {dirs[1] / 'checkpoints' / 'step_4'} does not exist" in line, line
        assert "trainer.run_dir" in line and "rank 0:" not in line, line
    assert time.time() - started < 60


@pytest.mark.parametrize("local_rank, visible", [(0, 2), (1, 2), (1, 1)])
def test_each_rank_takes_its_own_cuda_device_or_says_there_is_none(monkeypatch, local_rank, visible):
    """init_distributed's CUDA branch, with the device calls replaced: rank r binds cuda:r, and
    more ranks on a machine than devices is a clear error before any collective."""
    from siri.train import distributed

    bound, groups = [], []
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", str(local_rank))
    monkeypatch.setenv("LOCAL_RANK", str(local_rank))
    monkeypatch.setattr(torch.cuda, "device_count", lambda: visible)
    monkeypatch.setattr(torch.cuda, "set_device", bound.append)
    monkeypatch.setattr(distributed.dist, "is_initialized", lambda: False)
    monkeypatch.setattr(distributed.dist, "init_process_group", lambda **kwargs: groups.append(kwargs["backend"]))
    if local_rank >= visible:
        with pytest.raises(ValueError, match=f"LOCAL_RANK {local_rank} needs CUDA device {local_rank}, but 1 is "
                                             "visible"):
            distributed.init_distributed(True, 30.0)
        assert not bound and not groups
        return
    ctx = distributed.init_distributed(True, 30.0)
    assert bound == [torch.device("cuda", local_rank)] and groups == ["cpu:gloo,cuda:nccl"]
    assert ctx.device == torch.device("cuda", local_rank) and ctx.rank == local_rank and ctx.world_size == 2
