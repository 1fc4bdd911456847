// CUDA paged attention, flash-decoding style. One block per (query, KV head, block of query
// heads, split): the block's thread groups (LANES threads per token, 16-byte loads) stride over
// the split's tokens, kUnroll tokens per trip with every load issued before any math, each group
// keeping an online-softmax state for every query head of its head block, so a K/V row is read
// once for up to kHeads heads. The head-block size is a template parameter chosen from the GQA
// group size (1, 2, 4 or 8: decode_heads_per_block): registers hold q and the accumulator for kHeads heads, so a
// group of 2 does not pay for 8 (fewer registers, more resident blocks). The groups' states
// are combined in shared memory; a query whose kv_len spans several splits writes (o, lse)
// partials that merge_kernel combines. Both kernels split a query with the shared header's
// query_split (chunk from the params or, for a CUDA-graph replay, read from device memory).
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "cuda/attn_dispatch.cuh"
#include "cuda/element_convert.cuh"
#include "cuda/paged_attention.h"
#include "cuda/paged_prefill.h"

namespace siri::cuda {
namespace {

constexpr int kThreads = 128;

// Tokens each thread group loads per loop trip before using any: a single K/V load pair per
// trip leaves the loop waiting on memory latency. Two pairs in flight at 8 heads, where the
// registers are already taken by q and the accumulators.
__host__ __device__ constexpr int tokens_in_flight(int heads) { return heads <= 2 ? 4 : 2; }

constexpr int next_pow2(int x) { return x <= 1 ? 1 : 2 * next_pow2((x + 1) / 2); }

template <typename T, int D>
struct Layout {
  static constexpr int kVec = 16 / sizeof(T);                  // elements per 16-byte load
  static constexpr int kVecsPerRow = D / kVec;
  static constexpr int kLanes = next_pow2(kVecsPerRow) < 32 ? next_pow2(kVecsPerRow) : 32;
  static constexpr int kChunks = (kVecsPerRow + kLanes - 1) / kLanes;  // loads per thread per row
  static constexpr int kGroups = kThreads / kLanes;              // tokens in flight per block
  static constexpr int kPerThread = kChunks * kVec;
};

// Loads this lane's columns of a row as fp32 (columns past D stay 0).
template <typename T, int D>
__device__ __forceinline__ void load_row(const T* row, int lane, float (&dst)[Layout<T, D>::kPerThread]) {
  using L = Layout<T, D>;
#pragma unroll
  for (int c = 0; c < L::kChunks; ++c) {
    const int vec = c * L::kLanes + lane;
    if (vec < L::kVecsPerRow) {
      const uint4 raw = *reinterpret_cast<const uint4*>(row + vec * L::kVec);
      const T* elems = reinterpret_cast<const T*>(&raw);
#pragma unroll
      for (int e = 0; e < L::kVec; ++e) dst[c * L::kVec + e] = to_f32(elems[e]);
    } else {
#pragma unroll
      for (int e = 0; e < L::kVec; ++e) dst[c * L::kVec + e] = 0.0f;
    }
  }
}

template <typename T, int D, int kHeads>
__global__ void __launch_bounds__(kThreads) decode_kernel(PagedAttentionParams p) {
  using L = Layout<T, D>;
  constexpr int kUnroll = tokens_in_flight(kHeads);
  const int64_t query = blockIdx.x;
  const int64_t split = blockIdx.z;
  const int64_t group_size = p.num_q_heads / p.num_kv_heads;
  const int64_t head_blocks = (group_size + kHeads - 1) / kHeads;
  const int64_t kv_head = blockIdx.y / head_blocks;
  const int64_t head0 = kv_head * group_size + (blockIdx.y % head_blocks) * kHeads;
  const int64_t heads_left = kv_head * group_size + group_size - head0;
  const int heads = static_cast<int>(heads_left < kHeads ? heads_left : kHeads);
  // kv_lens (and a run-time chunk) are not checked on CUDA: query_split keeps the keys within
  // the block-table row and the splits within max_splits whatever they hold.
  const QuerySplit qs = query_split(p, query);
  const int64_t splits = qs.splits;
  if (split >= splits) return;
  const int64_t begin = split * qs.chunk;
  const int64_t end = min(qs.kv_len, begin + qs.chunk);
  const int lane = threadIdx.x % L::kLanes, group = threadIdx.x / L::kLanes;
  const int32_t* pages = p.block_table + (p.query_seq ? p.query_seq[query] : query) * p.max_pages;
  const int32_t page_size = static_cast<int32_t>(p.page_size);

  float q[kHeads][L::kPerThread];
  float acc[kHeads][L::kPerThread];
  AttnSoftmaxState state[kHeads];
#pragma unroll
  for (int g = 0; g < kHeads; ++g) {
    const int64_t head = head0 + (g < heads ? g : 0);  // heads past the group: unused copies
    load_row<T, D>(static_cast<const T*>(p.q) + (query * p.num_q_heads + head) * D, lane, q[g]);
#pragma unroll
    for (int i = 0; i < L::kPerThread; ++i) {
      q[g][i] *= p.scale;
      acc[g][i] = 0.0f;
    }
    state[g] = softmax_init();
  }

  // Every thread runs the same number of trips so the shuffles see the whole warp. A trip
  // covers kUnroll * kGroups tokens; this group's are base + u * kGroups + group, in the
  // order a one-token loop would visit them.
  for (int64_t base = begin; base < end; base += kUnroll * L::kGroups) {
    float k[kUnroll][L::kPerThread], v[kUnroll][L::kPerThread];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int32_t t = static_cast<int32_t>(base) + u * L::kGroups + group;  // kv_lens are int32
      if (t < end) {
        // 32-bit division: the 64-bit one is a called routine (stack, and spills around it)
        const int64_t slot = static_cast<int64_t>(pages[t / page_size]) * page_size + t % page_size;
        const int64_t offset = (slot * p.num_kv_heads + kv_head) * D;
        load_row<T, D>(static_cast<const T*>(p.k_cache) + offset, lane, k[u]);
        load_row<T, D>(static_cast<const T*>(p.v_cache) + offset, lane, v[u]);
      } else {
#pragma unroll
        for (int i = 0; i < L::kPerThread; ++i) k[u][i] = v[u][i] = 0.0f;
      }
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const bool valid = base + u * L::kGroups + group < end;
#pragma unroll
      for (int g = 0; g < kHeads; ++g) {
        if (g >= heads) break;
        float s = 0.0f;
#pragma unroll
        for (int i = 0; i < L::kPerThread; ++i) s += q[g][i] * k[u][i];
#pragma unroll
        for (int offset = L::kLanes / 2; offset > 0; offset /= 2) s += __shfl_xor_sync(0xffffffffu, s, offset, L::kLanes);
        if (valid) {
          const float alpha = softmax_rescale(state[g], s);
          const float w = softmax_weight(state[g], s);
#pragma unroll
          for (int i = 0; i < L::kPerThread; ++i) acc[g][i] = acc[g][i] * alpha + w * v[u][i];
        }
      }
    }
  }

