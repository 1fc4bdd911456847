"""siri: SIRI reinforcement learning (GRPO/DAPO with an oscillating length cap) for
reasoning models, with fused C++/CUDA kernels.

Public API:
    siri.ops.group_advantages  GRPO group-relative advantages (CPU + CUDA kernel)
    siri.ops.sample_tokens     one fused decode step: sampling, logprob, EOS/cap stop (CPU + CUDA)
    siri.build_info()          what the compiled extension contains
"""
from siri.version import __version__
from siri._ext import build_info, has_cuda_kernels
from siri import ops

__all__ = ["__version__", "build_info", "has_cuda_kernels", "ops"]
