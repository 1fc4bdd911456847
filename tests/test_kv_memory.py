"""The KV pool's memory lifecycle: allocated when a rollout starts, returned afterwards
(measured as the process's resident memory on the CPU; CUDA's allocated bytes on a GPU), and
kept only when asked (``rollout.keep_kv_cache``)."""
from pathlib import Path

import pytest
import torch

from siri import Trainer, load_config
from siri.engine import LLMEngine, SamplingParams
from tiny_models import tiny_model

POOL_BYTES = 256 << 20


def resident_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        torch.cuda.synchronize()
        return torch.cuda.memory_allocated(device)
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def test_the_engine_allocates_at_generate_and_release_returns_the_memory(device):
    model = tiny_model("qwen2").to(device)
    engine = LLMEngine(model, page_size=16, kv_cache_bytes=POOL_BYTES, max_num_seqs=8)
    assert engine.pool is None, "no memory is held before the first rollout"
    params = SamplingParams(n=2, max_tokens=8, seed=1)
    before = resident_bytes(device)
    engine.generate([[1, 2, 3]], params)
    held = resident_bytes(device)
    assert engine.pool is not None and engine.pool.nbytes > 0.9 * POOL_BYTES
    assert held - before > 0.9 * POOL_BYTES
    engine.release_kv_cache()
    after = resident_bytes(device)
    assert engine.pool is None
    assert after - before < 0.1 * POOL_BYTES, f"{(after - before) / 2**20:.0f} MiB still held after release"
    # the next rollout allocates a fresh pool and generates the same tokens
    again = engine.generate([[1, 2, 3]], params)
    assert engine.pool is not None and [o.token_ids for o in again[0]] == [
        o.token_ids for o in LLMEngine(model, page_size=16, num_pages=64).generate([[1, 2, 3]], params)[0]]


@pytest.mark.parametrize("keep", [False, True])
def test_the_trainer_releases_the_pool_before_the_update(workspace, tmp_path, monkeypatch, keep):
    cfg = load_config(workspace / "config.yaml", [f"trainer.run_dir={tmp_path}", "trainer.steps=2",
                                                  "trainer.save_rollouts=false", "rollout.kv_cache_gb=0.25",
                                                  f"rollout.keep_kv_cache={str(keep).lower()}"])
    trainer = Trainer(cfg)
    seen = []
    real_update = trainer._update

    def update(minis):
        seen.append((trainer.engine.pool is not None, resident_bytes(trainer.device)))
        return real_update(minis)

    monkeypatch.setattr(trainer, "_update", update)
    start = resident_bytes(trainer.device)
    trainer.fit()
    assert len(seen) == 2
    for pool_held, resident in seen:
        assert pool_held == keep
        if keep:
            assert resident - start > 0.2 * 2**30
        else:
            assert resident - start < 0.1 * 2**30, f"{(resident - start) / 2**20:.0f} MiB above the start"


def test_the_trainer_allocates_adamw_state_before_the_first_rollout(workspace, tmp_path):
    """AdamW's moments exist once the Trainer is built, so the KV pool's sizing at the first
    rollout (or from the free memory, with keep_kv_cache) sees them."""
    trainer = Trainer(load_config(workspace / "config.yaml", [f"trainer.run_dir={tmp_path}"]))
    params = trainer.weights.optimizer_parameters()
    assert params and trainer.engine.pool is None
    for p in params:
        state = trainer.optimizer.state[p]
        assert state["exp_avg"].shape == p.shape and state["exp_avg_sq"].shape == p.shape
        assert float(state["step"]) == 0


def test_keep_kv_cache_sizes_the_pool_beside_the_update(workspace, tmp_path, monkeypatch):
    """With keep_kv_cache and no kv_cache_gb, the trainer gives the engine gpu_memory_fraction
    (0.8) of what is free (the device's query, replaced here as a GPU run would answer it)
    less what the memory plan says the update adds; the pool keeps that size through the
    updates. When the update leaves no room, the Trainer says so before any work."""
    from siri.engine import device_memory
    from siri.train.memory_plan import plan_memory
    from siri.models.shape import model_shape

    overrides = [f"trainer.run_dir={tmp_path}", "trainer.steps=2", "trainer.save_rollouts=false",
                 "rollout.kv_cache_gb=null", "rollout.keep_kv_cache=true"]
    cfg = load_config(workspace / "config.yaml", overrides)
    shape = model_shape(str(workspace / "model"))
    # what the update adds to the persistent state (the plan without the kept pool)
    released = load_config(workspace / "config.yaml", overrides + ["rollout.keep_kv_cache=false"])
    plan = plan_memory(released, shape, device_memory_gb=1, device="cpu", advise=False)
    update = plan.training_peak - sum(i.nbytes for i in plan.persistent)
    headroom = 64 << 20
    monkeypatch.setattr(device_memory, "free_bytes", lambda device: update + headroom)
    page_bytes = cfg.rollout.page_size * shape.kv_bytes_per_token(4)          # fp32 on the CPU
    pages = int(headroom * 0.8) // page_bytes
    trainer = Trainer(cfg)
    assert trainer.engine.pool_pages() == pages
    seen = []
    real_update = trainer._update

    def update_phase(minis):
        seen.append(trainer.engine.pool.num_pages)
        return real_update(minis)

    monkeypatch.setattr(trainer, "_update", update_phase)
    trainer.fit()
    assert seen == [pages, pages]
    monkeypatch.setattr(device_memory, "free_bytes", lambda device: update // 2)
    with pytest.raises(ValueError, match="keep_kv_cache.*no room"):
        Trainer(load_config(workspace / "config.yaml", overrides))
