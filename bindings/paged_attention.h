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

// The device policies the ops plan with: the CPU kernel with `threads` threads (one work item
// per query split), the CUDA kernels on a GPU with `sms` SMs (one per KV head block and split;
// `prefill`: the queries carry block-table rows, see cuda_split_limits).
inline SplitPolicy cpu_split_policy(int64_t threads) { return {cpu_split_limits(threads), true}; }
inline SplitPolicy cuda_split_policy(int64_t sms, bool prefill) { return {cuda_split_limits(sms, prefill), false}; }

// The split plan paged_attention_run makes for these host facts (total and longest kv_len) under
// `policy`, when no chunk_tokens tensor is given. num_queries == 0: {1, 1}.
SplitPlan eager_split_plan(int64_t total_kv_len, int64_t max_kv_len, int64_t num_queries, int64_t num_q_heads,
                           int64_t num_kv_heads, int64_t head_dim, const SplitPolicy& policy);

// The max_splits (partial buffers, grid.z) paged_attention_run allocates when a chunk_tokens
// tensor is given: sized for queries up to max_kv_len (the graph's capacity) and the policy's
// minimum chunk, within the partial bound (graph_attention_max_splits). num_queries == 0: 1.
int64_t graph_split_count(int64_t max_kv_len, int64_t num_queries, int64_t num_q_heads, int64_t head_dim,
                          const SplitPolicy& policy);

// The kernel choices of a call, from the op's arguments (PagedAttentionParams::query_tiled,
// cpu_bf16_dot): decided here once, never read from the environment.
struct KernelChoice {
  bool query_tiled = true;
  bool cpu_bf16_dot = true;
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
                                  SplitPolicy policy, KernelChoice kernels);

PagedAttentionCall prepare_prefill(const at::Tensor& q, const at::Tensor& k_cache,
                                   const at::Tensor& v_cache, const at::Tensor& block_table,
                                   const at::Tensor& seq_lens, const at::Tensor& cu_seqlens,
                                   std::optional<double> scale, SplitPolicy policy, KernelChoice kernels);

// The engine's path: checks shapes, dtypes and devices only, and plans the splits from the
// caller's host facts (the longest and total kv_len), so a CUDA call reads no device memory
// and can be captured in a CUDA graph. On the CPU the values are checked as well (free there).
// chunk_tokens ([1] int32 on k_cache's device): the chunk comes from it at run time and
// max_splits from graph_split_count; on CUDA the kernels read it (no host read), on the CPU it
// is read here, checked >= 1, sanitised and raised so the longest query fits max_splits.
PagedAttentionCall prepare_attention_run(const at::Tensor& q, const at::Tensor& k_cache,
                                         const at::Tensor& v_cache, const at::Tensor& block_table,
                                         const at::Tensor& kv_lens, const std::optional<at::Tensor>& query_seq,
                                         int64_t max_kv_len, int64_t total_kv_len, std::optional<double> scale,
                                         SplitPolicy policy, const std::optional<at::Tensor>& chunk_tokens,
                                         KernelChoice kernels);

AppendKVParams prepare_append_kv(const at::Tensor& k, const at::Tensor& v, const at::Tensor& k_cache,
                                 const at::Tensor& v_cache, const at::Tensor& slot_mapping);

}  // namespace siri::bind
