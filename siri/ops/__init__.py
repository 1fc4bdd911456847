"""siri's tensor ops. Each wraps ``torch.ops.siri.*`` kernels (CPU and CUDA) and documents
its arguments' shapes and dtypes; ``*_reference`` functions are plain-PyTorch float64
references used by the tests."""
from siri.ops.group_advantages import group_advantages, group_advantages_reference
from siri.ops.grpo_loss import GrpoLossStats, grpo_loss, grpo_loss_reference
from siri.ops.logprobs import token_logprobs, token_logprobs_reference
from siri.ops.paged_attention import (append_kv, attention_split_plan, graph_max_splits, paged_attention_run,
                                      paged_decode_attention, paged_decode_attention_reference,
                                      paged_prefill_attention, paged_prefill_attention_reference)
from siri.ops.rotary import rotary_append_kv, rotary_reference
from siri.ops.sampling import (SampleOutput, sample_tokens, sample_tokens_reference,
                               sampling_probs_reference)

__all__ = [
    "group_advantages", "group_advantages_reference",
    "grpo_loss", "grpo_loss_reference", "GrpoLossStats",
    "token_logprobs", "token_logprobs_reference",
    "paged_decode_attention", "paged_decode_attention_reference",
    "paged_prefill_attention", "paged_prefill_attention_reference", "append_kv", "paged_attention_run",
    "attention_split_plan", "graph_max_splits",
    "rotary_append_kv", "rotary_reference",
    "SampleOutput", "sample_tokens", "sample_tokens_reference", "sampling_probs_reference",
]
