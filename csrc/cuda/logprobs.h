// Host-side launchers of the siri::token_logprobs / siri::logits_grad CUDA kernels (raw
// pointers only; no torch). Overloaded for float, double and bf16_t logits.
#pragma once

#include <cuda_runtime.h>

#include "siri/logprobs.h"

namespace siri::cuda {

cudaError_t launch_token_logprobs(const LogprobParams<float>& params, cudaStream_t stream);
cudaError_t launch_token_logprobs(const LogprobParams<double>& params, cudaStream_t stream);
cudaError_t launch_token_logprobs(const LogprobParams<bf16_t>& params, cudaStream_t stream);

cudaError_t launch_logits_grad(const LogitsGradParams<float>& params, cudaStream_t stream);
cudaError_t launch_logits_grad(const LogitsGradParams<double>& params, cudaStream_t stream);
cudaError_t launch_logits_grad(const LogitsGradParams<bf16_t>& params, cudaStream_t stream);

}  // namespace siri::cuda
