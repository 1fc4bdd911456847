// CPU kernel entry point of siri::sample_tokens. Arguments are validated by the binding.
#pragma once

#include "siri/sampling.h"

namespace siri::cpu {

// One row per task (at::parallel_for); each row is a few vectorised passes over the vocabulary.
void sample_tokens(const SampleParams& params);

}  // namespace siri::cpu
