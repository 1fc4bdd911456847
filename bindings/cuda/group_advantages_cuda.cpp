#include <torch/library.h>

#include "cuda/group_advantages.h"
#include "cuda_utils.h"
#include "group_advantages.h"

namespace siri::bind {

at::Tensor group_advantages_cuda(const at::Tensor& rewards, int64_t group_size, double eps,
                                 bool scale_by_std) {
  const c10::cuda::CUDAGuard guard(rewards.device());
  at::Tensor out;
  const at::Tensor r = rewards.contiguous();
  const GroupAdvantageParams p = prepare_group_advantages(r, group_size, eps, scale_by_std, out);
  check_cuda_launch(siri::cuda::launch_group_advantages(p, current_stream()), "group_advantages");
  return out;
}

TORCH_LIBRARY_IMPL(siri, CUDA, m) { m.impl("group_advantages", &group_advantages_cuda); }

}  // namespace siri::bind
