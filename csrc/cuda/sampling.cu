// CUDA kernel for siri::sample_tokens: one block per row, threads striding over the vocabulary.
// The math (keys, radix steps, fixed-point masses, Philox noise, stop rules) is the one in
// siri/sampling.h that the CPU kernel uses, so both draw the same token for the same row.
// Histograms live in shared memory and take integer atomics, which are order independent:
// the result does not depend on thread scheduling.
#include "cuda/sampling.h"

namespace siri::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;

struct Shared {
  uint32_t count[kRadixBuckets];
  unsigned long long mass[kRadixBuckets];
  float best[kWarps];
  int64_t best_index[kWarps];
  unsigned long long sum[kWarps];
  int64_t found;
};

// Every thread gets the block's best (value, index).
__device__ __forceinline__ void block_argmax(float& v, int64_t& i, Shared& sh) {
  for (int offset = 16; offset > 0; offset /= 2) {
    const float w = __shfl_xor_sync(0xffffffffu, v, offset);
    const int64_t j = __shfl_xor_sync(0xffffffffu, i, offset);
    if (argmax_better(w, j, v, i)) {
      v = w;
      i = j;
    }
  }
  if (threadIdx.x % 32 == 0) {
    sh.best[threadIdx.x / 32] = v;
    sh.best_index[threadIdx.x / 32] = i;
  }
  __syncthreads();
  for (int w = 0; w < kWarps; ++w) {
    if (argmax_better(sh.best[w], sh.best_index[w], v, i)) {
      v = sh.best[w];
      i = sh.best_index[w];
    }
  }
  __syncthreads();
}

// Every thread gets the block's sum.
__device__ __forceinline__ uint64_t block_sum(uint64_t x, Shared& sh) {
  for (int offset = 16; offset > 0; offset /= 2) x += __shfl_xor_sync(0xffffffffu, x, offset);
  if (threadIdx.x % 32 == 0) sh.sum[threadIdx.x / 32] = x;
  __syncthreads();
  uint64_t total = 0;
  for (int w = 0; w < kWarps; ++w) total += sh.sum[w];
  __syncthreads();
  return total;
}

template <typename T>
__device__ __forceinline__ uint64_t mass_sum(const T* x, int64_t vocab, float max, float inv_t, Shared& sh) {
  uint64_t sum = 0;
  for (int64_t i = threadIdx.x; i < vocab; i += kThreads) {
    sum += fixed_mass(exp_nonpositive((load_logit(x, i) - max) * inv_t));
  }
  return block_sum(sum, sh);
}

// Shared histogram of the next radix digit over the candidates (key >= min_key, prefix match).
template <typename T>
__device__ __forceinline__ void histogram(const T* x, int64_t vocab, const RadixSelect& s, uint32_t min_key, float max,
                          float inv_t, bool with_mass, Shared& sh) {
  __syncthreads();  // the previous step has finished reading the histogram
  for (int b = threadIdx.x; b < kRadixBuckets; b += kThreads) {
    sh.count[b] = 0;
    sh.mass[b] = 0;
  }
  __syncthreads();
  for (int64_t i = threadIdx.x; i < vocab; i += kThreads) {
    const float v = load_logit(x, i);
    const uint32_t key = order_key(v);
    if (key < min_key || !s.matches(key)) continue;
    const int d = s.digit(key);
    atomicAdd(&sh.count[d], 1u);
    if (with_mass) {
      atomicAdd(&sh.mass[d], static_cast<unsigned long long>(fixed_mass(exp_nonpositive((v - max) * inv_t))));
    }
  }
  __syncthreads();
}

// Radix selection; every thread runs the (cheap) bucket scan on the shared histogram.
template <typename T>
__device__ __forceinline__ RadixSelect select(const T* x, int64_t vocab, bool by_mass, double goal, uint32_t min_key,
                              float max, float inv_t, uint64_t* total, Shared& sh) {
  RadixSelect s;
  double target = goal;
  while (!s.done()) {
    histogram(x, vocab, s, min_key, max, inv_t, by_mass, sh);
    if (by_mass && s.level == 0) {
      uint64_t sum = 0;
      for (int b = 0; b < kRadixBuckets; ++b) sum += sh.mass[b];
      *total = sum;
      target = goal * static_cast<double>(sum);
    }
    s.step(sh.count, reinterpret_cast<const uint64_t*>(sh.mass), by_mass, target);
  }
  return s;
}

