"""siri.algo.policy_update pieces: kept groups go to the mini-batch of their slot, and the
update's statistics add up and average over optimizer steps."""
from siri.algo.dynamic_sampling import KeptGroup
from siri.algo.policy_update import UpdateStats, assign_mini_batches
from siri.algo.rollout_batch import Rollout


def group(tag, finishes=("stop", "length")):
    return [Rollout([tag], [tag, k], [0.0, 0.0], finish) for k, finish in enumerate(finishes)]


def test_each_kept_group_trains_in_the_mini_batch_of_its_slot():
    a, b, c = group(1), group(2), group(3)
    kept = [KeptGroup(0, 0, 0, a), KeptGroup(3, 0, 3, b), KeptGroup(2, 1, 0, None), KeptGroup(5, 1, 4, c)]
    minis = assign_mini_batches(kept, target=6, mini_batches=3, mask_truncated=False)
    assert minis == [a, b, c]                       # slots 0-1, 2-3, 4-5; slot 2 is another rank's
    masked = assign_mini_batches(kept, target=6, mini_batches=3, mask_truncated=True)
    assert masked == [a[:1], b[:1], c[:1]]
    assert assign_mini_batches([], target=4, mini_batches=2, mask_truncated=False) == [[], []]


def test_update_stats_mean_over_optimizer_steps():
    one = UpdateStats(loss=1.0, grad_norm=3.0, update_skipped=1.0, train_tokens=10.0, optimizer_steps=1)
    two = UpdateStats(loss=2.0, grad_norm=1.0, update_skipped=0.0, train_tokens=30.0, optimizer_steps=1)
    mean = (UpdateStats() + one + two).mean()
    assert (mean.loss, mean.grad_norm, mean.update_skipped, mean.train_tokens, mean.optimizer_steps) == \
        (1.5, 2.0, 0.5, 20.0, 2)
    assert UpdateStats().mean() == UpdateStats()
