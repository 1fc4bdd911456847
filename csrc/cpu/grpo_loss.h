// CPU kernel of siri::grpo_token_loss (per-token GRPO/DAPO loss and d loss / d logp).
#pragma once

#include "siri/grpo_loss.h"

namespace siri::cpu {

template <typename A> void grpo_token_loss(const GrpoLossParams<A>& params);

}  // namespace siri::cpu
