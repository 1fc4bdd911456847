#include "group_advantages.h"

#include <torch/library.h>

#include "cpu/group_advantages.h"

namespace siri::bind {

at::Tensor group_advantages_cpu(const at::Tensor& rewards, int64_t group_size, double eps,
                                bool scale_by_std) {
  at::Tensor out;
  const at::Tensor r = rewards.contiguous();  // keeps the input alive for the raw pointer
  const GroupAdvantageParams p = prepare_group_advantages(r, group_size, eps, scale_by_std, out);
  siri::cpu::group_advantages(p);
  return out;
}

TORCH_LIBRARY_IMPL(siri, CPU, m) { m.impl("group_advantages", &group_advantages_cpu); }

}  // namespace siri::bind
