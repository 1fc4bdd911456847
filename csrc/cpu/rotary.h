// CPU kernel of siri::rotary_append_kv (see siri/rotary.h).
#pragma once

#include "siri/rotary.h"

namespace siri::cpu {

void rotary_append_kv(const RotaryAppendParams& params);

}  // namespace siri::cpu
