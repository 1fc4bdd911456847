// Host-side launcher of the CUDA query-tiled prefill kernel (raw pointers only; included by
// the paged-attention launcher, which hands it the calls it serves).
#pragma once

#include <cuda_runtime.h>

#include "siri/paged_attention.h"

namespace siri::cuda {

// Whether launch_paged_prefill serves these params, decided on the host from params alone
// (no device read, so a captured graph keeps its choice): queries carry block-table rows
// (query_seq: prefill), the plan has no KV split (max_splits == 1), the call asks for the
// tiled kernel (params.query_tiled), and the tile fits in the device's shared memory.
bool use_paged_prefill(const PagedAttentionParams& params);

// Attention of params.num_queries queries, a tile of consecutive queries per block: each
// maximal run in a tile (one block-table row, kv_len rising by one) reads its K/V tiles once.
// Requires max_splits == 1 (writes params.out only). Returns the launch error.
cudaError_t launch_paged_prefill(const PagedAttentionParams& params, cudaStream_t stream);

}  // namespace siri::cuda
