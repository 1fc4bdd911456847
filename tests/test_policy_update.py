"""siri.algo.policy_update pieces: kept groups go to the mini-batch of their slot, the
update's statistics add up and average over optimizer steps, and where the old logprobs come
from (``algo.old_logprobs``)."""
import pytest
import torch

from siri.algo.dynamic_sampling import KeptGroup
from siri.algo.policy_update import PolicyUpdate, UpdateStats, assign_mini_batches
from siri.algo.rollout_batch import Rollout
from siri.config import AlgoConfig, OptimConfig
from siri.train.distributed import DistContext
from siri.train.precision import PolicyOptimizer, PolicyWeights
from tiny_models import tiny_model


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


def tiny_update(old_logprobs, *, ppo_epochs=1, mini_batches=1):
    """A PolicyUpdate over a fresh tiny model (the same weights every call), with the model's
    forward calls counted and each optimizer step's gradients recorded."""
    model = tiny_model("qwen2", vocab_size=64, layers=1)
    weights = PolicyWeights(model, compute_dtype=torch.float32, param_dtype=torch.float32)
    optimizer = PolicyOptimizer(weights, OptimConfig(lr=1e-2, grad_clip=0.0), DistContext(), max_consecutive_skips=3)
    algo = AlgoConfig(old_logprobs=old_logprobs, ppo_epochs=ppo_epochs, mini_batches=mini_batches,
                      micro_batch_tokens=24)
    update = PolicyUpdate(weights, optimizer, DistContext(), algo, temperature=0.7, pad_id=0,
                          device=torch.device("cpu"))
    forwards, grads = [], []
    model.register_forward_hook(lambda module, args, out: forwards.append(torch.is_grad_enabled()))
    real_step = optimizer.step

    def recording_step(loss_sum, train_step):
        grads.append([p.grad.clone() for p in weights.optimizer_parameters()])
        return real_step(loss_sum, train_step)

    optimizer.step = recording_step
    return update, model, forwards, grads


def tiny_rollouts(count=6):
    g = torch.Generator().manual_seed(1)
    out = []
    for k in range(count):
        prompt = torch.randint(1, 64, (int(torch.randint(2, 6, (), generator=g)),), generator=g).tolist()
        response = torch.randint(1, 64, (int(torch.randint(1, 7, (), generator=g)),), generator=g).tolist()
        out.append(Rollout(prompt, response, [0.0] * len(response), "stop", advantage=float(k % 3 - 1) + 0.25))
    return out


def test_auto_old_logprobs_on_policy_match_recompute_without_the_extra_forward():
    """Exactly on-policy, "auto" takes the old logprobs from the training forward: the same
    loss, gradients and updated weights as "recompute", with one forward per micro-batch
    instead of two (the no-grad one is gone)."""
    results = {}
    for mode in ("recompute", "auto"):
        update, model, forwards, grads = tiny_update(mode)
        stats = update([tiny_rollouts()], train_step=0)
        results[mode] = stats, dict(model.named_parameters()), forwards, grads
    (s_re, w_re, f_re, g_re), (s_auto, w_auto, f_auto, g_auto) = results["recompute"], results["auto"]
    micro_batches = len(f_auto)
    assert micro_batches > 1, "the token budget should split the step into several micro-batches"
    assert f_auto == [True] * micro_batches                         # only the training forwards
    assert f_re == [False] * micro_batches + [True] * micro_batches
    assert s_auto.optimizer_steps == s_re.optimizer_steps == 1
    assert s_auto.loss == pytest.approx(s_re.loss, rel=1e-5, abs=1e-7) and s_re.loss != 0
    assert s_auto.grad_norm == pytest.approx(s_re.grad_norm, rel=1e-5) and s_re.grad_norm > 0
    assert abs(s_auto.approx_kl) < 1e-7 and s_auto.clip_frac_low == s_auto.clip_frac_high == 0
    for a, b in zip(g_auto[0], g_re[0]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
    for name, p in w_re.items():
        torch.testing.assert_close(w_auto[name], p, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("mode, epochs, minis, source", [
    ("auto", 1, 1, "forward"), ("auto", 2, 1, "recompute"), ("auto", 1, 2, "recompute"),
    ("recompute", 1, 1, "recompute"), ("engine", 1, 1, "engine")])
def test_auto_old_logprobs_recompute_when_not_on_policy(mode, epochs, minis, source):
    """Off-policy (several epochs or mini-batches) the later forwards see moved weights, so
    "auto" recomputes the old logprobs first."""
    update, _, forwards, _ = tiny_update(mode, ppo_epochs=epochs, mini_batches=minis)
    assert update.old_logprobs_source() == source
    rollouts = tiny_rollouts()
    update([rollouts[:3], rollouts[3:]] if minis == 2 else [rollouts], train_step=0)
    assert (False in forwards) == (source == "recompute")
