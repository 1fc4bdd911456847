// Host-side launcher of the CUDA kernel of siri::rotary_append_kv (raw pointers only).
#pragma once

#include <cuda_runtime.h>

#include "siri/rotary.h"

namespace siri::cuda {

cudaError_t launch_rotary_append_kv(const RotaryAppendParams& params, cudaStream_t stream);

}  // namespace siri::cuda
