"""Packing rollouts into token-budget micro-batches and collating them."""
import random

import pytest
import torch

from siri.algo.rollout_batch import Rollout, collate, pack_by_token_budget


@pytest.mark.parametrize("seed", range(5))
def test_packing_respects_the_budget_and_covers_every_index_once(seed):
    rng = random.Random(seed)
    lengths = [rng.randint(1, 300) for _ in range(rng.randint(1, 60))]
    budget = rng.choice([1, 64, 300, 1000])
    batches = pack_by_token_budget(lengths, budget)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for b in batches:
        assert len(b) == 1 or len(b) * max(lengths[i] for i in b) <= budget
    assert pack_by_token_budget(lengths, budget) == batches


def test_packing_edge_cases():
    assert pack_by_token_budget([], 10) == []
    assert pack_by_token_budget([50], 10) == [[0]]
    assert pack_by_token_budget([5, 5, 5, 5], 10) == [[0, 1], [2, 3]]
    with pytest.raises(ValueError, match="budget"):
        pack_by_token_budget([1], 0)


def test_collate_masks_exactly_the_response_targets():
    rollouts = [Rollout([5, 6, 7], [8, 9], [-0.1, -0.2], "stop", advantage=1.5),
                Rollout([1], [2, 3, 4, 5], [-1.0] * 4, "length", advantage=-0.5)]
    rollouts[0].old_logprobs = torch.tensor([-0.1, -0.2])
    rollouts[1].old_logprobs = torch.tensor([-1.0, -2.0, -3.0, -4.0])
    mb = collate(rollouts, pad_id=0, device=torch.device("cpu"))
    assert mb.input_ids.tolist() == [[5, 6, 7, 8, 9], [1, 2, 3, 4, 5]]
    assert mb.attention_mask.tolist() == [[1] * 5, [1] * 5]
    assert mb.targets.tolist() == [[6, 7, 8, 9], [2, 3, 4, 5]]
    assert mb.response_mask.tolist() == [[False, False, True, True], [True, True, True, True]]
    # the flat response rows are the mask's True positions in row-major order
    assert mb.response_targets.tolist() == mb.targets[mb.response_mask].tolist() == [8, 9, 2, 3, 4, 5]
    assert mb.response_advantages.tolist() == [1.5, 1.5, -0.5, -0.5, -0.5, -0.5]
    assert mb.num_response_tokens == 6
    assert torch.allclose(mb.gather("old_logprobs"), torch.tensor([-0.1, -0.2, -1, -2, -3, -4]))
    mb.scatter(torch.arange(6.), "ref_logprobs")
    assert rollouts[0].ref_logprobs.tolist() == [0, 1] and rollouts[1].ref_logprobs.tolist() == [2, 3, 4, 5]


def test_collate_pads_on_the_right():
    mb = collate([Rollout([1, 2], [3], [0.0], "stop"), Rollout([4], [5, 6, 7, 8], [0.0] * 4, "stop")],
                 pad_id=9, device=torch.device("cpu"))
    assert mb.input_ids.tolist() == [[1, 2, 3, 9, 9], [4, 5, 6, 7, 8]]
    assert mb.attention_mask.tolist() == [[1, 1, 1, 0, 0], [1] * 5]
    assert mb.response_mask[0].tolist() == [False, True, False, False]
