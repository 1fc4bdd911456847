// The switch from an AttnDType to the element type the attention kernels are instantiated for,
// shared by the decode, prefill and rotary launchers. The head-size switch is the one the CPU
// kernels use too (siri/head_dims.h: dispatch_head_dim).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

#include "siri/head_dims.h"
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

}  // namespace siri::cuda
