"""GRPO group-relative advantages: ``siri.ops.group_advantages``."""
from __future__ import annotations

import torch

from siri import _ext  # noqa: F401  (registers torch.ops.siri)

_SCALES = ("group", "none")


def group_advantages(rewards: torch.Tensor, group_size: int, eps: float = 1e-6,
                     scale: str = "group") -> torch.Tensor:
    """Advantage of each sample relative to its group of ``group_size`` consecutive samples.

    Args:
        rewards: ``[B]`` float32, on CPU or CUDA; ``B`` must be a multiple of ``group_size``.
            Samples ``[k*group_size, (k+1)*group_size)`` are the responses to prompt ``k``.
        group_size: samples per prompt (GRPO's G), at least 2.
        eps: added to the group std before dividing (only for ``scale="group"``).
        scale: ``"group"``: ``(r - mean) / (std + eps)`` with the unbiased std (verl's GRPO);
            ``"none"``: ``r - mean`` (Dr. GRPO, no std normalisation).

    Returns:
        ``[B]`` float32 advantages, on the device of ``rewards``. A group whose rewards are
        all equal gets advantage 0 for every sample.

    Raises:
        ValueError: ``B % group_size != 0``, ``group_size < 2``, a non-finite reward, or an
            unknown ``scale``. TypeError: ``rewards`` is not float32.

    Example:
        >>> r = torch.tensor([1., 0., 0., 0.,  1., 1., 1., 1.])
        >>> siri.ops.group_advantages(r, group_size=4)
        tensor([ 1.5000, -0.5000, -0.5000, -0.5000,  0.0000,  0.0000,  0.0000,  0.0000])
    """
    if scale not in _SCALES:
        raise ValueError(f"scale must be one of {_SCALES}, got {scale!r}")
    if not isinstance(rewards, torch.Tensor):
        raise TypeError(f"rewards must be a torch.Tensor, got {type(rewards).__name__}")
    return torch.ops.siri.group_advantages(rewards, int(group_size), float(eps), scale == "group")


@torch.library.register_fake("siri::group_advantages")
def _group_advantages_fake(rewards, group_size, eps, scale_by_std):
    torch._check(rewards.dim() == 1, lambda: "rewards must be 1-D")
    return torch.empty_like(rewards)


def group_advantages_reference(rewards: torch.Tensor, group_size: int, eps: float = 1e-6,
                               scale: str = "group") -> torch.Tensor:
    """Plain-PyTorch float64 reference of :func:`group_advantages` (for tests)."""
    r = rewards.double().reshape(-1, group_size)
    centred = r - r.mean(dim=1, keepdim=True)
    if scale == "group":
        centred = centred / (r.std(dim=1, unbiased=True, keepdim=True) + eps)
    return centred.reshape(-1)
