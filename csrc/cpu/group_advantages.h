// CPU kernel entry point of siri::group_advantages. Arguments are validated by the binding.
#pragma once

#include "siri/group_advantages.h"

namespace siri::cpu {

void group_advantages(const GroupAdvantageParams& params);

}  // namespace siri::cpu
