// CUDA query-tiled attention for prefill, flash-attention style with fp32 FMA. One block per
// (tile of kRows consecutive queries, query head). The tile's queries are split on the device
// into maximal runs (one block-table row, kv_len rising by one: a prefill's tokens), and each
// run attends to its keys kKeys at a time through shared memory: S = Q K^T into registers
// (kRowsPerThread rows x kKeysPerThread keys per thread), the online softmax of each row
// across the kCols threads that share it (the shared header's state), then O = O * alpha + P V
// (kRowsPerThread rows x kDimsPerThread dims per thread, in registers). A K/V tile is read once
// per run instead of once per query. Queries in any other order still come out right (runs of
// one query), only slowly; the launcher takes this kernel only for calls with query_seq.
#include <cuda_bf16.h>
#include <cuda_fp16.h>


#include "cuda/attn_dispatch.cuh"
#include "cuda/element_convert.cuh"
#include "cuda/paged_prefill.h"

namespace siri::cuda {
namespace {

template <int D>
struct TileShape {
  static constexpr int kThreads = 128;
  static constexpr int kRows = D <= 128 ? 64 : 32;  // queries per block
  static constexpr int kKeys = kRows;               // keys per shared-memory tile
  static constexpr int kRowsPerThread = 4;
  static constexpr int kRowGroups = kRows / kRowsPerThread;
  static constexpr int kCols = kThreads / kRowGroups;  // threads of a row group: adjacent lanes of a warp
  static constexpr int kKeysPerThread = kKeys / kCols;
  static constexpr int kDimsPerThread = D / kCols;
  // Row strides that put the rows a warp reads in one column on distinct banks.
  static constexpr int kStride = D + 1;
  static constexpr int kProbStride = kKeys + 1;
  // q [kRows, kStride], the K or V tile [kKeys, kStride], probabilities [kRows, kProbStride]
  static constexpr size_t kSmemBytes = sizeof(float) * (kRows * kStride + kKeys * kStride + kRows * kProbStride);
  static_assert(kCols <= 32 && 32 % kCols == 0, "a row group's threads must share a warp");
  static_assert(kKeys % kCols == 0 && D % kCols == 0, "tile not divisible among threads");
};

__device__ __forceinline__ int64_t row_of(const PagedAttentionParams& p, int64_t query) {
  return p.query_seq ? p.query_seq[query] : query;
}

// dst[j, d] = cache row of token t0 + j of `pages` (KV head kv_head) as fp32 for j < n, 0 for
// the rest of the tile; 16-byte loads.
template <typename T, int D>
__device__ __forceinline__ void load_tile(const PagedAttentionParams& p, const void* cache, const int32_t* pages,
                                          int64_t kv_head, int64_t t0, int n, float* dst) {
  using S = TileShape<D>;
  constexpr int kVec = 16 / sizeof(T), kVecsPerRow = D / kVec;
  for (int idx = threadIdx.x; idx < S::kKeys * kVecsPerRow; idx += S::kThreads) {
    const int j = idx / kVecsPerRow, vec = idx % kVecsPerRow;
    float* out = dst + j * S::kStride + vec * kVec;
    if (j < n) {
      const int64_t t = t0 + j;
      const int64_t slot = static_cast<int64_t>(pages[t / p.page_size]) * p.page_size + t % p.page_size;
      const uint4 raw = *reinterpret_cast<const uint4*>(static_cast<const T*>(cache) +
                                                        (slot * p.num_kv_heads + kv_head) * D + vec * kVec);
      const T* elems = reinterpret_cast<const T*>(&raw);
#pragma unroll
      for (int e = 0; e < kVec; ++e) out[e] = to_f32(elems[e]);
    } else {
#pragma unroll
      for (int e = 0; e < kVec; ++e) out[e] = 0.0f;
    }
  }
}

// Queries [first, first + count) (a run, count <= kRows) of query head `head`, into p.out.
// Every thread of the block calls it (it synchronises).
template <typename T, int D>
__device__ void attend_run(const PagedAttentionParams& p, int64_t first, int count, int64_t head, float* smem) {
  using S = TileShape<D>;
  float* q_s = smem;
  float* kv_s = q_s + S::kRows * S::kStride;
  float* p_s = kv_s + S::kKeys * S::kStride;
  const int group = threadIdx.x / S::kCols, col = threadIdx.x % S::kCols;
  const int64_t Hq = p.num_q_heads, kv_head = head / (Hq / p.num_kv_heads);
  const int32_t* pages = p.block_table + row_of(p, first) * p.max_pages;
  // kv_lens are not checked on CUDA: keys past the block-table row's capacity are never read.
  const int64_t capacity = p.max_pages * p.page_size;
  const int64_t kv_end = clamp_kv_len(p.kv_lens[first + count - 1], capacity);  // the run's longest

  __syncthreads();  // the previous run is done with q_s
  const T* q = static_cast<const T*>(p.q);
  for (int idx = threadIdx.x; idx < S::kRows * D; idx += S::kThreads) {
    const int r = idx / D, d = idx % D;
    q_s[r * S::kStride + d] = r < count ? to_f32(q[((first + r) * Hq + head) * D + d]) * p.scale : 0.0f;
  }
  // Row i of this thread sees keys t < limit[i]. Rows past the run see every key: zero
  // queries, finite scores, never stored.
  int64_t limit[S::kRowsPerThread];
  AttnSoftmaxState state[S::kRowsPerThread];
  float o[S::kRowsPerThread][S::kDimsPerThread];
#pragma unroll
  for (int i = 0; i < S::kRowsPerThread; ++i) {
    const int r = group * S::kRowsPerThread + i;
    limit[i] = r < count ? clamp_kv_len(p.kv_lens[first + r], capacity) : kv_end;
    state[i] = softmax_init();
#pragma unroll
    for (int e = 0; e < S::kDimsPerThread; ++e) o[i][e] = 0.0f;
  }

  for (int64_t t0 = 0; t0 < kv_end; t0 += S::kKeys) {
    const int n = static_cast<int>(min(static_cast<int64_t>(S::kKeys), kv_end - t0));
    __syncthreads();  // q_s is written; the previous tile's P V is done with kv_s and p_s
    load_tile<T, D>(p, p.k_cache, pages, kv_head, t0, n, kv_s);
    __syncthreads();
    float s[S::kRowsPerThread][S::kKeysPerThread] = {};
    for (int d = 0; d < D; ++d) {
      float qd[S::kRowsPerThread], kd[S::kKeysPerThread];
#pragma unroll
      for (int i = 0; i < S::kRowsPerThread; ++i) qd[i] = q_s[(group * S::kRowsPerThread + i) * S::kStride + d];
#pragma unroll
      for (int k = 0; k < S::kKeysPerThread; ++k) kd[k] = kv_s[(col + S::kCols * k) * S::kStride + d];
#pragma unroll
      for (int i = 0; i < S::kRowsPerThread; ++i) {
#pragma unroll
        for (int k = 0; k < S::kKeysPerThread; ++k) s[i][k] = fmaf(qd[i], kd[k], s[i][k]);
      }
    }
    // Online softmax per row. Keys past the row's limit (the diagonal, and the tile's padding
    // past kv_end) get probability 0; a row's first tile holds key 0, which every row sees,
    // so its running max is finite from then on.
#pragma unroll
    for (int i = 0; i < S::kRowsPerThread; ++i) {
      float tile_max = -INFINITY;
#pragma unroll
      for (int k = 0; k < S::kKeysPerThread; ++k) {
        if (t0 + col + S::kCols * k >= limit[i]) s[i][k] = -INFINITY;
        tile_max = fmaxf(tile_max, s[i][k]);
      }
#pragma unroll
      for (int offset = S::kCols / 2; offset > 0; offset /= 2) {
        tile_max = fmaxf(tile_max, __shfl_xor_sync(0xffffffffu, tile_max, offset, S::kCols));
      }
      const float alpha = softmax_rescale(state[i], tile_max);
      float sum = 0.0f;
#pragma unroll
      for (int k = 0; k < S::kKeysPerThread; ++k) {
        const float prob = softmax_exp(s[i][k] - state[i].m);  // exp(-inf) = 0 where masked
        p_s[(group * S::kRowsPerThread + i) * S::kProbStride + col + S::kCols * k] = prob;
        sum += prob;
      }
#pragma unroll
      for (int offset = S::kCols / 2; offset > 0; offset /= 2) sum += __shfl_xor_sync(0xffffffffu, sum, offset, S::kCols);
      state[i].l += sum;
#pragma unroll
      for (int e = 0; e < S::kDimsPerThread; ++e) o[i][e] *= alpha;
    }
    __syncthreads();  // every thread is done with the K tile; p_s is written
    load_tile<T, D>(p, p.v_cache, pages, kv_head, t0, n, kv_s);
    __syncthreads();
    for (int j = 0; j < n; ++j) {
      float pj[S::kRowsPerThread], vj[S::kDimsPerThread];
#pragma unroll
      for (int i = 0; i < S::kRowsPerThread; ++i) pj[i] = p_s[(group * S::kRowsPerThread + i) * S::kProbStride + j];
#pragma unroll
      for (int e = 0; e < S::kDimsPerThread; ++e) vj[e] = kv_s[j * S::kStride + col + S::kCols * e];
#pragma unroll
      for (int i = 0; i < S::kRowsPerThread; ++i) {
#pragma unroll
        for (int e = 0; e < S::kDimsPerThread; ++e) o[i][e] = fmaf(pj[i], vj[e], o[i][e]);
      }
    }
  }

#pragma unroll
  for (int i = 0; i < S::kRowsPerThread; ++i) {
    const int r = group * S::kRowsPerThread + i;
    if (r >= count) continue;
    T* out = static_cast<T*>(p.out) + ((first + r) * Hq + head) * D;
#pragma unroll
    for (int e = 0; e < S::kDimsPerThread; ++e) out[col + S::kCols * e] = from_f32<T>(o[i][e] / state[i].l);
  }
}

template <typename T, int D>
__global__ void __launch_bounds__(TileShape<D>::kThreads, 1) prefill_kernel(PagedAttentionParams p) {
  using S = TileShape<D>;
  extern __shared__ float smem[];
  __shared__ bool starts_run[S::kRows];
  const int64_t tile_first = static_cast<int64_t>(blockIdx.x) * S::kRows;
  const int count = static_cast<int>(min(static_cast<int64_t>(S::kRows), p.num_queries - tile_first));
  if (threadIdx.x < count) {
    const int64_t i = tile_first + threadIdx.x;
    starts_run[threadIdx.x] = threadIdx.x == 0 || row_of(p, i) != row_of(p, i - 1) ||
                              static_cast<int64_t>(p.kv_lens[i]) != static_cast<int64_t>(p.kv_lens[i - 1]) + 1;
  }
  __syncthreads();
  for (int a = 0; a < count;) {
    int b = a + 1;
    while (b < count && !starts_run[b]) ++b;
    attend_run<T, D>(p, tile_first + a, b - a, blockIdx.y, smem);
    a = b;
  }
}

template <typename T, int D>
cudaError_t launch(const PagedAttentionParams& p, cudaStream_t stream) {
  using S = TileShape<D>;
  const cudaError_t err =
      cudaFuncSetAttribute(prefill_kernel<T, D>, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(S::kSmemBytes));
  if (err != cudaSuccess) return err;
  const dim3 grid(static_cast<unsigned>((p.num_queries + S::kRows - 1) / S::kRows), static_cast<unsigned>(p.num_q_heads));
  prefill_kernel<T, D><<<grid, S::kThreads, S::kSmemBytes, stream>>>(p);
  return cudaGetLastError();
}

template <typename T>
cudaError_t launch_typed(const PagedAttentionParams& p, cudaStream_t stream) {
  return dispatch_head_dim(p.head_dim, cudaErrorInvalidValue,
                           [&](auto d) { return launch<T, decltype(d)::value>(p, stream); });
}

size_t smem_bytes(int64_t head_dim) {
  return dispatch_head_dim(head_dim, SIZE_MAX, [](auto d) -> size_t {  // + the static run flags
    return TileShape<decltype(d)::value>::kSmemBytes + TileShape<decltype(d)::value>::kRows;
  });
}

}  // namespace

bool use_paged_prefill(const PagedAttentionParams& params) {
  if (!params.query_seq || params.max_splits != 1 || !params.query_tiled) return false;
  int device = 0, max_smem = 0;
  if (cudaGetDevice(&device) != cudaSuccess ||
      cudaDeviceGetAttribute(&max_smem, cudaDevAttrMaxSharedMemoryPerBlockOptin, device) != cudaSuccess) {
    (void)cudaGetLastError();  // not the attention's error: the decode kernel runs instead
    return false;
  }
  return smem_bytes(params.head_dim) <= static_cast<size_t>(max_smem);
}

cudaError_t launch_paged_prefill(const PagedAttentionParams& params, cudaStream_t stream) {
  if (params.num_queries == 0) return cudaSuccess;
  return dispatch_attn_dtype(params.dtype, [&](auto tag) {
    return launch_typed<typename decltype(tag)::type>(params, stream);
  });
}

}  // namespace siri::cuda
