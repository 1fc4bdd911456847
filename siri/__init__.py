"""siri: SIRI reinforcement learning (GRPO/DAPO with an oscillating length cap) for
reasoning models, with fused C++/CUDA kernels.

Public API:
    siri.ops              the kernels: group_advantages, grpo_loss, token_logprobs,
                          sample_tokens, paged_decode_attention, paged_prefill_attention,
                          append_kv (each CPU + CUDA, with float64 references)
    siri.LLMEngine, siri.SamplingParams
                          the paged-KV rollout engine over a Hugging Face model
    siri.make_schedule    SIRI's length schedules (cosine, stair, stair_cosine, ...)
    siri.Trainer, siri.load_config, siri.Config
                          the trainer: ``Trainer(load_config(path, overrides)).fit()``
    siri.rewards          answer extraction, math-verify, the length-capped reward
    siri.build_info()     what the compiled extension contains
"""
from siri.version import __version__, check_torch

check_torch()  # before the extension loads: an old torch fails here in one line, not in _C's symbols
from siri._ext import build_info, has_cuda_kernels
from siri import ops, rewards
from siri.algo.schedule import make_schedule
from siri.engine import CompletionOutput, LLMEngine, SamplingParams
from siri.config import Config, load_config
from siri.train.trainer import Trainer

__all__ = ["__version__", "build_info", "has_cuda_kernels", "ops", "rewards", "make_schedule",
           "LLMEngine", "SamplingParams", "CompletionOutput", "Config", "load_config", "Trainer"]
