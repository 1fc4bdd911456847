// The head sizes the paged-attention kernels are instantiated for, in one place: the CPU and
// CUDA kernels dispatch through visit_head_dim / dispatch_head_dim, the bindings reject any
// other head_dim with supported_head_dim and export the list to Python as
// siri._C.SUPPORTED_HEAD_DIMS. Adding a size here instantiates every attention kernel for it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <type_traits>
#include <utility>

namespace siri {

inline constexpr int kSupportedHeadDims[] = {64, 80, 96, 128, 256};
inline constexpr int kNumSupportedHeadDims = static_cast<int>(sizeof(kSupportedHeadDims) / sizeof(int));

inline constexpr bool supported_head_dim(int64_t head_dim) {
  for (const int d : kSupportedHeadDims) {
    if (d == head_dim) return true;
  }
  return false;
}

// The largest supported head size (for buffers sized at compile time).
inline constexpr int max_supported_head_dim() {
  int m = 0;
  for (const int d : kSupportedHeadDims) m = d > m ? d : m;
  return m;
}
inline constexpr int kMaxSupportedHeadDim = max_supported_head_dim();

namespace detail {
constexpr bool head_dims_are_multiples_of_16() {
  for (const int d : kSupportedHeadDims) {
    if (d <= 0 || d % 16 != 0) return false;
  }
  return true;
}

template <typename Fn, std::size_t... I>
bool visit_head_dim(int64_t head_dim, Fn& fn, std::index_sequence<I...>) {
  return ((head_dim == kSupportedHeadDims[I] &&
           (static_cast<void>(fn(std::integral_constant<int, kSupportedHeadDims[I]>{})), true)) ||
          ...);
}
}  // namespace detail

// The CPU kernels hold rows as 16-lane fp32 vectors; the CUDA kernels load 16 bytes at a time.
static_assert(detail::head_dims_are_multiples_of_16(), "every supported head_dim must be a multiple of 16");

// Calls fn(std::integral_constant<int, D>{}) when head_dim is the supported size D and returns
// true; returns false without calling fn for any other head_dim.
template <typename Fn>
bool visit_head_dim(int64_t head_dim, Fn&& fn) {
  return detail::visit_head_dim(head_dim, fn, std::make_index_sequence<kNumSupportedHeadDims>{});
}

// Returns fn(std::integral_constant<int, D>{}) when head_dim is the supported size D, or
// `unsupported` for any other head_dim.
template <typename R, typename Fn>
R dispatch_head_dim(int64_t head_dim, R unsupported, Fn&& fn) {
  R result = unsupported;
  visit_head_dim(head_dim, [&](auto d) { result = fn(d); });
  return result;
}

}  // namespace siri
