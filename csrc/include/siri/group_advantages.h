// GRPO group-relative advantage, the per-group math shared by CPU and CUDA.
//
// For one group of `group_size` rewards r:
//   scale_by_std: a_i = (r_i - mean(r)) / (std(r) + eps), std unbiased (divides by g-1)
//   otherwise:    a_i = r_i - mean(r)                        (Dr. GRPO)
// Accumulates in double so fp32 results are correctly rounded for any group size.
#pragma once

#include "siri/common.h"

namespace siri {

struct GroupAdvantageParams {
  const float* rewards;  // [num_groups * group_size]
  float* advantages;     // [num_groups * group_size]
  int64_t num_groups;
  int64_t group_size;    // >= 2
  float eps;
  bool scale_by_std;
};

SIRI_HOST_DEVICE void group_advantages_one_group(const GroupAdvantageParams& p, int64_t group) {
  const float* r = p.rewards + group * p.group_size;
  float* out = p.advantages + group * p.group_size;
  const int64_t g = p.group_size;
  double sum = 0.0;
  for (int64_t i = 0; i < g; ++i) sum += static_cast<double>(r[i]);
  const double mean = sum / static_cast<double>(g);
  double inv_scale = 1.0;
  if (p.scale_by_std) {
    double ss = 0.0;
    for (int64_t i = 0; i < g; ++i) {
      const double d = static_cast<double>(r[i]) - mean;
      ss += d * d;
    }
    const double stddev = sqrt(ss / static_cast<double>(g - 1));
    // all-equal rewards with eps = 0: every centred reward is 0, so the advantage is 0 (not 0/0)
    const double denominator = stddev + static_cast<double>(p.eps);
    inv_scale = denominator > 0.0 ? 1.0 / denominator : 0.0;
  }
  for (int64_t i = 0; i < g; ++i) {
    out[i] = static_cast<float>((static_cast<double>(r[i]) - mean) * inv_scale);
  }
}

}  // namespace siri
