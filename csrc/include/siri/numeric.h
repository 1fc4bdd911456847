// Element types and the scalar math the kernels share: bf16 <-> fp32 by bit manipulation,
// the accumulator type of each input type, and an exp that vectorises.
#pragma once

#include <cstring>

#include "siri/common.h"

namespace siri {

// Same layout as at::BFloat16 / __nv_bfloat16; the bindings reinterpret their pointers.
struct bf16_t {
  uint16_t bits;
};

SIRI_HOST_DEVICE float bf16_to_float(bf16_t x) {
  const uint32_t u = static_cast<uint32_t>(x.bits) << 16;
  float f;
  memcpy(&f, &u, sizeof(f));
  return f;
}

// Round to nearest even; NaN stays NaN. Branch-free so that CPU loops vectorise it.
SIRI_HOST_DEVICE bf16_t float_to_bf16(float f) {
  uint32_t u;
  memcpy(&u, &f, sizeof(u));
  const uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
  const uint32_t quiet_nan = (u >> 16) | 0x40u;
  const bool is_nan = (u & 0x7fffffffu) > 0x7f800000u;
  return bf16_t{static_cast<uint16_t>(is_nan ? quiet_nan : rounded)};
}

// Accumulator type: fp32 for fp32/bf16 inputs, fp64 for fp64 (used by gradcheck).
template <typename T> struct AccOf { using type = float; };
template <> struct AccOf<double> { using type = double; };
template <typename T> using acc_t = typename AccOf<T>::type;

SIRI_HOST_DEVICE float load_acc(const float* p, int64_t i) { return p[i]; }
SIRI_HOST_DEVICE double load_acc(const double* p, int64_t i) { return p[i]; }
SIRI_HOST_DEVICE float load_acc(const bf16_t* p, int64_t i) { return bf16_to_float(p[i]); }

SIRI_HOST_DEVICE void store_acc(float* p, int64_t i, float v) { p[i] = v; }
SIRI_HOST_DEVICE void store_acc(double* p, int64_t i, double v) { p[i] = v; }
SIRI_HOST_DEVICE void store_acc(bf16_t* p, int64_t i, float v) { p[i] = float_to_bf16(v); }

// exp(x) for softmax arguments, written so that `#pragma omp simd` loops vectorise it on
// the CPU without -ffast-math (no floorf/fminf calls, which GCC keeps scalar): 2^n * p(r)
// with n = round(x / ln2) by the 1.5 * 2^23 shift trick, |r| <= ln2/2, and Cephes' degree-5
// minimax polynomial. Relative error below 1e-7 on [-80, 80]; 0 below -87.3 (fp32 underflow).
// exp_approx_in_range is the polynomial alone, for c already in [-87.3, 88.7].
SIRI_HOST_DEVICE float exp_approx_in_range(float c) {
  constexpr float kShift = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer
  const float shifted = c * 1.44269504088896341f + kShift;
  const float n = shifted - kShift;
  const float r = fmaf(n, -1.428606765330187e-06f, fmaf(n, -0.693145751953125f, c));
  float p = 1.9875691500e-4f;
  p = fmaf(p, r, 1.3981999507e-3f);
  p = fmaf(p, r, 8.3334519073e-3f);
  p = fmaf(p, r, 4.1665795894e-2f);
  p = fmaf(p, r, 1.6666665459e-1f);
  p = fmaf(p, r, 5.0000001201e-1f);
  p = fmaf(p, r * r, r) + 1.0f;
  int32_t shifted_bits;
  memcpy(&shifted_bits, &shifted, sizeof(shifted_bits));
  const int32_t bits = (shifted_bits - 0x4B400000 + 127) << 23;  // 2^n
  float scale;
  memcpy(&scale, &bits, sizeof(scale));
  return p * scale;
}

SIRI_HOST_DEVICE float exp_approx(float x) {
  float c = x < -87.3f ? -87.3f : x;
  c = c > 88.7f ? 88.7f : c;
  return x < -87.3f ? 0.0f : exp_approx_in_range(c);
}

// exp_approx(x) for x <= 0 (and NaN), bit for bit, without the upper clamp: for log-weights
// (x - max) / T, which are never positive. The underflow to 0 is a multiplication by 0 or 1
// (exact: the clamped polynomial is finite), which nvcc keeps branch-free and fuses into
// a following sum; written as a select it branches around the polynomial.
SIRI_HOST_DEVICE float exp_approx_nonpositive(float x) {
  return exp_approx_in_range(x < -87.3f ? -87.3f : x) * (x < -87.3f ? 0.0f : 1.0f);
}
SIRI_HOST_DEVICE double exp_approx_nonpositive(double x) { return exp(x); }
SIRI_HOST_DEVICE double exp_approx(double x) { return exp(x); }

}  // namespace siri
