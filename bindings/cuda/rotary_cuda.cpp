#include <torch/library.h>

#include "cuda/rotary.h"
#include "cuda_utils.h"
#include "rotary.h"

namespace siri::bind {
namespace {

at::Tensor rotary_append_kv_cuda(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                 const at::Tensor& cos, const at::Tensor& sin, at::Tensor& k_cache,
                                 at::Tensor& v_cache, const at::Tensor& slot_mapping) {
  const c10::cuda::CUDAGuard guard(q.device());
  const RotaryAppendCall call = prepare_rotary_append_kv(q, k, v, cos, sin, k_cache, v_cache, slot_mapping);
  check_cuda_launch(siri::cuda::launch_rotary_append_kv(call.params, current_stream()), "rotary_append_kv");
  return call.q_out;
}

}  // namespace

TORCH_LIBRARY_IMPL(siri, CUDA, m) { m.impl("rotary_append_kv", &rotary_append_kv_cuda); }

}  // namespace siri::bind
