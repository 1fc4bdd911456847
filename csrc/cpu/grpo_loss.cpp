#include "cpu/grpo_loss.h"

#include <ATen/Parallel.h>

#include <cmath>

namespace siri::cpu {

template <typename A>
void grpo_token_loss(const GrpoLossParams<A>& params) {
  at::parallel_for(0, params.n, 16384, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) siri::grpo_token_loss(params, i);
  });
}

template void grpo_token_loss<float>(const GrpoLossParams<float>&);
template void grpo_token_loss<double>(const GrpoLossParams<double>&);

}  // namespace siri::cpu
