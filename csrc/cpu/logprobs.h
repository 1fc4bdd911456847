// CPU kernels of siri::token_logprobs (forward) and siri::logits_grad (its backward, also
// used by grpo_loss). T is float, double or bf16_t. Arguments are validated by the bindings.
#pragma once

#include "siri/logprobs.h"

namespace siri::cpu {

template <typename T> void token_logprobs(const LogprobParams<T>& params);
template <typename T> void logits_grad(const LogitsGradParams<T>& params);

}  // namespace siri::cpu
