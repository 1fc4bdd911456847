// 16-byte vector loads and stores of float / double / bf16 elements, converted to and from
// the accumulator type. Used by kernels that stream long rows (logits, KV).
#pragma once

#include <cstdint>

#include "siri/numeric.h"

namespace siri::cuda {

template <typename T>
struct Vec16 {
  static constexpr int kSize = 16 / sizeof(T);
  using A = acc_t<T>;

  __device__ __forceinline__ static void load(const T* p, A (&out)[kSize]) {
    union { uint4 raw; T elems[kSize]; } u;
    u.raw = *reinterpret_cast<const uint4*>(p);
#pragma unroll
    for (int k = 0; k < kSize; ++k) out[k] = load_acc(u.elems, k);
  }

  __device__ __forceinline__ static void store(T* p, const A (&in)[kSize]) {
    union { uint4 raw; T elems[kSize]; } u;
#pragma unroll
    for (int k = 0; k < kSize; ++k) store_acc(u.elems, k, in[k]);
    *reinterpret_cast<uint4*>(p) = u.raw;
  }

  __device__ __forceinline__ static bool aligned(const void* p) {
    return (reinterpret_cast<uintptr_t>(p) & 15u) == 0;
  }
};

}  // namespace siri::cuda
