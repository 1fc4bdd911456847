// CUDA kernel for siri::sample_tokens: one block per row, threads striding over the vocabulary.
// The math (keys, radix steps, fixed-point masses, Philox noise, stop rules) is the one in
// siri/sampling.h that the CPU kernel uses, so both draw the same token for the same row.
// Histograms live in shared memory and take integer atomics, which are order independent:
// the result does not depend on thread scheduling.
//
// Rows are read through 16-byte vectors with a scalar head and tail (siri/vector_split.h), so
// rows of an odd vocabulary, which start at any alignment, are vectorised too.
#include "cuda/sampling.h"

namespace siri::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
// Caps registers at 64 per thread (65536 / (4 * 256)), the occupancy the kernel had with
// scalar loads; ptxas fits the vectorised loops in it without spilling.
constexpr int kMinBlocksPerSM = 4;

struct Shared {
  uint32_t count[kRadixBuckets];
  unsigned long long mass[kRadixBuckets];
  float best[kWarps];
  int64_t best_index[kWarps];
  unsigned long long sum[kWarps];
  uint32_t scan[kWarps];
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

// Every thread gets the sum of x over the threads before it in the block.
__device__ __forceinline__ uint32_t block_exclusive_scan(uint32_t x, Shared& sh) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  uint32_t inclusive = x;
  for (int offset = 1; offset < 32; offset *= 2) {
    const uint32_t y = __shfl_up_sync(0xffffffffu, inclusive, offset);
    if (lane >= offset) inclusive += y;
  }
  if (lane == 31) sh.scan[warp] = inclusive;
  __syncthreads();
  uint32_t before = inclusive - x;
  for (int w = 0; w < warp; ++w) before += sh.scan[w];
  __syncthreads();
  return before;
}

template <typename T>
__device__ __forceinline__ uint64_t mass_sum(const T* x, int64_t vocab, float max, float inv_t, Shared& sh) {
  uint64_t sum = 0;
  for_each_strided(x, vocab, threadIdx.x, kThreads, LogitLoad(), [&](int64_t, float v) {
    sum += fixed_mass(exp_nonpositive((v - max) * inv_t));
  });
  return block_sum(sum, sh);
}

// Adds a token of fixed-point mass `mass` to bucket `digit`. With `aggregate`, the lanes of
// the warp that get here together and share a digit first sum their counts and masses (the
// masses in two 32-bit parts), then one of them updates shared memory. For the first radix
// level, where nearly every token lands in a few exponent buckets: a shared 64-bit atomicAdd
// compiles to a compare-and-swap loop (ATOMS.CAST.SPIN.64), which the lanes hitting one
// address pass one at a time.
__device__ __forceinline__ void add_to_bucket(int digit, uint64_t mass, bool aggregate, Shared& sh) {
#if __CUDA_ARCH__ >= 800  // __reduce_add_sync
  if (aggregate) {
    const unsigned peers = __match_any_sync(__activemask(), digit);
    const uint32_t low = __reduce_add_sync(peers, mass_low_part(mass));
    const uint32_t high = __reduce_add_sync(peers, mass_high_part(mass));
    if (threadIdx.x % 32 == static_cast<unsigned>(__ffs(peers) - 1)) {
      atomicAdd(&sh.count[digit], static_cast<uint32_t>(__popc(peers)));
      atomicAdd(&sh.mass[digit], static_cast<unsigned long long>(join_mass_parts(low, high)));
    }
    return;
  }
#endif
  atomicAdd(&sh.count[digit], 1u);
  atomicAdd(&sh.mass[digit], static_cast<unsigned long long>(mass));
}

