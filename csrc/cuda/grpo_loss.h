// Host-side launchers of the siri::grpo_token_loss CUDA kernel (raw pointers only).
#pragma once

#include <cuda_runtime.h>

#include "siri/grpo_loss.h"

namespace siri::cuda {

cudaError_t launch_grpo_token_loss(const GrpoLossParams<float>& params, cudaStream_t stream);
cudaError_t launch_grpo_token_loss(const GrpoLossParams<double>& params, cudaStream_t stream);

}  // namespace siri::cuda
