#include <torch/library.h>

#include "cuda/paged_attention.h"
#include "cuda_utils.h"
#include "paged_attention.h"

namespace siri::bind {
namespace {

// The kernels use 16-byte loads and stores.
void check_aligned(const at::Tensor& t, const char* name) {
  TORCH_CHECK_VALUE(reinterpret_cast<uintptr_t>(t.data_ptr()) % 16 == 0, name,
                    " must start at a 16-byte aligned address on CUDA (a fresh tensor or .clone())");
}

// prefill: the queries carry block-table rows (see cuda_split_limits).
SplitPolicy cuda_policy(const at::Tensor& t, bool prefill) {
  int sms = 0;
  check_cuda_launch(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, t.get_device()),
                    "paged attention planner");
  return cuda_split_policy(sms, prefill);
}

void run(const PagedAttentionCall& call, const char* op) {
  check_cuda_launch(siri::cuda::launch_paged_attention(call.params, current_stream()), op);
}

at::Tensor paged_decode_attention_cuda(const at::Tensor& q, const at::Tensor& k_cache,
                                       const at::Tensor& v_cache, const at::Tensor& block_table,
                                       const at::Tensor& seq_lens, std::optional<double> scale,
                                       bool cpu_bf16_dot) {
  const c10::cuda::CUDAGuard guard(q.device());
  const PagedAttentionCall call = prepare_decode(q, k_cache, v_cache, block_table, seq_lens, scale,
                                                 cuda_policy(k_cache, false), KernelChoice{true, cpu_bf16_dot});
  for (const auto& [t, name] : {std::pair{&q, "q"}, {&k_cache, "k_cache"}, {&v_cache, "v_cache"}}) check_aligned(*t, name);
  run(call, "paged_decode_attention");
  return call.out;
}

at::Tensor paged_prefill_attention_cuda(const at::Tensor& q, const at::Tensor& k_cache,
                                        const at::Tensor& v_cache, const at::Tensor& block_table,
                                        const at::Tensor& seq_lens, const at::Tensor& cu_seqlens,
                                        std::optional<double> scale, bool query_tiled, bool cpu_bf16_dot) {
  const c10::cuda::CUDAGuard guard(q.device());
  const PagedAttentionCall call = prepare_prefill(q, k_cache, v_cache, block_table, seq_lens, cu_seqlens, scale,
                                                  cuda_policy(k_cache, true), KernelChoice{query_tiled, cpu_bf16_dot});
  for (const auto& [t, name] : {std::pair{&q, "q"}, {&k_cache, "k_cache"}, {&v_cache, "v_cache"}}) check_aligned(*t, name);
  run(call, "paged_prefill_attention");
  return call.out;
}

at::Tensor paged_attention_run_cuda(const at::Tensor& q, const at::Tensor& k_cache, const at::Tensor& v_cache,
                                    const at::Tensor& block_table, const at::Tensor& kv_lens,
                                    const std::optional<at::Tensor>& query_seq, int64_t max_kv_len,
                                    int64_t total_kv_len, std::optional<double> scale,
                                    const std::optional<at::Tensor>& chunk_tokens, bool query_tiled,
                                    bool cpu_bf16_dot) {
  const c10::cuda::CUDAGuard guard(q.device());
  // With chunk_tokens the kernels read the chunk from its storage (no host read): a captured
  // graph follows whatever the engine writes there before each replay.
  const PagedAttentionCall call = prepare_attention_run(
      q, k_cache, v_cache, block_table, kv_lens, query_seq, max_kv_len, total_kv_len, scale,
      cuda_policy(k_cache, query_seq.has_value()), chunk_tokens, KernelChoice{query_tiled, cpu_bf16_dot});
  for (const auto& [t, name] : {std::pair{&q, "q"}, {&k_cache, "k_cache"}, {&v_cache, "v_cache"}}) check_aligned(*t, name);
  run(call, "paged_attention_run");
  return call.out;
}

void append_kv_cuda(const at::Tensor& k, const at::Tensor& v, at::Tensor& k_cache, at::Tensor& v_cache,
                    const at::Tensor& slot_mapping) {
  const c10::cuda::CUDAGuard guard(k_cache.device());
  const AppendKVParams p = prepare_append_kv(k, v, k_cache, v_cache, slot_mapping);
  for (const auto& [t, name] : {std::pair{&k, "k"}, {&v, "v"}, {&k_cache, "k_cache"}, {&v_cache, "v_cache"}}) {
    check_aligned(*t, name);
  }
  check_cuda_launch(siri::cuda::launch_append_kv(p, current_stream()), "append_kv");
}

}  // namespace

TORCH_LIBRARY_IMPL(siri, CUDA, m) {
  m.impl("paged_decode_attention", &paged_decode_attention_cuda);
  m.impl("paged_prefill_attention", &paged_prefill_attention_cuda);
  m.impl("paged_attention_run", &paged_attention_run_cuda);
  m.impl("append_kv", &append_kv_cuda);
}

}  // namespace siri::bind
