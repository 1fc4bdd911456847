"""The trainer's rollout memory: one KV pool (and its CUDA graphs) per step, however many
dynamic-sampling rounds refill it, released before the update unless ``rollout.keep_kv_cache``;
the engine's batch state is sized once for the run's longest sequence."""
import pytest

from siri import Trainer, load_config
from siri.engine.cuda_graphs import buckets_for


class PoolEvents:
    """Records the engine's pool allocations and releases, and the graphs it captures."""

    def __init__(self, engine):
        self.events: list[str] = []
        self.captures = 0
        allocate, release, generate = engine.allocate_kv_cache, engine.release_kv_cache, engine.generate

        def allocate_kv_cache():
            if engine.pool is None:
                self.events.append("allocate")
            return allocate()

        def release_kv_cache():
            if engine.pool is not None:
                self.events.append("release")
            release()

        def generate_and_count(*args, **kwargs):
            outputs = generate(*args, **kwargs)
            self.events.append("generate")
            self.captures += engine.last_stats["graph_captures"]
            return outputs

        engine.allocate_kv_cache, engine.release_kv_cache = allocate_kv_cache, release_kv_cache
        engine.generate = generate_and_count


@pytest.mark.parametrize("keep", [False, True])
def test_one_pool_per_step_across_refill_rounds(workspace, tmp_path, keep):
    cfg = load_config(workspace / "config.yaml", [f"trainer.run_dir={tmp_path / 'run'}", "trainer.steps=3",
                                                  "algo.dynamic_sampling=true", "algo.max_sampling_rounds=4",
                                                  "reward.workers=0", "rollout.cuda_graphs=true",
                                                  f"rollout.keep_kv_cache={str(keep).lower()}"])
    seen = []
    trainer = Trainer(cfg, callbacks=[seen.append])
    assert trainer.engine.max_seq_len == cfg.data.max_prompt_tokens + trainer.schedule.longest_cap(3)
    pool = PoolEvents(trainer.engine)
    trainer.fit()
    rounds = [m["sampling_rounds"] for m in seen]
    assert sum(rounds) > len(rounds), "no step needed a refill round: the test proves nothing"
    assert pool.events.count("generate") == sum(rounds)
    if keep:
        assert pool.events.count("allocate") == 1 and "release" not in pool.events
    else:
        # per step: allocate, one generate per round, release (before the update)
        expected = [event for r in rounds for event in ["allocate", *["generate"] * r, "release"]]
        assert pool.events == expected
    # the state is sized for the run's longest sequence, so each pool's graphs are captured once
    rows = cfg.rollout.prompts_per_step * cfg.rollout.group_size
    assert pool.captures == (1 if keep else len(rounds)) * len(buckets_for(rows, cfg.rollout.max_num_seqs))


def test_a_failed_rollout_still_releases_the_pool(workspace, tmp_path):
    cfg = load_config(workspace / "config.yaml", [f"trainer.run_dir={tmp_path / 'run'}", "trainer.steps=1",
                                                  "reward.workers=0"])
    trainer = Trainer(cfg)
    engine, generate = trainer.engine, trainer.engine.generate

    def failing(*args, **kwargs):
        generate(*args, **kwargs)                  # allocates the pool, then fails
        raise RuntimeError("rollout failed")

    engine.generate = failing
    with pytest.raises(RuntimeError, match="rollout failed"):
        trainer.train_step()
    assert engine.pool is None
