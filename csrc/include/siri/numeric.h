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

// Round to nearest even; NaN stays NaN.
SIRI_HOST_DEVICE bf16_t float_to_bf16(float f) {
  uint32_t u;
  memcpy(&u, &f, sizeof(u));
  if ((u & 0x7fffffffu) > 0x7f800000u) return bf16_t{static_cast<uint16_t>((u >> 16) | 0x40u)};
  u += 0x7fffu + ((u >> 16) & 1u);
  return bf16_t{static_cast<uint16_t>(u >> 16)};
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

// exp(x) for x <= 0 mostly (softmax arguments), written so that `#pragma omp simd` loops
// vectorise it on the CPU: 2^n * p(r) with n = round(x / ln2), |r| <= ln2/2 and a degree-5
// minimax polynomial (relative error below 3e-7). Returns 0 below -87.3 (the fp32 underflow edge).
SIRI_HOST_DEVICE float exp_approx(float x) {
  const float clamped = fminf(fmaxf(x, -87.3f), 88.7f);
  const float n = floorf(clamped * 1.44269504088896341f + 0.5f);
  const float r = fmaf(n, -1.428606765330187e-06f, fmaf(n, -0.693145751953125f, clamped));
  // Cephes expf minimax polynomial: exp(r) ~ 1 + r + r^2 * P(r).
  float p = 1.9875691500e-4f;
  p = fmaf(p, r, 1.3981999507e-3f);
  p = fmaf(p, r, 8.3334519073e-3f);
  p = fmaf(p, r, 4.1665795894e-2f);
  p = fmaf(p, r, 1.6666665459e-1f);
  p = fmaf(p, r, 5.0000001201e-1f);
  p = fmaf(p, r * r, r) + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  memcpy(&scale, &bits, sizeof(scale));
  return x < -87.3f ? 0.0f : p * scale;
}
SIRI_HOST_DEVICE double exp_approx(double x) { return exp(x); }

}  // namespace siri
