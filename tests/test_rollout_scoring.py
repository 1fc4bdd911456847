"""Scoring a sampling round (siri.algo.rollout_scoring) and what every rank keeps of it
(siri.algo.step_samples): rewards see each group's prompt, answer, row and the step; truncated
responses score truncated_reward without a call; weighted terms, with the correctness term
deciding correctness and the length terms; group advantages; failures are counted; and the
gathered samples come back in global group order with the filter's flags."""
import math
import warnings
from types import SimpleNamespace

import pytest
import torch

from siri.algo.dynamic_sampling import KeptGroup
from siri.algo.rollout_batch import Rollout
from siri.algo.rollout_scoring import RolloutScorer
from siri.algo.step_samples import RewardFailures, SampleStats, ScoredRound, StepSamples
from siri.ops.group_advantages import group_advantages
from siri.rewards.length_shaping import LengthShaping
from siri.rewards.reward_scorer import make_scorer
from siri.rewards.terms import RewardTerm
from siri.train.distributed import DistContext


class Tokenizer:
    def decode(self, ids, skip_special_tokens=True):
        return " ".join(str(i) for i in ids)


def first_token_matches(text, reference):
    """1.0 when the text's first token equals the answer; a "fail" answer raises."""
    if reference == "fail":
        raise RuntimeError("no verdict")
    return float(text.split()[0] == reference)


def example(answer, prompt="p", row=None):
    return SimpleNamespace(answer=answer, prompt=prompt, row=row if row is not None else {"answer": answer})


def rollout(first, length, finish="stop"):
    return Rollout([1, 2], [first] + [0] * (length - 1), [-0.5] * length, finish)


def scorer(reward=first_token_matches, truncated_reward=0.0, shaping=None):
    return RolloutScorer(Tokenizer(), make_scorer(reward, 0, None), group_size=2, truncated_reward=truncated_reward,
                         length_shaping=shaping or LengthShaping(), advantage_eps=1e-6, advantage_scale="group")


def test_a_round_is_decoded_scored_shaped_and_normalised_per_group():
    rollouts = [rollout(7, 3), rollout(5, 8, "length"), rollout(9, 2), rollout(9, 4), rollout(1, 1), rollout(2, 1)]
    calls = []

    def recording(text, reference):
        calls.append(text)
        return first_token_matches(text, reference)

    s = scorer(recording, shaping=LengthShaping(overlong_buffer=4, overlong_factor=1.0))
    with pytest.warns(UserWarning, match="no verdict"):
        scored = s.score(rollouts, [example("7"), example("9"), example("fail")], cap=8)
    assert [len(g) for g in scored.groups] == [2, 2, 2] and scored.groups[0][1] is rollouts[1]
    assert rollouts[0].text == "7 0 0"
    # the truncated response is not sent to the reward function: truncated_reward
    assert calls == [r.text for k, r in enumerate(rollouts) if k != 1]
    assert [r.correctness for r in rollouts] == [1.0, 0.0, 1.0, 1.0, 0.0, 0.0]
    # DAPO's overlong buffer: lengths past cap - buffer = 4 lose (length - 4) / 4
    assert [r.reward for r in rollouts] == [1.0, -1.0, 1.0, 1.0, 0.0, 0.0]
    expected = group_advantages(torch.tensor([r.reward for r in rollouts]), 2, 1e-6)
    assert [r.advantage for r in rollouts] == expected.tolist()
    assert scored.failures == RewardFailures(errors=2, timeouts=0, workers_replaced=0)
    assert scored.terms == [], "one term: no per-term scores"


def test_without_truncated_reward_truncated_responses_are_scored():
    rollouts = [rollout(7, 8, "length"), rollout(3, 2)]
    calls = []
    s = scorer(lambda text, reference, finish_reason: calls.append(finish_reason) or float(text[0] == reference),
               truncated_reward=None)
    s.score(rollouts, [example("7")], cap=8)
    assert calls == ["length", "stop"] and rollouts[0].correctness == 1.0


