"""Scoring a sampling round (siri.algo.rollout_scoring) and what every rank keeps of it
(siri.algo.step_samples): truncated responses score truncated_reward without a call, length
terms and group advantages follow, failures are counted, and the gathered samples come back
in global group order with the filter's flags."""
import pytest
import torch

from siri.algo.dynamic_sampling import KeptGroup
from siri.algo.rollout_batch import Rollout
from siri.algo.rollout_scoring import RolloutScorer
from siri.algo.step_samples import RewardFailures, SampleStats, StepSamples
from siri.train.distributed import DistContext
from siri.ops.group_advantages import group_advantages
from siri.rewards.length_shaping import LengthShaping
from siri.rewards.scoring import ScoreResult


class Tokenizer:
    def decode(self, ids, skip_special_tokens=True):
        return " ".join(str(i) for i in ids)


class Scorer:
    """Scores 1.0 when the text's first token equals the answer; "fail" answers are errors."""

    def __init__(self):
        self.calls = []

    def score(self, items):
        self.calls += list(items)
        result = ScoreResult([float(text.split()[0] == answer) for text, answer, _ in items])
        for k, (_, answer, _) in enumerate(items):
            if answer == "fail":
                result.rewards[k] = 0.0
                result.errors += 1
                result.timeouts += 1
        return result

    def close(self):
        pass


def rollout(first, length, finish="stop"):
    return Rollout([1, 2], [first] + [0] * (length - 1), [-0.5] * length, finish)


def scorer(truncated_reward=0.0, shaping=None):
    return RolloutScorer(Tokenizer(), Scorer(), group_size=2, truncated_reward=truncated_reward,
                         length_shaping=shaping or LengthShaping(), advantage_eps=1e-6, advantage_scale="group")


def test_a_round_is_decoded_scored_shaped_and_normalised_per_group():
    rollouts = [rollout(7, 3), rollout(5, 8, "length"), rollout(9, 2), rollout(9, 4), rollout(1, 1), rollout(2, 1)]
    s = scorer(shaping=LengthShaping(overlong_buffer=4, overlong_factor=1.0))
    groups, failures = s.score(rollouts, ["7", "9", "fail"], cap=8)
    assert [len(g) for g in groups] == [2, 2, 2] and groups[0][1] is rollouts[1]
    assert rollouts[0].text == "7 0 0"
    # the truncated response is not sent to the reward function: truncated_reward
    assert [text for text, _, _ in s.scorer.calls] == [r.text for k, r in enumerate(rollouts) if k != 1]
    assert [r.correctness for r in rollouts] == [1.0, 0.0, 1.0, 1.0, 0.0, 0.0]
    # DAPO's overlong buffer: lengths past cap - buffer = 4 lose (length - 4) / 4
    assert [r.reward for r in rollouts] == [1.0, -1.0, 1.0, 1.0, 0.0, 0.0]
    expected = group_advantages(torch.tensor([r.reward for r in rollouts]), 2, 1e-6)
    assert [r.advantage for r in rollouts] == expected.tolist()
    assert failures == RewardFailures(errors=2, timeouts=2, workers_replaced=0)


def test_without_truncated_reward_truncated_responses_are_scored():
    rollouts = [rollout(7, 8, "length"), rollout(3, 2)]
    s = scorer(truncated_reward=None)
    s.score(rollouts, ["7"], cap=8)
    assert len(s.scorer.calls) == 2 and rollouts[0].correctness == 1.0


def test_sample_stats_and_failures():
    r = rollout(7, 3, "length")
    r.reward, r.correctness = -0.5, 0.5
    stats = SampleStats.of(r)
    assert stats == SampleStats(3, -0.5, "length", 0.5) and stats.truncated and stats.correct
    assert RewardFailures(1, 2, 3) + RewardFailures(10, 20, 30) == RewardFailures(11, 22, 33)


def scored_group(*rewards):
    group = [rollout(1, k + 1) for k in range(len(rewards))]
    for r, value in zip(group, rewards):
        r.reward = r.correctness = value
    return group


@pytest.mark.parametrize("metric", ["acc", "reward"])
def test_step_samples_keep_every_round_in_group_order_with_the_filter_flags(metric):
    samples = StepSamples(metric)
    one = DistContext()
    # the groups of round 0 come in any order: they are put in group order
    flags = samples.add_round(one, 0, [1, 0], [scored_group(1.0, 1.0), scored_group(1.0, 0.0)], RewardFailures(1))
    assert flags == [False, True]
    assert [s.reward for s in samples.groups[(0, 0)]] == [1.0, 0.0]
    flags = samples.add_round(one, 1, [0], [scored_group(0.5, 0.75)], RewardFailures(2, 1))
    # 0.5 and 0.75 are both correct (acc: equal) but different rewards (reward: not equal)
    assert flags == [metric == "acc"]
    assert samples.all_equal == [False, True, metric == "acc"]
    assert samples.failures == RewardFailures(3, 1)
    assert [s.reward for s in samples.drawn()] == [1.0, 0.0, 1.0, 1.0, 0.5, 0.75]
    assert [s.reward for s in samples.trained([KeptGroup(0, 1, 0), KeptGroup(1, 0, 0)])] == [0.5, 0.75, 1.0, 0.0]
