// Host-side launchers of the paged-attention CUDA kernels (raw pointers only; included by the
// CUDA binding, which sees torch, and by the kernel file, which must not). Arguments are
// validated by the binding; params.chunk_tokens / max_splits come from plan_splits, or with a
// run-time chunk (params.chunk_tokens_at) max_splits from graph_max_splits. kv_lens and the
// run-time chunk are not validated: the kernels split each query with query_split, which keeps
// its keys within its block-table row and its splits within max_splits.
#pragma once

#include <cuda_runtime.h>

#include "siri/paged_attention.h"

namespace siri::cuda {

// Split-KV decode (flash-decoding) over params.num_queries queries, then the (o, lse) merge of
// split queries. Returns the launch error (cudaSuccess when both launches were accepted).
cudaError_t launch_paged_attention(const PagedAttentionParams& params, cudaStream_t stream);

cudaError_t launch_append_kv(const AppendKVParams& params, cudaStream_t stream);

}  // namespace siri::cuda
