// CPU kernel for siri::group_advantages: groups are independent, one task per block of groups.
#include "cpu/group_advantages.h"

#include <ATen/Parallel.h>

#include <algorithm>

#include "siri/group_advantages.h"

namespace siri::cpu {

void group_advantages(const GroupAdvantageParams& params) {
  // Small groups: keep enough groups per task that scheduling is not the cost.
  const int64_t grain = std::max<int64_t>(1, 4096 / params.group_size);
  at::parallel_for(0, params.num_groups, grain, [&](int64_t begin, int64_t end) {
    for (int64_t group = begin; group < end; ++group) group_advantages_one_group(params, group);
  });
}

}  // namespace siri::cpu
