"""DAPO dynamic sampling with refill: the collector's bookkeeping, and the trainer filling
every step's batch with unequal groups, exactly reproducible across a resume."""
import json
import warnings

import pytest

from siri import Trainer, load_config
from siri.algo.dynamic_sampling import GroupCollector
from siri.metrics import read_metrics

from training_run import deterministic, weights


def test_collector_refills_in_draw_order_and_discards_the_surplus():
    c = GroupCollector(4, drop_equal=True, refill=True, max_rounds=5)
    c.add_round([True, False, True, True], {1: "r0g1"})
    assert not c.done and [k.slot for k in c.kept] == [0]
    c.add_round([False, True, True, False], {0: "r1g0", 3: "r1g3"})
    assert not c.done and len(c.kept) == 3
    c.add_round([True, False, False, False], {2: "r2g2"})
    assert c.done
    assert [(k.slot, k.round, k.index, k.rollouts) for k in c.kept] == [
        (0, 0, 1, "r0g1"), (1, 1, 0, "r1g0"), (2, 1, 3, "r1g3"), (3, 2, 1, None)]
    # round 2's second group filled the batch; its last two are surplus
    assert c.stats() == {"sampling_rounds": 3, "groups_drawn": 12, "groups_discarded": 8, "groups_trained": 4}
    with pytest.raises(RuntimeError, match="already complete"):
        c.add_round([False] * 4, {})


def test_collector_stops_at_max_rounds_and_keeps_slots_without_refill():
    capped = GroupCollector(4, drop_equal=True, refill=True, max_rounds=2)
    capped.add_round([True] * 4, {})
    capped.add_round([True, False, True, True], {})
    assert capped.done and capped.stats()["groups_trained"] == 1
    drop_only = GroupCollector(4, drop_equal=True)
    drop_only.add_round([False, True, False, True], {})
    assert drop_only.done and [k.slot for k in drop_only.kept] == [0, 2]
    keep_all = GroupCollector(4)
    keep_all.add_round([True, True, False, True], {})
    assert [k.slot for k in keep_all.kept] == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="refill only"):
        GroupCollector(4, refill=True)


def _run(workspace, run_dir, *overrides):
    cfg = load_config(workspace / "config.yaml", [f"trainer.run_dir={run_dir}", "trainer.steps=4",
                                                  "algo.dynamic_sampling=true", "algo.max_sampling_rounds=6",
                                                  "reward.workers=0", *overrides])
    seen = []
    Trainer(cfg, callbacks=[seen.append]).fit()
    return seen


def test_refill_reaches_the_full_batch_and_trains_on_unequal_groups_only(workspace, tmp_path):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        metrics = _run(workspace, tmp_path / "run")
    short = [m["step"] for m in metrics if m["groups_trained"] < 4]
    warned = [str(w.message) for w in caught if "dynamic sampling kept" in str(w.message)]
    assert [int(text.split()[1].rstrip(":")) for text in warned] == short
    assert any(m["sampling_rounds"] > 1 and m["groups_trained"] == 4 for m in metrics), \
        "no step was refilled to a full batch: the test proves nothing"
    for m in metrics:
        # a full batch (prompts_per_step), or the round limit reached (a compression step at
        # cap 8 truncates nearly everything: all-zero groups)
        assert m["groups_trained"] == 4 or m["sampling_rounds"] == 6, m
        assert m["groups_drawn"] == 4 * m["sampling_rounds"]
        assert m["groups_discarded"] == m["groups_drawn"] - m["groups_trained"]
        rows = [json.loads(line) for line in (tmp_path / "run" / "rollouts" / f"step_{m['step']}.jsonl").open()]
        assert {r["round"] for r in rows} == set(range(m["sampling_rounds"]))
        groups = {}
        for r in rows:
            groups.setdefault((r["round"], r["prompt_index"]), []).append(r["reward"])
        unequal = [key for key, rewards in groups.items() if len(set(rewards)) > 1]     # draw order
        assert len(unequal) >= m["groups_trained"]
        # the groups with unequal rewards, in draw order up to a full batch, are trained: their
        # tokens are the update's
        kept_keys = unequal[:4]
        kept_tokens = sum(r["num_tokens"] for r in rows if (r["round"], r["prompt_index"]) in kept_keys)
        assert m["train_tokens"] == kept_tokens


def test_resume_with_refill_is_exact(workspace, tmp_path):
    whole = _run(workspace, tmp_path / "whole")
    cut = tmp_path / "cut"
    _run(workspace, cut, "trainer.steps=2", "trainer.save_every=2")
    resumed = _run(workspace, cut)
    assert deterministic(read_metrics(cut / "metrics.jsonl")) == deterministic(whole)
    assert resumed and resumed[0]["step"] == 2
    final, expected = weights(cut / "checkpoints" / "step_4"), weights(tmp_path / "whole" / "checkpoints" / "step_4")
    for name in expected:
        assert (final[name] == expected[name]).all(), name
