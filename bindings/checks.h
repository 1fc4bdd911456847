// Argument validation shared by every op binding. Each check names the argument and what
// was expected, and raises a Python exception (ValueError / TypeError) through TORCH_CHECK_*
// before any kernel runs: bad input must never reach a raw pointer.
#pragma once

#include <ATen/ATen.h>

#include <string>

namespace siri::bind {

inline void check_dtype(const at::Tensor& t, const char* name, at::ScalarType expected) {
  TORCH_CHECK_TYPE(t.scalar_type() == expected, name, " must have dtype ", expected, ", got ",
                   t.scalar_type());
}

inline void check_dim(const at::Tensor& t, const char* name, int64_t dim) {
  TORCH_CHECK_VALUE(t.dim() == dim, name, " must be ", dim, "-D, got shape ", t.sizes());
}

inline void check_size(const at::Tensor& t, const char* name, int64_t d, int64_t expected,
                       const char* what) {
  TORCH_CHECK_VALUE(t.size(d) == expected, name, ".shape[", d, "] must equal ", what, " (", expected,
                    "), got shape ", t.sizes());
}

inline void check_contiguous(const at::Tensor& t, const char* name) {
  TORCH_CHECK_VALUE(t.is_contiguous(), name, " must be contiguous (call .contiguous()), got strides ",
                    t.strides());
}

inline void check_same_device(const at::Tensor& t, const char* name, const at::Tensor& ref,
                              const char* ref_name) {
  TORCH_CHECK_VALUE(t.device() == ref.device(), name, " is on ", t.device(), " but ", ref_name,
                    " is on ", ref.device(), "; all tensors must be on the same device");
}

inline void check_all_finite(const at::Tensor& t, const char* name) {
  TORCH_CHECK_VALUE(at::isfinite(t).all().item<bool>(), name,
                    " contains non-finite values (nan or inf)");
}

}  // namespace siri::bind
