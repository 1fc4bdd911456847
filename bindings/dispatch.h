// Maps a tensor's floating dtype to the kernels' element type (float, double or bf16_t).
#pragma once

#include <ATen/ATen.h>

#include "siri/numeric.h"

namespace siri::bind {

// Calls f(T{}) with T the element type of `dtype`; rejects other dtypes naming `arg`.
template <typename F>
void dispatch_logits_dtype(at::ScalarType dtype, const char* arg, F&& f) {
  switch (dtype) {
    case at::kFloat: f(float{}); break;
    case at::kDouble: f(double{}); break;
    case at::kBFloat16: f(bf16_t{}); break;
    default:
      TORCH_CHECK_TYPE(false, arg, " must be float32, bfloat16 or float64, got ", dtype);
  }
}

// Raw pointer of a tensor, reinterpreted as the kernels' element type.
template <typename T> T* data_as(const at::Tensor& t) { return reinterpret_cast<T*>(t.data_ptr()); }

// The accumulator dtype the kernels use for an input dtype.
inline at::ScalarType acc_dtype(at::ScalarType dtype) {
  return dtype == at::kDouble ? at::kDouble : at::kFloat;
}

}  // namespace siri::bind