// Shared histogram of the next radix digit over the candidates (key >= min_key, prefix match),
// with their masses when kWithMass (a template flag: top-k and top-p each compile one loop).
template <bool kWithMass, typename T>
__device__ __forceinline__ void histogram(const T* x, int64_t vocab, const RadixSelect& s, uint32_t min_key, float max,
                          float inv_t, Shared& sh) {
  __syncthreads();  // the previous step has finished reading the histogram
  for (int b = threadIdx.x; b < kRadixBuckets; b += kThreads) {
    sh.count[b] = 0;
    sh.mass[b] = 0;
  }
  __syncthreads();
  for_each_strided(x, vocab, threadIdx.x, kThreads, LogitLoad(), [&](int64_t, float v) {
    const uint32_t key = order_key(v);
    if (key < min_key || !s.matches(key)) return;
    const int d = s.digit(key);
    if constexpr (kWithMass) {
      add_to_bucket(d, fixed_mass(exp_nonpositive((v - max) * inv_t)), s.level == 0, sh);
    } else {
      atomicAdd(&sh.count[d], 1u);  // a native 32-bit increment (ATOMS.POPC.INC), no CAS loop
    }
  });
  __syncthreads();
}

// Radix selection; every thread runs the (cheap) bucket scan on the shared histogram.
template <bool kByMass, typename T>
__device__ __forceinline__ RadixSelect select(const T* x, int64_t vocab, double goal, uint32_t min_key,
                              float max, float inv_t, uint64_t* total, Shared& sh) {
  RadixSelect s;
  double target = goal;
  while (!s.done()) {
    histogram<kByMass>(x, vocab, s, min_key, max, inv_t, sh);
    if (kByMass && s.level == 0) {
      uint64_t sum = 0;
      for (int b = 0; b < kRadixBuckets; ++b) sum += sh.mass[b];
      *total = sum;
      target = goal * static_cast<double>(sum);
    }
    s.step(sh.count, reinterpret_cast<const uint64_t*>(sh.mass), kByMass, target);
  }
  return s;
}

// Index of the n-th (1-based) token whose key equals `key`, vocab - 1 if there are fewer: each
// thread counts the matches in its contiguous share, a prefix sum over the block finds the
// share holding the n-th, and its thread walks it again (siri/sampling.h, count_key_in).
template <typename T>
__device__ __forceinline__ int64_t nth_index_with_key(const T* x, int64_t vocab, uint32_t key, uint32_t n, Shared& sh) {
  const IndexRange share = contiguous_share(split_for_vectors(x, vocab), Vector16<T>::kSize, threadIdx.x, kThreads);
  const uint32_t here = count_key_in(x, share, key);
  if (threadIdx.x == 0) sh.found = vocab - 1;  // published by the scan's barrier
  const uint32_t before = block_exclusive_scan(here, sh);
  if (before < n && n <= before + here) sh.found = nth_key_in(x, share, key, n - before);
  __syncthreads();
  const int64_t found = sh.found;
  __syncthreads();
  return found;
}

template <typename T>
__global__ void __launch_bounds__(kThreads, kMinBlocksPerSM) sample_tokens_kernel(SampleParams p) {
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
  for_each_strided(x, vocab, threadIdx.x, kThreads, LogitLoad(), [&](int64_t i, float logit) {
    const float v = argmax_key(logit);  // NaN ranks as -inf, as on the CPU
    if (argmax_better(v, i, max, argmax)) {
      max = v;
      argmax = i;
    }
  });
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
    keep.key_cut = select<false>(x, vocab, p.top_k[r], 0u, max, inv_t, nullptr, sh).prefix;
  }
  if (top_p_active(p.top_p[r])) {
    uint64_t kept_mass = 0;
    const RadixSelect s = select<true>(x, vocab, p.top_p[r], keep.key_cut, max, inv_t, &kept_mass, sh);
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
  for_each_noise_group(x, vocab, threadIdx.x, kThreads, [&](int64_t g, const float (&v)[4]) {
    const Philox4x32 bits = vocab_noise_bits(seed, position, static_cast<uint32_t>(g));
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int64_t i = 4 * g + j;
      const float e = exp_nonpositive((v[j] - max) * inv_t);
      total += fixed_mass(e);
      const float score = e / exponential_from_bits(bits.v[j]);
      if (i < vocab && keep.keeps(order_key(v[j]), i) && argmax_better(score, i, best, winner)) {
        best = score;
        winner = i;
      }
    }
  });
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
