// CUDA selective log-softmax. Forward: one block per row; each thread keeps an online
// (max, sum-exp, entropy) state over 16-byte vector loads, then the block merges the states.
// Backward: a 2-D grid (row, chunk of the vocabulary) recomputes softmax from the saved (max, log_norm)
// and writes dlogits (possibly into the logits themselves: each element is read, then
// written, by the same thread).
#include "cuda/logprobs.h"
#include "cuda/vector_load.cuh"

namespace siri::cuda {
namespace {

constexpr int kForwardThreads = 256;
constexpr int kBackwardThreads = 256;
constexpr int kBackwardElemsPerThread = 16;

template <typename A>
__device__ SoftmaxState<A> shfl_down(const SoftmaxState<A>& s, int offset) {
  return {__shfl_down_sync(0xffffffffu, s.max, offset), __shfl_down_sync(0xffffffffu, s.sum, offset),
          __shfl_down_sync(0xffffffffu, s.weighted, offset)};
}

// Merges the states of all threads of the block; the result is valid in thread 0.
template <typename A>
__device__ SoftmaxState<A> block_merge(SoftmaxState<A> s, A inv_temp) {
  __shared__ SoftmaxState<A> warp_states[kForwardThreads / 32];
  for (int offset = 16; offset > 0; offset >>= 1) s.merge(shfl_down(s, offset), inv_temp);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) warp_states[warp] = s;
  __syncthreads();
  if (warp == 0) {
    s = lane < kForwardThreads / 32 ? warp_states[lane] : SoftmaxState<A>::empty();
    for (int offset = 16; offset > 0; offset >>= 1) s.merge(shfl_down(s, offset), inv_temp);
  }
  return s;
}

template <typename T>
__global__ void __launch_bounds__(kForwardThreads) token_logprobs_kernel(LogprobParams<T> p) {
  using A = acc_t<T>;
  using V = Vec16<T>;
  const int64_t row = blockIdx.x;
  if (row_is_skipped(p, row)) {
    if (threadIdx.x == 0) write_skipped_row(p, row);
    return;
  }
  const T* x = p.logits + p.layout.offset(row);
  SoftmaxState<A> state = SoftmaxState<A>::empty();
  int64_t vector_end = 0;
  if (V::aligned(x)) {
    vector_end = p.vocab / V::kSize * V::kSize;
    for (int64_t j = int64_t(threadIdx.x) * V::kSize; j < vector_end; j += int64_t(blockDim.x) * V::kSize) {
      A v[V::kSize];
      V::load(x + j, v);
#pragma unroll
      for (int k = 0; k < V::kSize; ++k) state.add(v[k], p.inv_temperature);
    }
  }
  for (int64_t j = vector_end + threadIdx.x; j < p.vocab; j += blockDim.x) {
    state.add(load_acc(x, j), p.inv_temperature);
  }
  state = block_merge(state, p.inv_temperature);
  if (threadIdx.x == 0) write_row_outputs(p, row, x, state);
}

template <typename T>
__global__ void __launch_bounds__(kBackwardThreads) logits_grad_kernel(LogitsGradParams<T> p) {
  using A = acc_t<T>;
  using V = Vec16<T>;
  const int64_t row = blockIdx.x;
  const T* x = p.logits + p.layout.offset(row);
  T* g = p.grad + p.grad_layout.offset(row);
  const A a = p.row_scale[row] * p.inv_temperature;
  const A row_max = p.softmax_stats[2 * row], log_norm = p.softmax_stats[2 * row + 1];
  const int64_t target = a == A(0) ? -1 : p.targets[row];
  const auto grad_of = [&](A logit, int64_t j) {
    const A prob = a == A(0) ? A(0) : exp_approx(log_softmax_at(logit, row_max, log_norm, p.inv_temperature));
    return j == target ? a * (A(1) - prob) : -a * prob;
  };
  const int64_t chunk = int64_t(kBackwardThreads) * kBackwardElemsPerThread;
  const int64_t begin = int64_t(blockIdx.y) * chunk;
  const int64_t end = begin + chunk < p.vocab ? begin + chunk : p.vocab;
  if (V::aligned(x) && V::aligned(g) && (begin % V::kSize) == 0) {
    const int64_t vector_end = begin + (end - begin) / V::kSize * V::kSize;
    for (int64_t j = begin + int64_t(threadIdx.x) * V::kSize; j < vector_end; j += int64_t(blockDim.x) * V::kSize) {
      A v[V::kSize];
      V::load(x + j, v);
#pragma unroll
      for (int k = 0; k < V::kSize; ++k) v[k] = grad_of(v[k], j + k);
      V::store(g + j, v);
    }
    for (int64_t j = vector_end + threadIdx.x; j < end; j += blockDim.x) store_acc(g, j, grad_of(load_acc(x, j), j));
  } else {
    for (int64_t j = begin + threadIdx.x; j < end; j += blockDim.x) store_acc(g, j, grad_of(load_acc(x, j), j));
  }
}

template <typename T>
cudaError_t launch_forward(const LogprobParams<T>& p, cudaStream_t stream) {
  if (p.rows == 0) return cudaSuccess;
  token_logprobs_kernel<T><<<static_cast<unsigned>(p.rows), kForwardThreads, 0, stream>>>(p);
  return cudaGetLastError();
}

template <typename T>
cudaError_t launch_backward(const LogitsGradParams<T>& p, cudaStream_t stream) {
  if (p.rows == 0) return cudaSuccess;
  const int64_t chunk = int64_t(kBackwardThreads) * kBackwardElemsPerThread;
  const dim3 grid(static_cast<unsigned>(p.rows), static_cast<unsigned>((p.vocab + chunk - 1) / chunk));
  logits_grad_kernel<T><<<grid, kBackwardThreads, 0, stream>>>(p);
  return cudaGetLastError();
}

}  // namespace

cudaError_t launch_token_logprobs(const LogprobParams<float>& p, cudaStream_t s) { return launch_forward(p, s); }
cudaError_t launch_token_logprobs(const LogprobParams<double>& p, cudaStream_t s) { return launch_forward(p, s); }
cudaError_t launch_token_logprobs(const LogprobParams<bf16_t>& p, cudaStream_t s) { return launch_forward(p, s); }
cudaError_t launch_logits_grad(const LogitsGradParams<float>& p, cudaStream_t s) { return launch_backward(p, s); }
cudaError_t launch_logits_grad(const LogitsGradParams<double>& p, cudaStream_t s) { return launch_backward(p, s); }
cudaError_t launch_logits_grad(const LogitsGradParams<bf16_t>& p, cudaStream_t s) { return launch_backward(p, s); }

}  // namespace siri::cuda
