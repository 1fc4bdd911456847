// Validation and kernel parameters for siri::paged_decode_attention,
// siri::paged_prefill_attention and siri::append_kv, shared by the CPU and CUDA bindings.
// Every index the kernels will follow (block ids, sequence lengths, slots) is checked here,
// before any raw pointer is handed out.
#pragma once

#include <optional>

#include "checks.h"
#include "siri/paged_attention.h"

namespace siri::bind {

// What the device's planner needs: its limits (siri/paged_attention.h), and how many work
// items one query makes there.
struct SplitPolicy {
  SplitLimits limits;
  bool item_spans_kv_heads;  // one work item covers every KV head of a query (the CPU kernel);
                             // otherwise one per (KV head, block of query heads) (the CUDA kernel)
};

// The kernel parameters plus the tensors they point into (kept alive by the caller).
struct PagedAttentionCall {
  PagedAttentionParams params;
  at::Tensor out, partial_o, partial_lse, kv_lens, query_seq;
};

AttnDType check_kv_cache(const at::Tensor& k_cache, const at::Tensor& v_cache);

// Checks q, the cache, block_table and seq_lens (each >= min_seq_len), the block ids every
// sequence uses, and allocates the output and the split buffers.
PagedAttentionCall prepare_decode(const at::Tensor& q, const at::Tensor& k_cache,
                                  const at::Tensor& v_cache, const at::Tensor& block_table,
                                  const at::Tensor& seq_lens, std::optional<double> scale,
                                  SplitPolicy policy);

PagedAttentionCall prepare_prefill(const at::Tensor& q, const at::Tensor& k_cache,
                                   const at::Tensor& v_cache, const at::Tensor& block_table,
                                   const at::Tensor& seq_lens, const at::Tensor& cu_seqlens,
                                   std::optional<double> scale, SplitPolicy policy);

// The engine's path: checks shapes, dtypes and devices only, and plans the splits from the
// caller's host facts (the longest and total kv_len), so a CUDA call reads no device memory
// and can be captured in a CUDA graph. On the CPU the values are checked as well (free there).
PagedAttentionCall prepare_attention_run(const at::Tensor& q, const at::Tensor& k_cache,
                                         const at::Tensor& v_cache, const at::Tensor& block_table,
                                         const at::Tensor& kv_lens, const std::optional<at::Tensor>& query_seq,
                                         int64_t max_kv_len, int64_t total_kv_len, std::optional<double> scale,
                                         SplitPolicy policy);

AppendKVParams prepare_append_kv(const at::Tensor& k, const at::Tensor& v, const at::Tensor& k_cache,
                                 const at::Tensor& v_cache, const at::Tensor& slot_mapping);

}  // namespace siri::bind
