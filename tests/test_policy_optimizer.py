"""siri.train.precision.PolicyOptimizer: the end of an optimizer step. Gradients are clipped to the
global norm, a non-finite loss or gradient skips the step without touching the weights, the
moments or the learning rate, and too many skips in a row abort; its checkpoint state round-trips."""
import pytest
import torch

from siri.config import OptimConfig
from siri.train.distributed import DistContext
from siri.train.precision import PolicyOptimizer, PolicyWeights, TrainingAborted


def make(grad_clip=1.0, skips=2, warmup=0):
    torch.manual_seed(0)
    weights = PolicyWeights(torch.nn.Linear(4, 3), compute_dtype=torch.float32, param_dtype=torch.float32)
    optim = OptimConfig(lr=0.1, grad_clip=grad_clip, warmup_steps=warmup)
    return weights, PolicyOptimizer(weights, optim, DistContext(), max_consecutive_skips=skips)


def backward(weights, scale=1.0):
    x = torch.ones(2, 4)
    (weights.train_model(x).sum() * scale).backward()


def state(weights, opt):
    return ([p.detach().clone() for p in weights.optimizer_parameters()],
            {k: v.clone() for k, v in opt.optimizer.state_dict()["state"][0].items()})


def test_a_finite_step_clips_the_global_norm_and_steps():
    weights, opt = make(grad_clip=1.0)
    assert opt.optimizer.state_dict()["state"][0]["exp_avg"].shape == (3, 4)     # moments exist before step 1
    backward(weights)
    expected = torch.nn.utils.get_total_norm([p.grad for p in weights.optimizer_parameters()])
    before, _ = state(weights, opt)
    norm, applied = opt.step(loss_sum=1.0, train_step=0)
    assert applied and norm == pytest.approx(float(expected)) and norm > 1.0
    assert all(p.grad is None for p in weights.optimizer_parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, state(weights, opt)[0]))
    assert opt.skipped_steps == 0 and opt.lr == 0.1


@pytest.mark.parametrize("bad", ["loss", "grad"])
def test_a_non_finite_step_is_skipped_and_k_in_a_row_abort(bad):
    weights, opt = make(skips=2, warmup=4)
    backward(weights)
    opt.step(1.0, train_step=0)
    before, lr = state(weights, opt), opt.lr
    backward(weights, scale=float("nan") if bad == "grad" else 1.0)
    norm, applied = opt.step(float("nan") if bad == "loss" else 1.0, train_step=1)
    assert not applied and opt.skipped_steps == 1 and opt.lr == lr
    after = state(weights, opt)
    assert all(torch.equal(a, b) for a, b in zip(before[0], after[0]))
    assert all(torch.equal(before[1][k], after[1][k]) for k in before[1])
    assert all(p.grad is None for p in weights.optimizer_parameters())
    backward(weights)
    with pytest.raises(TrainingAborted, match=r"2 consecutive optimizer steps .* at step 7"):
        opt.step(float("inf"), train_step=7)


def test_a_finite_step_resets_the_run_of_skips_and_state_round_trips():
    weights, opt = make(skips=2, warmup=3)
    backward(weights)
    opt.step(float("nan"), train_step=0)
    backward(weights)
    opt.step(1.0, train_step=1)
    backward(weights)
    opt.step(float("nan"), train_step=2)                # one in a row again: no abort
    saved = opt.state_dict()
    assert list(saved) == ["skipped_steps", "optimizer", "lr_scheduler"] and saved["skipped_steps"] == 2
    other_weights, other = make(skips=2, warmup=3)
    other.load_state_dict(saved)
    assert other.skipped_steps == 2 and other.lr == opt.lr
    assert torch.equal(other.optimizer.state_dict()["state"][0]["exp_avg"], opt.optimizer.state_dict()["state"][0]["exp_avg"])


def test_without_clipping_the_norm_is_still_measured():
    weights, opt = make(grad_clip=0.0)
    backward(weights, scale=100.0)
    grads = [p.grad.clone() for p in weights.optimizer_parameters()]
    norm, applied = opt.step(1.0, train_step=0)
    assert applied and norm == pytest.approx(float(torch.nn.utils.get_total_norm(grads)))
