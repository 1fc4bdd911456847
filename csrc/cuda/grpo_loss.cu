// CUDA per-token GRPO/DAPO loss: one thread per token (O(N) work after the vocabulary pass).
#include "cuda/grpo_loss.h"

namespace siri::cuda {
namespace {

template <typename A>
__global__ void grpo_token_loss_kernel(GrpoLossParams<A> p) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < p.n) grpo_token_loss(p, i);
}

template <typename A>
cudaError_t launch(const GrpoLossParams<A>& p, cudaStream_t stream) {
  if (p.n == 0) return cudaSuccess;
  constexpr int kThreads = 256;
  grpo_token_loss_kernel<A><<<static_cast<unsigned>((p.n + kThreads - 1) / kThreads), kThreads, 0, stream>>>(p);
  return cudaGetLastError();
}

}  // namespace

cudaError_t launch_grpo_token_loss(const GrpoLossParams<float>& p, cudaStream_t s) { return launch(p, s); }
cudaError_t launch_grpo_token_loss(const GrpoLossParams<double>& p, cudaStream_t s) { return launch(p, s); }

}  // namespace siri::cuda