  // Combine the thread groups' states.
  __shared__ float sm_acc[L::kGroups][kHeads][D];
  __shared__ AttnSoftmaxState sm_state[L::kGroups][kHeads];
#pragma unroll
  for (int g = 0; g < kHeads; ++g) {  // unrolled, so the register arrays stay in registers
    if (g >= heads) break;
    if (lane == 0) sm_state[group][g] = state[g];
#pragma unroll
    for (int c = 0; c < L::kChunks; ++c) {
      const int vec = c * L::kLanes + lane;
      if (vec < L::kVecsPerRow) {
#pragma unroll
        for (int e = 0; e < L::kVec; ++e) sm_acc[group][g][vec * L::kVec + e] = acc[g][c * L::kVec + e];
      }
    }
  }
  __syncthreads();
  for (int idx = threadIdx.x; idx < heads * D; idx += kThreads) {
    const int g = idx / D, d = idx % D;
    AttnSoftmaxState total = softmax_init();
    float o = 0.0f;
    for (int gr = 0; gr < L::kGroups; ++gr) {
      float alpha_total, alpha_part;
      softmax_combine(total, sm_state[gr][g], alpha_total, alpha_part);
      o = o * alpha_total + sm_acc[gr][g][d] * alpha_part;
    }
    const int64_t head = head0 + g;
    if (splits == 1) {
      static_cast<T*>(p.out)[(query * p.num_q_heads + head) * D + d] = from_f32<T>(o / total.l);
    } else {
      const int64_t part = (query * p.max_splits + split) * p.num_q_heads + head;
      p.partial_o[part * D + d] = o / total.l;
      if (d == 0) p.partial_lse[part] = softmax_lse(total);
    }
  }
}

// One block per (query, head) of a split query: out = sum_i exp(lse_i - lse) * o_i.
template <typename T>
__global__ void merge_kernel(PagedAttentionParams p) {
  const int64_t query = blockIdx.x / p.num_q_heads, head = blockIdx.x % p.num_q_heads;
  const int64_t splits = query_split(p, query).splits;  // as the decode kernel split it
  if (splits == 1) return;
  for (int64_t d = threadIdx.x; d < p.head_dim; d += blockDim.x) {
    AttnSoftmaxState state = softmax_init();
    float o = 0.0f;
    for (int64_t i = 0; i < splits; ++i) {
      const int64_t part = (query * p.max_splits + i) * p.num_q_heads + head;
      const float lse = p.partial_lse[part];
      const float alpha = softmax_rescale(state, lse);
      o = o * alpha + softmax_weight(state, lse) * p.partial_o[part * p.head_dim + d];
    }
    static_cast<T*>(p.out)[(query * p.num_q_heads + head) * p.head_dim + d] = from_f32<T>(o / state.l);
  }
}

template <typename T, int D, int kHeads>
void launch_decode_blocks(const PagedAttentionParams& p, cudaStream_t stream) {
  const int64_t group_size = p.num_q_heads / p.num_kv_heads;
  const dim3 grid(static_cast<unsigned>(p.num_queries),
                  static_cast<unsigned>(p.num_kv_heads * ((group_size + kHeads - 1) / kHeads)),
                  static_cast<unsigned>(p.max_splits));
  decode_kernel<T, D, kHeads><<<grid, kThreads, 0, stream>>>(p);
}

template <typename T, int D>
cudaError_t launch_decode(const PagedAttentionParams& p, cudaStream_t stream) {
  switch (decode_heads_per_block(p.num_q_heads / p.num_kv_heads)) {
    case 1: launch_decode_blocks<T, D, 1>(p, stream); break;
    case 2: launch_decode_blocks<T, D, 2>(p, stream); break;
    case 4: launch_decode_blocks<T, D, 4>(p, stream); break;
    default: launch_decode_blocks<T, D, 8>(p, stream); break;
  }
  if (p.max_splits > 1) {
    merge_kernel<T><<<static_cast<unsigned>(p.num_queries * p.num_q_heads), D, 0, stream>>>(p);
  }
  return cudaGetLastError();
}

template <typename T>
cudaError_t launch_typed(const PagedAttentionParams& p, cudaStream_t stream) {
  return dispatch_head_dim(p.head_dim, cudaErrorInvalidValue,
                           [&](auto d) { return launch_decode<T, decltype(d)::value>(p, stream); });
}

// One thread per 16 bytes of a token's K (and V) row; -1 slots are skipped.
__global__ void append_kv_kernel(AppendKVParams p) {
  const int64_t vecs_per_row = p.row_bytes / 16;
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= p.num_tokens * vecs_per_row) return;
  const int64_t token = i / vecs_per_row, vec = i % vecs_per_row;
  const int64_t slot = p.slot_mapping[token];
  if (slot < 0) return;
  reinterpret_cast<uint4*>(p.k_cache)[slot * vecs_per_row + vec] = reinterpret_cast<const uint4*>(p.k)[i];
  reinterpret_cast<uint4*>(p.v_cache)[slot * vecs_per_row + vec] = reinterpret_cast<const uint4*>(p.v)[i];
}

}  // namespace

cudaError_t launch_paged_attention(const PagedAttentionParams& params, cudaStream_t stream) {
  if (params.num_queries == 0) return cudaSuccess;
  if (use_paged_prefill(params)) return launch_paged_prefill(params, stream);  // runs of prefill queries
  return dispatch_attn_dtype(params.dtype, [&](auto tag) {
    return launch_typed<typename decltype(tag)::type>(params, stream);
  });
}

cudaError_t launch_append_kv(const AppendKVParams& params, cudaStream_t stream) {
  const int64_t total = params.num_tokens * (params.row_bytes / 16);
  if (total == 0) return cudaSuccess;
  constexpr int kBlock = 256;
  append_kv_kernel<<<static_cast<unsigned>((total + kBlock - 1) / kBlock), kBlock, 0, stream>>>(params);
  return cudaGetLastError();
}

}  // namespace siri::cuda
