"""siri.ops.group_advantages against a float64 reference, on every backend."""
import pytest
import torch

import siri
from siri.ops import group_advantages, group_advantages_reference


def _check(rewards, group_size, eps=1e-6, scale="group"):
    out = group_advantages(rewards, group_size, eps=eps, scale=scale)
    assert out.dtype == torch.float32 and out.shape == rewards.shape
    assert out.device == rewards.device
    ref = group_advantages_reference(rewards.cpu(), group_size, eps=eps, scale=scale)
    torch.testing.assert_close(out.cpu().double(), ref, atol=1e-6, rtol=0)
    return out


@pytest.mark.parametrize("scale", ["group", "none"])
def test_random_rewards_every_group_size(device, gen, scale):
    for group_size in range(2, 65):
        num_groups = int(torch.randint(1, 9, (), generator=gen))
        rewards = torch.randn(num_groups * group_size, generator=gen) * 3 + 0.5
        _check(rewards.to(device), group_size, scale=scale)


def test_binary_rewards_with_zero_variance_groups(device, gen):
    group_size = 8
    rewards = (torch.rand(64 * group_size, generator=gen) < 0.5).float()
    rewards[:group_size] = 1.0          # all correct
    rewards[group_size:2 * group_size] = 0.0  # all wrong
    out = _check(rewards.to(device), group_size)
    assert torch.all(out[: 2 * group_size] == 0)


def test_constant_groups_are_exactly_zero(device):
    rewards = torch.tensor([0.3] * 5 + [-7.0] * 5, device=device)
    for scale in ("group", "none"):
        out = group_advantages(rewards, 5, scale=scale)
        assert torch.equal(out.cpu(), torch.zeros(10))


def test_large_and_tiny_magnitudes(device, gen):
    for magnitude in (1e-20, 1e-3, 1e6, 1e30):
        rewards = torch.randn(16 * 4, generator=gen) * magnitude
        _check(rewards.to(device), 4, eps=0.0 if magnitude < 1e-6 else 1e-6)


def test_single_group_and_empty_batch(device):
    _check(torch.tensor([1.0, 0.0], device=device), 2)
    out = group_advantages(torch.empty(0, device=device), 4)
    assert out.shape == (0,)


def test_non_contiguous_input(device, gen):
    rewards = torch.randn(2 * 48, generator=gen).to(device)[::2]
    assert not rewards.is_contiguous()
    _check(rewards, 6)


def test_eps_is_used(device):
    rewards = torch.tensor([1.0, 0.0], device=device)
    # unbiased std of [1, 0] is sqrt(0.5)
    for eps in (0.0, 0.5):
        out = group_advantages(rewards, 2, eps=eps)
        expected = 0.5 / (0.5 ** 0.5 + eps)
        assert abs(out[0].item() - expected) < 1e-6


@pytest.mark.parametrize("bad, match", [
    (dict(rewards=torch.zeros(10), group_size=4), "not a multiple of group_size"),
    (dict(rewards=torch.zeros(10), group_size=1), "group_size must be >= 2"),
    (dict(rewards=torch.zeros(10), group_size=0), "group_size must be >= 2"),
    (dict(rewards=torch.tensor([1.0, float("nan")]), group_size=2), "non-finite"),
    (dict(rewards=torch.tensor([1.0, float("inf")]), group_size=2), "non-finite"),
    (dict(rewards=torch.zeros(2, 4), group_size=2), "1-D"),
    (dict(rewards=torch.zeros(4), group_size=2, scale="std"), "scale must be one of"),
    (dict(rewards=torch.zeros(4), group_size=2, eps=-1.0), "eps must be"),
])
def test_bad_input_raises_value_error(bad, match):
    with pytest.raises(ValueError, match=match):
        group_advantages(**bad)


def test_wrong_dtype_raises_type_error():
    with pytest.raises(TypeError, match="rewards must have dtype Float"):
        group_advantages(torch.zeros(4, dtype=torch.float64), 2)
    with pytest.raises(TypeError, match="rewards must be a torch.Tensor"):
        group_advantages([1.0, 0.0], 2)


def test_opcheck(device, gen):
    rewards = torch.randn(24, generator=gen).to(device)
    for scale_by_std in (True, False):
        torch.library.opcheck(torch.ops.siri.group_advantages.default,
                              (rewards, 6, 1e-6, scale_by_std))


def test_traces_under_torch_compile(gen):
    rewards = torch.randn(32, generator=gen)
    compiled = torch.compile(lambda r: group_advantages(r, 8) * 2, backend="aot_eager",
                             fullgraph=True)
    torch.testing.assert_close(compiled(rewards), group_advantages(rewards, 8) * 2)


def test_exported_at_package_level():
    assert siri.ops.group_advantages is group_advantages
