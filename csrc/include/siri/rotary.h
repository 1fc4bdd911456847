// Rotary position embedding (Hugging Face's "rotate half" layout) fused with the paged-KV
// write, shared by the CPU and CUDA kernels of siri::rotary_append_kv.
//
// For a head vector x of D elements, h = D / 2, and the token's cos/sin rows c, s:
//   out[i] = x[i] * c[i] - x[i + h] * s[i]   (i < h)
//   out[i] = x[i] * c[i] + x[i - h] * s[i]   (i >= h)
// rounded exactly as eager torch rounds `x * cos + rotate_half(x) * sin` in the element
// type: each product and the sum are rounded to T, so the engine's keys and queries are the
// bits Hugging Face's attention computes (greedy parity with `generate` in bf16 too).
#pragma once

#include "siri/numeric.h"
#include "siri/paged_attention.h"

namespace siri {

struct RotaryAppendParams {
  const void* q;                // [num_tokens, Hq, D]
  const void* k;                // [num_tokens, Hkv, D]
  const void* v;                // [num_tokens, Hkv, D]
  const void* cos;              // [num_tokens, D]
  const void* sin;              // [num_tokens, D]
  void* q_out;                  // [num_tokens, Hq, D]: q rotated
  void* k_cache;                // [num_pages, page_size, Hkv, D]: rotated k at each slot
  void* v_cache;                // [num_pages, page_size, Hkv, D]: v at each slot
  const int64_t* slot_mapping;  // [num_tokens]; a slot outside [0, num_slots) is skipped
  int64_t num_tokens;
  int64_t num_q_heads;
  int64_t num_kv_heads;
  int64_t head_dim;
  int64_t num_slots;  // num_pages * page_size
  AttnDType dtype;
};

// a * b and a + b rounded to fp32 without being contracted into an fma (eager torch rounds
// the product first). The CPU kernel file is also compiled with -ffp-contract=off.
SIRI_HOST_DEVICE float mul_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fmul_rn(a, b);
#else
  return a * b;
#endif
}
SIRI_HOST_DEVICE float add_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fadd_rn(a, b);
#else
  return a + b;
#endif
}

// Round an fp32 value to an element type and back: the rounding of one eager torch op.
struct RoundToFloat {
  SIRI_HOST_DEVICE float operator()(float x) const { return x; }
};
struct RoundToBf16 {
  SIRI_HOST_DEVICE float operator()(float x) const { return bf16_to_float(float_to_bf16(x)); }
};

// Element i of the rotated head vector, from x_i, its partner x_{i +- h} and the token's
// c_i, s_i (all widened to fp32); `first_half` is i < h.
template <typename Round>
SIRI_HOST_DEVICE float rotary_element(float x, float partner, float c, float s, bool first_half, Round round) {
  const float rotated = first_half ? -partner : partner;
  return round(add_rn(round(mul_rn(x, c)), round(mul_rn(rotated, s))));
}

}  // namespace siri
