#include "rotary.h"

#include <torch/library.h>

#include "cpu/rotary.h"

namespace siri::bind {
namespace {

at::Tensor rotary_append_kv_cpu(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& cos,
                                const at::Tensor& sin, at::Tensor& k_cache, at::Tensor& v_cache,
                                const at::Tensor& slot_mapping) {
  const RotaryAppendCall call = prepare_rotary_append_kv(q, k, v, cos, sin, k_cache, v_cache, slot_mapping);
  siri::cpu::rotary_append_kv(call.params);
  return call.q_out;
}

}  // namespace

TORCH_LIBRARY_IMPL(siri, CPU, m) { m.impl("rotary_append_kv", &rotary_append_kv_cpu); }

}  // namespace siri::bind
