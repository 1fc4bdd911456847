"""siri's tensor ops. Each wraps a ``torch.ops.siri.*`` kernel (CPU and CUDA) and documents
its arguments' shapes and dtypes; ``*_reference`` functions are plain-PyTorch float64
references used by the tests."""
from siri.ops.group_advantages import group_advantages, group_advantages_reference
from siri.ops.paged_attention import (append_kv, paged_decode_attention,
                                      paged_decode_attention_reference, paged_prefill_attention,
                                      paged_prefill_attention_reference)

__all__ = ["group_advantages", "group_advantages_reference", "append_kv",
           "paged_decode_attention", "paged_decode_attention_reference",
           "paged_prefill_attention", "paged_prefill_attention_reference"]
