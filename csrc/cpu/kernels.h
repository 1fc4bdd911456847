// Entry points of the CPU kernels. Arguments are validated by the bindings before these run.
#pragma once

#include <algorithm>
#include <cmath>

#include "siri/group_advantages.h"

namespace siri::cpu {

void group_advantages(const GroupAdvantageParams& params);

}  // namespace siri::cpu