// Index of the n-th (1-based) token whose key equals `key`: warp 0 walks the row in order.
template <typename T>
__device__ __forceinline__ int64_t nth_index_with_key(const T* x, int64_t vocab, uint32_t key, uint32_t n, Shared& sh) {
  if (threadIdx.x < 32) {
    const int lane = threadIdx.x;
    if (lane == 0) sh.found = vocab - 1;
    __syncwarp();
    uint32_t seen = 0;
    for (int64_t base = 0; base < vocab; base += 32) {
      const int64_t i = base + lane;
      const bool hit = i < vocab && order_key(load_logit(x, i)) == key;
      const unsigned ballot = __ballot_sync(0xffffffffu, hit);
      const uint32_t here = static_cast<uint32_t>(__popc(ballot));
      if (seen + here >= n) {
        const uint32_t rank = seen + static_cast<uint32_t>(__popc(ballot & ((1u << lane) - 1u))) + 1u;
        if (hit && rank == n) sh.found = i;
        break;
      }
      seen += here;
    }
  }
  __syncthreads();
  const int64_t found = sh.found;
  __syncthreads();
  return found;
}

template <typename T>
__global__ void __launch_bounds__(kThreads) sample_tokens_kernel(SampleParams p) {
  __shared__ Shared sh;
  const int64_t r = blockIdx.x;
  if (p.finished[r]) {
    if (threadIdx.x == 0) write_finished_row(p, r);
    return;
  }
  const T* x = static_cast<const T*>(p.logits) + r * p.row_stride;
  const int64_t vocab = p.vocab;

  float max = -INFINITY;
  int64_t argmax = -1;
  for (int64_t i = threadIdx.x; i < vocab; i += kThreads) {
    const float v = argmax_key(load_logit(x, i));   // NaN ranks as -inf, as on the CPU
    if (argmax_better(v, i, max, argmax)) {
      max = v;
      argmax = i;
    }
  }
  block_argmax(max, argmax, sh);

  const float temperature = p.temperature[r];
  if (temperature == 0.0f || !isfinite(max)) {
    const uint64_t sum = isfinite(max) ? mass_sum(x, vocab, max, 1.0f, sh) : 0;
    if (threadIdx.x == 0) {
      write_running_row(p, r, argmax, isfinite(max) ? row_logprob(max, max, 0.0f, sum) : NAN);
    }
    return;
  }
  const float inv_t = inverse_temperature(temperature);
  KeepFilter keep;
  keep.last_tie_index = vocab - 1;
  if (top_k_active(p.top_k[r], vocab)) {
    keep.key_cut = select(x, vocab, false, p.top_k[r], 0u, max, inv_t, nullptr, sh).prefix;
  }
  if (top_p_active(p.top_p[r])) {
    uint64_t kept_mass = 0;
    const RadixSelect s = select(x, vocab, true, p.top_p[r], keep.key_cut, max, inv_t, &kept_mass, sh);
    const uint32_t ties = top_p_ties_kept(s, p.top_p[r] * static_cast<double>(kept_mass));
    keep.key_cut = s.prefix;
    keep.last_tie_index = ties == s.tie_count ? vocab - 1 : nth_index_with_key(x, vocab, s.prefix, ties, sh);
  }

  // Exponential race: each thread draws Philox for groups of 4 consecutive entries.
  const uint64_t seed = static_cast<uint64_t>(p.seeds[r]);
  const uint64_t position = static_cast<uint64_t>(p.positions[r]);
  uint64_t total = 0;
  float best = -1.0f;
  int64_t winner = -1;
  const int64_t groups = (vocab + 3) / 4;
  for (int64_t g = threadIdx.x; g < groups; g += kThreads) {
    const Philox4x32 bits = vocab_noise_bits(seed, position, static_cast<uint32_t>(g));
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int64_t i = 4 * g + j;
      const float v = i < vocab ? load_logit(x, i) : -INFINITY;
      const float e = exp_nonpositive((v - max) * inv_t);
      total += fixed_mass(e);
      const float score = e / exponential_from_bits(bits.v[j]);
      if (i < vocab && keep.keeps(order_key(v), i) && argmax_better(score, i, best, winner)) {
        best = score;
        winner = i;
      }
    }
  }
  total = block_sum(total, sh);
  block_argmax(best, winner, sh);
  if (threadIdx.x == 0) {
    const int64_t token = winner >= 0 ? winner : argmax;
    write_running_row(p, r, token, row_logprob(load_logit(x, token), max, temperature, total));
  }
}

}  // namespace

cudaError_t launch_sample_tokens(const SampleParams& params, cudaStream_t stream) {
  if (params.batch == 0) return cudaSuccess;
  const dim3 grid(static_cast<unsigned>(params.batch));
  if (params.logits_bf16) {
    sample_tokens_kernel<uint16_t><<<grid, kThreads, 0, stream>>>(params);
  } else {
    sample_tokens_kernel<float><<<grid, kThreads, 0, stream>>>(params);
  }
  return cudaGetLastError();
}

}  // namespace siri::cuda
