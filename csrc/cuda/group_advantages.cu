// CUDA kernel for siri::group_advantages: one thread per group. Reward batches are small
// (thousands of samples), so the launch dominates and a simple mapping is the right one.
#include "cuda/group_advantages.h"

namespace siri::cuda {

__global__ void group_advantages_kernel(GroupAdvantageParams params) {
  const int64_t group = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (group < params.num_groups) group_advantages_one_group(params, group);
}

cudaError_t launch_group_advantages(const GroupAdvantageParams& params, cudaStream_t stream) {
  if (params.num_groups == 0) return cudaSuccess;
  constexpr int kThreads = 128;
  const int64_t blocks = (params.num_groups + kThreads - 1) / kThreads;
  group_advantages_kernel<<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(params);
  return cudaGetLastError();
}

}  // namespace siri::cuda
