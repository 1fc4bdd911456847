// Host-side launcher of the siri::group_advantages CUDA kernel. Raw pointers only: included
// by the CUDA binding (which sees torch) and by the kernel file (which must not).
#pragma once

#include <cuda_runtime.h>

#include "siri/group_advantages.h"

namespace siri::cuda {

// Returns the launch error (cudaSuccess when the launch was accepted).
cudaError_t launch_group_advantages(const GroupAdvantageParams& params, cudaStream_t stream);

}  // namespace siri::cuda
