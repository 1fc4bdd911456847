// The switches from run-time attention parameters to the compile-time ones the kernels are
// instantiated for, shared by the decode, prefill and rotary launchers: the element type of an
// AttnDType, and the head sizes the bindings admit.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

#include "siri/paged_attention.h"

namespace siri::cuda {

template <typename T>
struct ElementTag {
  using type = T;
};

// Returns fn(ElementTag<T>{}) for dtype's element type T (float, __nv_bfloat16, __half), or
// cudaErrorInvalidValue for a value outside the enum. Use: dispatch_attn_dtype(p.dtype,
// [&](auto tag) { return launch<typename decltype(tag)::type>(p, stream); }).
template <typename Fn>
cudaError_t dispatch_attn_dtype(AttnDType dtype, Fn&& fn) {
  switch (dtype) {
    case AttnDType::kFloat32: return fn(ElementTag<float>{});
    case AttnDType::kBFloat16: return fn(ElementTag<__nv_bfloat16>{});
    case AttnDType::kFloat16: return fn(ElementTag<__half>{});
  }
  return cudaErrorInvalidValue;
}

// Returns fn(std::integral_constant<int, D>{}) for head_dim D in {64, 80, 96, 128, 256} (the
// head sizes the bindings admit), or `unsupported` for any other.
template <typename R, typename Fn>
R dispatch_head_dim(int64_t head_dim, R unsupported, Fn&& fn) {
  switch (head_dim) {
    case 64: return fn(std::integral_constant<int, 64>{});
    case 80: return fn(std::integral_constant<int, 80>{});
    case 96: return fn(std::integral_constant<int, 96>{});
    case 128: return fn(std::integral_constant<int, 128>{});
    case 256: return fn(std::integral_constant<int, 256>{});
    default: return unsupported;
  }
}

}  // namespace siri::cuda
