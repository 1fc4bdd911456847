// CUDA selective log-softmax. Forward: one block per row; each thread keeps an online
// (max, sum-exp[, entropy]) state over 16-byte vector loads, then the block merges the states.
// The entropy sum is compiled in only when the entropy is asked for.
// Backward: a 2-D grid (row, chunk of the vocabulary) recomputes softmax from the saved (max, log_norm)
// and writes dlogits (possibly into the logits themselves: each element is read, then
// written, by the same thread).
// Both read rows through 16-byte vectors after a scalar head up to the first 16-byte boundary
// (siri/vector_split.h): rows of an odd vocabulary start at any alignment.
#include "cuda/logprobs.h"
#include "cuda/vector_load.cuh"

namespace siri::cuda {
namespace {

constexpr int kForwardThreads = 256;
constexpr int kBackwardThreads = 256;
constexpr int kBackwardElemsPerThread = 16;

template <typename A>
__device__ LogitsSoftmaxState<A> shfl_down(const LogitsSoftmaxState<A>& s, int offset) {
  return {__shfl_down_sync(0xffffffffu, s.max, offset), __shfl_down_sync(0xffffffffu, s.sum, offset),
          __shfl_down_sync(0xffffffffu, s.weighted, offset)};
}

// Merges the states of all threads of the block; the result is valid in thread 0.
template <bool kEntropy, typename A>
__device__ LogitsSoftmaxState<A> block_merge(LogitsSoftmaxState<A> s, A inv_temp) {
  __shared__ LogitsSoftmaxState<A> warp_states[kForwardThreads / 32];
  for (int offset = 16; offset > 0; offset >>= 1) s.template merge<kEntropy>(shfl_down(s, offset), inv_temp);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) warp_states[warp] = s;
  __syncthreads();
  if (warp == 0) {
    s = lane < kForwardThreads / 32 ? warp_states[lane] : LogitsSoftmaxState<A>::empty();
    for (int offset = 16; offset > 0; offset >>= 1) s.template merge<kEntropy>(shfl_down(s, offset), inv_temp);
  }
  return s;
}

// kEntropy: whether p.entropy is set; without it `weighted` is neither summed nor written.
template <typename T, bool kEntropy>
__global__ void __launch_bounds__(kForwardThreads) token_logprobs_kernel(LogprobParams<T> p) {
  using A = acc_t<T>;
  const int64_t row = blockIdx.x;
  if (row_is_skipped(p, row)) {
    if (threadIdx.x == 0) write_skipped_row(p, row);
    return;
  }
  const T* x = p.logits + p.layout.offset(row);
  const A inv_temp = p.inv_temperature;
  LogitsSoftmaxState<A> state = LogitsSoftmaxState<A>::empty();
  for_each_strided(
      x, p.vocab, threadIdx.x, kForwardThreads, AccLoad(),
      [&](int64_t, A v) { state.template add<kEntropy>(v, inv_temp); },
      [&](int64_t, const A (&v)[Vec16<T>::kSize]) { state.template add_run<kEntropy>(v, inv_temp); });
  state = block_merge<kEntropy>(state, inv_temp);
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
  const int64_t size = (begin + chunk < p.vocab ? begin + chunk : p.vocab) - begin;
  const T* xc = x + begin;
  T* gc = g + begin;
  // Vectors need the logits and the gradient at the same offset from a 16-byte boundary (always
  // so in place); otherwise the chunk is read and written element by element.
  const VectorSplit s = same_vector_phase(xc, gc) ? split_for_vectors(xc, size) : scalar_split(size);
  for (int64_t j = threadIdx.x; j < s.head; j += kBackwardThreads) store_acc(gc, j, grad_of(load_acc(xc, j), begin + j));
  for (int64_t j = s.head + int64_t(threadIdx.x) * V::kSize; j < s.body_end; j += int64_t(kBackwardThreads) * V::kSize) {
    A v[V::kSize];
    V::load(xc + j, v);
#pragma unroll
    for (int k = 0; k < V::kSize; ++k) v[k] = grad_of(v[k], begin + j + k);
    V::store(gc + j, v);
  }
  for (int64_t j = s.body_end + threadIdx.x; j < size; j += kBackwardThreads) {
    store_acc(gc, j, grad_of(load_acc(xc, j), begin + j));
  }
}

template <typename T>
cudaError_t launch_forward(const LogprobParams<T>& p, cudaStream_t stream) {
  if (p.rows == 0) return cudaSuccess;
  if (p.entropy != nullptr) {
    token_logprobs_kernel<T, true><<<static_cast<unsigned>(p.rows), kForwardThreads, 0, stream>>>(p);
  } else {
    token_logprobs_kernel<T, false><<<static_cast<unsigned>(p.rows), kForwardThreads, 0, stream>>>(p);
  }
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
