// CPU rotary embedding + KV write: one token per iteration of a parallel loop. It rotates the
// token's query heads into q_out and its key heads straight into their cache slot, and copies
// its value row there, so the rotated key never makes a round trip through memory.
// Compiled with -ffp-contract=off (CMakeLists.txt): the products must round before the sum.
#include "cpu/rotary.h"

#include <ATen/Parallel.h>

#include <cstring>

namespace siri::cpu {
namespace {

template <typename T, typename Round>
void rotate_heads(const T* x, const T* cos, const T* sin, int64_t heads, int64_t dim, T* out, Round round) {
  const int64_t half = dim / 2;
  for (int64_t h = 0; h < heads; ++h) {
    const T* row = x + h * dim;
    T* dst = out + h * dim;
    for (int64_t i = 0; i < dim; ++i) {
      const int64_t partner = i < half ? i + half : i - half;
      store_acc(dst, i, rotary_element(load_acc(row, i), load_acc(row, partner), load_acc(cos, i),
                                       load_acc(sin, i), i < half, round));
    }
  }
}

template <typename T, typename Round>
void run(const RotaryAppendParams& p) {
  const int64_t D = p.head_dim, q_row = p.num_q_heads * D, kv_row = p.num_kv_heads * D;
  const auto* q = static_cast<const T*>(p.q);
  const auto* k = static_cast<const T*>(p.k);
  const auto* v = static_cast<const T*>(p.v);
  const auto* cos = static_cast<const T*>(p.cos);
  const auto* sin = static_cast<const T*>(p.sin);
  auto* q_out = static_cast<T*>(p.q_out);
  auto* k_cache = static_cast<T*>(p.k_cache);
  auto* v_cache = static_cast<T*>(p.v_cache);
  at::parallel_for(0, p.num_tokens, 16, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      rotate_heads(q + t * q_row, cos + t * D, sin + t * D, p.num_q_heads, D, q_out + t * q_row, Round{});
      const int64_t slot = p.slot_mapping[t];
      if (slot < 0 || slot >= p.num_slots) continue;
      rotate_heads(k + t * kv_row, cos + t * D, sin + t * D, p.num_kv_heads, D, k_cache + slot * kv_row, Round{});
      std::memcpy(v_cache + slot * kv_row, v + t * kv_row, kv_row * sizeof(T));
    }
  });
}

}  // namespace

void rotary_append_kv(const RotaryAppendParams& p) {
  if (p.dtype == AttnDType::kBFloat16) {
    run<bf16_t, RoundToBf16>(p);
  } else {
    run<float, RoundToFloat>(p);
  }
}

}  // namespace siri::cpu
