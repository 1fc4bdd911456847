"""Rewards: final-answer extraction, math verification (math-verify) and the length-capped
reward; the length terms added to it (``shape_rewards``, the registry ``LENGTH_REWARDS``);
``is_correct``, the one definition of a correct response (training, dynamic sampling,
eval); ``load_reward_fn`` resolves a user reward named ``"package.module:function"``, which
receives the inputs it names (``RewardInput``: response, prompt, reference, finish_reason,
row, step); ``RewardTerms`` sums several with weights and ``make_scorer`` runs them."""
from siri.rewards.answer import extract_final_answer
from siri.rewards.capped import capped_reward
from siri.rewards.correctness import CORRECT_THRESHOLD, is_correct
from siri.rewards.length_shaping import LENGTH_REWARDS, LengthShaping, shape_rewards
from siri.rewards.loader import DEFAULT_REWARD, RewardFunction, load_reward_fn
from siri.rewards.math_reward import math_equal
from siri.rewards.reward_input import RewardInput
from siri.rewards.reward_scorer import make_scorer
from siri.rewards.terms import RewardTerm, RewardTerms

__all__ = ["CORRECT_THRESHOLD", "DEFAULT_REWARD", "LENGTH_REWARDS", "LengthShaping", "RewardFunction", "RewardInput",
           "RewardTerm", "RewardTerms", "capped_reward", "extract_final_answer", "is_correct", "load_reward_fn",
           "make_scorer", "math_equal", "shape_rewards"]
