// Validation and kernel parameters of siri::rotary_append_kv, shared by CPU and CUDA. Only
// shapes, dtypes and devices are checked (no device reads): slots outside the cache are
// skipped by the kernels, so the op is memory-safe on any slot_mapping.
#pragma once

#include "checks.h"
#include "paged_attention.h"
#include "siri/rotary.h"

namespace siri::bind {

struct RotaryAppendCall {
  RotaryAppendParams params;
  at::Tensor q_out;
};

inline RotaryAppendCall prepare_rotary_append_kv(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                                 const at::Tensor& cos, const at::Tensor& sin,
                                                 const at::Tensor& k_cache, const at::Tensor& v_cache,
                                                 const at::Tensor& slot_mapping) {
  RotaryAppendCall call;
  RotaryAppendParams& p = call.params;
  p.dtype = check_kv_cache(k_cache, v_cache);
  const int64_t D = k_cache.size(3), Hkv = k_cache.size(2);
  TORCH_CHECK_VALUE(q.dim() == 2 || q.dim() == 3, "q must be [T, Hq * D] or [T, Hq, D], got shape ", q.sizes());
  const int64_t tokens = q.size(0);
  const int64_t q_width = q.dim() == 3 ? q.size(1) * q.size(2) : q.size(1);
  TORCH_CHECK_VALUE(q_width % D == 0 && q_width / D >= Hkv && (q_width / D) % Hkv == 0,
                    "q must hold a multiple of k_cache's ", Hkv, " KV heads of head_dim ", D,
                    " per token, got shape ", q.sizes());
  for (const auto& [t, name] : {std::pair{&k, "k"}, {&v, "v"}}) {
    TORCH_CHECK_VALUE(t->dim() == 2 || t->dim() == 3, name, " must be [T, Hkv * D] or [T, Hkv, D], got shape ",
                      t->sizes());
  }
  check_dim(cos, "cos", 2);
  check_dim(sin, "sin", 2);
  for (const auto& [t, name] : {std::pair{&q, "q"}, {&k, "k"}, {&v, "v"}, {&cos, "cos"}, {&sin, "sin"}}) {
    TORCH_CHECK_TYPE(t->scalar_type() == k_cache.scalar_type(), name, " must have the dtype of k_cache (",
                     k_cache.scalar_type(), "), got ", t->scalar_type());
    check_same_device(*t, name, k_cache, "k_cache");
    check_contiguous(*t, name);
    check_size(*t, name, 0, tokens, "q.shape[0] (the tokens)");
  }
  for (const auto& [t, name] : {std::pair{&k, "k"}, {&v, "v"}}) {
    TORCH_CHECK_VALUE(t->numel() == tokens * Hkv * D, name, " must be [T, Hkv * D] or [T, Hkv, D] with Hkv = ",
                      Hkv, " and D = ", D, " (k_cache), got shape ", t->sizes());
  }
  check_size(cos, "cos", 1, D, "head_dim of k_cache");
  check_size(sin, "sin", 1, D, "head_dim of k_cache");
  check_dtype(slot_mapping, "slot_mapping", at::kLong);
  check_dim(slot_mapping, "slot_mapping", 1);
  check_size(slot_mapping, "slot_mapping", 0, tokens, "q.shape[0] (the tokens)");
  check_same_device(slot_mapping, "slot_mapping", k_cache, "k_cache");
  check_contiguous(slot_mapping, "slot_mapping");
  call.q_out = at::empty({tokens, q_width / D, D}, q.options());
  p.q = q.data_ptr();
  p.k = k.data_ptr();
  p.v = v.data_ptr();
  p.cos = cos.data_ptr();
  p.sin = sin.data_ptr();
  p.q_out = call.q_out.data_ptr();
  p.k_cache = k_cache.data_ptr();
  p.v_cache = v_cache.data_ptr();
  p.slot_mapping = slot_mapping.data_ptr<int64_t>();
  p.num_tokens = tokens;
  p.num_q_heads = q_width / D;
  p.num_kv_heads = Hkv;
  p.head_dim = D;
  p.num_slots = k_cache.size(0) * k_cache.size(1);
  return call;
}

}  // namespace siri::bind
