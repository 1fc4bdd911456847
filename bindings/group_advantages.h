// Validation and output allocation for siri::group_advantages, shared by CPU and CUDA.
#pragma once

#include "checks.h"
#include "siri/group_advantages.h"

namespace siri::bind {

// Checks the arguments and returns kernel params writing into a freshly allocated `out`.
inline GroupAdvantageParams prepare_group_advantages(const at::Tensor& rewards, int64_t group_size,
                                                     double eps, bool scale_by_std, at::Tensor& out) {
  check_dtype(rewards, "rewards", at::kFloat);
  check_dim(rewards, "rewards", 1);
  TORCH_CHECK_VALUE(group_size >= 2, "group_size must be >= 2 (a group of one sample has no "
                    "baseline), got ", group_size);
  TORCH_CHECK_VALUE(rewards.size(0) % group_size == 0, "rewards has ", rewards.size(0),
                    " samples, which is not a multiple of group_size=", group_size);
  TORCH_CHECK_VALUE(std::isfinite(eps) && eps >= 0, "eps must be finite and >= 0, got ", eps);
  check_all_finite(rewards, "rewards");
  const at::Tensor r = rewards.contiguous();
  out = at::empty_like(r);
  GroupAdvantageParams p;
  p.rewards = r.data_ptr<float>();
  p.advantages = out.data_ptr<float>();
  p.num_groups = r.size(0) / group_size;
  p.group_size = group_size;
  p.eps = static_cast<float>(eps);
  p.scale_by_std = scale_by_std;
  return p;
}

}  // namespace siri::bind
