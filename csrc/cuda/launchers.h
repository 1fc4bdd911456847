// Host-side launchers of the CUDA kernels. Raw pointers only: this header is included by
// the CUDA bindings (which see torch) and by kernel files (which must not).
#pragma once

#include <cuda_runtime.h>

#include "siri/group_advantages.h"

namespace siri::cuda {

// Returns the launch error (cudaSuccess when the launch was accepted).
cudaError_t launch_group_advantages(const GroupAdvantageParams& params, cudaStream_t stream);

}  // namespace siri::cuda
