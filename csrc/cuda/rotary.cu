// CUDA rotary embedding + KV write: one thread per (token, head, element pair i, i + D/2) over
// the token's Hq query heads, Hkv key heads and Hkv value heads. Query pairs are rotated into
// q_out, key pairs rotated straight into their cache slot, value pairs copied there.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "cuda/attn_dispatch.cuh"
#include "cuda/element_convert.cuh"
#include "cuda/rotary.h"

namespace siri::cuda {
namespace {

template <typename T>
struct RoundTo {
  __device__ __forceinline__ float operator()(float x) const { return to_f32(from_f32<T>(x)); }
};

template <typename T>
__global__ void rotary_append_kv_kernel(RotaryAppendParams p) {
  const int64_t half = p.head_dim / 2;
  const int64_t heads = p.num_q_heads + 2 * p.num_kv_heads;
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= p.num_tokens * heads * half) return;
  const int64_t token = i / (heads * half), head = i / half % heads, j = i % half;
  const bool is_q = head < p.num_q_heads, is_k = !is_q && head < p.num_q_heads + p.num_kv_heads;
  const T* src;
  T* dst;
  if (is_q) {
    src = static_cast<const T*>(p.q) + (token * p.num_q_heads + head) * p.head_dim;
    dst = static_cast<T*>(p.q_out) + (token * p.num_q_heads + head) * p.head_dim;
  } else {
    const int64_t slot = p.slot_mapping[token];
    if (slot < 0 || slot >= p.num_slots) return;
    const int64_t kv_head = is_k ? head - p.num_q_heads : head - p.num_q_heads - p.num_kv_heads;
    const int64_t offset = (token * p.num_kv_heads + kv_head) * p.head_dim;
    src = static_cast<const T*>(is_k ? p.k : p.v) + offset;
    dst = static_cast<T*>(is_k ? p.k_cache : p.v_cache) + (slot * p.num_kv_heads + kv_head) * p.head_dim;
  }
  if (!is_q && !is_k) {
    dst[j] = src[j];
    dst[j + half] = src[j + half];
    return;
  }
  const T* cos = static_cast<const T*>(p.cos) + token * p.head_dim;
  const T* sin = static_cast<const T*>(p.sin) + token * p.head_dim;
  const float lo = to_f32(src[j]), hi = to_f32(src[j + half]);
  const RoundTo<T> round;
  dst[j] = from_f32<T>(rotary_element(lo, hi, to_f32(cos[j]), to_f32(sin[j]), true, round));
  dst[j + half] = from_f32<T>(rotary_element(hi, lo, to_f32(cos[j + half]), to_f32(sin[j + half]), false, round));
}

template <typename T>
cudaError_t launch_typed(const RotaryAppendParams& p, cudaStream_t stream) {
  const int64_t total = p.num_tokens * (p.num_q_heads + 2 * p.num_kv_heads) * (p.head_dim / 2);
  if (total == 0) return cudaSuccess;
  constexpr int kBlock = 256;
  rotary_append_kv_kernel<T><<<static_cast<unsigned>((total + kBlock - 1) / kBlock), kBlock, 0, stream>>>(p);
  return cudaGetLastError();
}

}  // namespace

cudaError_t launch_rotary_append_kv(const RotaryAppendParams& params, cudaStream_t stream) {
  return dispatch_attn_dtype(params.dtype, [&](auto tag) {
    return launch_typed<typename decltype(tag)::type>(params, stream);
  });
}

}  // namespace siri::cuda