def test_rewards_see_the_prompt_row_and_step_of_their_group():
    seen = []

    def sees(response, prompt, row, step, reference):
        seen.append((response, prompt, row, step, reference))
        return 0.0

    rollouts = [rollout(1, 1), rollout(2, 1), rollout(3, 1), rollout(4, 1)]
    messages = [{"role": "user", "content": "What is 2 + 2?"}]
    examples = [example("1", prompt="one?", row={"id": 10}), example("4", prompt=messages, row={"id": 11})]
    scorer(sees).score(rollouts, examples, cap=8, step=5)
    assert seen == [("1", "one?", {"id": 10}, 5, "1"), ("2", "one?", {"id": 10}, 5, "1"),
                    ("3", messages, {"id": 11}, 5, "4"), ("4", messages, {"id": 11}, 5, "4")]
    # an example without prompt or row (an older caller) gives None and {}
    scorer(sees).score(rollouts[:2], [SimpleNamespace(answer="1")], cap=8)
    assert seen[-1] == ("2", None, {}, None, "1")


def short(response):
    return 1.0 - len(response) / 10


def test_weighted_terms_sum_and_the_correctness_term_decides():
    rollouts = [rollout(7, 3), rollout(5, 1), rollout(9, 2, "length"), rollout(9, 4)]
    terms = [RewardTerm(short, weight=1.0, name="short"),
             RewardTerm(first_token_matches, weight=2.0, correctness=True, name="right")]
    s = scorer(terms, shaping=LengthShaping(length_reward="kimi"))
    scored = s.score(rollouts, [example("7"), example("9")], cap=8)
    texts = [r.text for r in rollouts]
    assert [r.correctness for r in rollouts] == [1.0, 0.0, 0.0, 1.0]
    base = [short(texts[0]) + 2.0, short(texts[1]), 0.0, short(texts[3]) + 2.0]
    assert base[1] >= 0.5, "the wrong response's summed reward passes the threshold: only correctness tells"
    # Kimi's length reward reads the correctness term: each group's shorter response is wrong, so it
    # gets min(0, 0.5) = 0, and the longer, right one -0.5
    kimi = [-0.5, 0.0, 0.0, -0.5]
    assert [r.reward for r in rollouts] == pytest.approx([b + k for b, k in zip(base, kimi)])
    assert [[sorted(t) for t in g] for g in scored.terms] == [[["right", "short"]] * 2] * 2
    assert scored.terms[0][0] == {"short": short(texts[0]), "right": 1.0}
    assert math.isnan(scored.terms[1][0]["short"]) and math.isnan(scored.terms[1][0]["right"])
    stats = scored.stats()
    assert [s.correct for g in stats for s in g] == [True, False, False, True]
    assert stats[0][0].terms == {"short": short(texts[0]), "right": 1.0}


def test_sample_stats_and_failures():
    r = rollout(7, 3, "length")
    r.reward, r.correctness = -0.5, 0.5
    stats = SampleStats.of(r)
    assert stats == SampleStats(3, -0.5, "length", 0.5) and stats.truncated and stats.correct and stats.terms == {}
    assert SampleStats.of(r, {"a": 1.0}).terms == {"a": 1.0}
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
    flags = samples.add_round(one, 0, [1, 0], ScoredRound([scored_group(1.0, 1.0), scored_group(1.0, 0.0)],
                                                          RewardFailures(1)))
    assert flags == [False, True]
    assert [s.reward for s in samples.groups[(0, 0)]] == [1.0, 0.0]
    flags = samples.add_round(one, 1, [0], ScoredRound([scored_group(0.5, 0.75)], RewardFailures(2, 1),
                                                       [[{"t": 0.5}, {"t": 0.25}]]))
    # 0.5 and 0.75 are both correct (acc: equal) but different rewards (reward: not equal)
    assert flags == [metric == "acc"]
    assert samples.all_equal == [False, True, metric == "acc"]
    assert samples.failures == RewardFailures(3, 1)
    assert [s.reward for s in samples.drawn()] == [1.0, 0.0, 1.0, 1.0, 0.5, 0.75]
    assert [s.terms for s in samples.groups[(1, 0)]] == [{"t": 0.5}, {"t": 0.25}]
    assert [s.reward for s in samples.trained([KeptGroup(0, 1, 0), KeptGroup(1, 0, 0)])] == [0.5, 0.75, 1.0, 0.0]


def test_warnings_are_quiet_for_a_healthy_round():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        scorer().score([rollout(7, 3), rollout(5, 2)], [example("7")], cap=8)
