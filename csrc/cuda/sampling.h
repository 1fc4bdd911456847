// Host-side launcher of the siri::sample_tokens CUDA kernel. Raw pointers only: included by
// the CUDA binding (which sees torch) and by the kernel file (which must not).
#pragma once

#include <cuda_runtime.h>

#include "siri/sampling.h"

namespace siri::cuda {

// One block per row. Returns the launch error (cudaSuccess when the launch was accepted).
cudaError_t launch_sample_tokens(const SampleParams& params, cudaStream_t stream);

}  // namespace siri::cuda
