// Fused token sampling with early-stop bookkeeping: the math shared by the CPU and CUDA
// kernels of siri::sample_tokens. Backends only differ in how they loop over the vocabulary.
//
// Distribution (per row, T = temperature > 0), the one Hugging Face and vLLM define:
//   p = softmax(x / T); keep the top-k tokens and renormalise; keep the smallest set of most
//   likely tokens whose mass reaches top_p and renormalise; draw from what is left.
//
// How it is computed without sorting:
//   * Order. Tokens are ranked by their logit through order_key(), a uint32 that sorts like the
//     float. Top-k keeps every token whose logit is >= the k-th largest (ties with the k-th are
//     kept, as HF's TopKLogitsWarper and vLLM do, so more than k tokens may survive). Top-p
//     walks the tokens from most to least likely, equal logits in increasing index order, and
//     keeps a token while the mass before it is < top_p: among tokens tied at the cut, the
//     lowest indices are kept.
//   * Thresholds by radix selection: four passes over the row, each a 256-bucket histogram of
//     the next 8 bits of order_key (counts for top-k, masses for top-p), give the exact cut.
//   * Masses are fixed point, e^((x-max)/T) * 2^40 truncated to uint64, so sums are exact and
//     independent of summation order: CPU and CUDA, and any thread count, make the same
//     top-p decision.
//   * Drawing: Gumbel-max in its exponential-race form. Token i gets score e_i / E_i with
//     E_i ~ Exp(1) from Philox keyed by (seed, position, i); the kept token with the largest
//     score is an exact draw from the renormalised kept distribution. Equal scores go to the
//     lowest index.
//   * exp and log are the polynomial versions below, written with explicit fmaf, so the CPU
//     (auto-vectorised) and CUDA give bit-identical noise and masses.
//
// Temperature 0 is greedy: the lowest index among the maximal logits, top-k/top-p ignored.
// Its logprob is taken under softmax(logits) (T = 1), the model's own distribution.
#pragma once

#include <string.h>

#include "siri/common.h"
#include "siri/philox.h"
#include "siri/vector_split.h"

namespace siri {

struct SampleParams {
  const void* logits;   // [batch, row_stride] fp32 or bf16 (raw bits), first `vocab` used
  bool logits_bf16;
  int64_t row_stride;   // elements between rows
  int64_t batch;
  int64_t vocab;        // < kMaxVocab
  const float* temperature;   // [batch]
  const int32_t* top_k;       // [batch], 0 (or >= vocab) = off
  const float* top_p;         // [batch], 1 = off
  const int64_t* seeds;       // [batch]
  const int64_t* positions;   // [batch]
  const int32_t* lengths;     // [batch]
  const int32_t* max_lengths; // [batch]
  const bool* finished;       // [batch]
  const int32_t* eos_ids;     // [num_eos]
  int64_t num_eos;
  int64_t pad_id;
  int64_t* tokens_out;        // [batch]
  float* logprobs_out;        // [batch]
  bool* finished_out;         // [batch]
  int32_t* lengths_out;       // [batch]
  int8_t* finish_reason_out;  // [batch]
};

// Fixed-point mass scale: a row of up to kMaxVocab masses <= 2^40 sums below 2^62.
constexpr int64_t kMaxVocab = int64_t(1) << 22;
constexpr float kMassScale = 1099511627776.0f;  // 2^40
constexpr double kInvMassScale = 1.0 / 1099511627776.0;

enum FinishReason : int8_t { kRunning = 0, kStop = 1, kLength = 2 };

// ---- bits and numbers -------------------------------------------------------------------

SIRI_HOST_DEVICE uint32_t float_bits(float x) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(x);
#else
  uint32_t b;
  memcpy(&b, &x, sizeof b);
  return b;
#endif
}

SIRI_HOST_DEVICE float bits_float(uint32_t b) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(b);
#else
  float x;
  memcpy(&x, &b, sizeof x);
  return x;
#endif
}

// The greedy pick's order, one rule for every kernel: NaN ranks as -inf; a larger value
// wins, then the lower index; index < 0 means "no candidate yet". A row holding only NaN and
// -inf therefore picks index 0, whatever order its elements are visited in.
SIRI_HOST_DEVICE float argmax_key(float x) { return x != x ? -INFINITY : x; }

// Whether candidate (v, i) beats (w, j); v and w are argmax_key values.
SIRI_HOST_DEVICE bool argmax_better(float v, int64_t i, float w, int64_t j) {
  return i >= 0 && (j < 0 || v > w || (v == w && i < j));
}

SIRI_HOST_DEVICE float load_logit(const float* row, int64_t i) { return row[i]; }
// bf16 stored as its raw 16 bits: the fp32 with the same top half.
SIRI_HOST_DEVICE float load_logit(const uint16_t* row, int64_t i) {
  return bits_float(static_cast<uint32_t>(row[i]) << 16);
}

// load_logit as a functor, for the row traversals of siri/vector_split.h.
struct LogitLoad {
  template <typename T>
  SIRI_HOST_DEVICE float operator()(const T* row, int64_t i) const { return load_logit(row, i); }
};

// A uint32 that orders like the float; -0 and +0 map to the same key, NaN to 0 (below -inf).
SIRI_HOST_DEVICE uint32_t order_key(float x) {
  const uint32_t b = float_bits(x + 0.0f);
  const uint32_t key = (b & 0x80000000u) ? ~b : (b | 0x80000000u);
  return x == x ? key : 0u;
}

// e^x for x <= 0 within about 1 ulp; 0 below -87 and for NaN.
SIRI_HOST_DEVICE float exp_nonpositive(float x) {
  constexpr float kShift = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer
  // Clamps written as selects: fminf/fmaxf (NaN rules) keep GCC from vectorising.
  const float xc = x > -87.0f ? (x < 0.0f ? x : 0.0f) : -87.0f;
  const float t = fmaf(xc, 1.44269504088896341f, kShift);
  const float n = t - kShift;
  float r = fmaf(n, -0.693145751953125f, xc);  // ln2 split in a high and a low part
  r = fmaf(n, -1.42860682030941723e-06f, r);
  float poly = fmaf(r, 1.0f / 720.0f, 1.0f / 120.0f);
  poly = fmaf(poly, r, 1.0f / 24.0f);
  poly = fmaf(poly, r, 1.0f / 6.0f);
  poly = fmaf(poly, r, 0.5f);
  poly = fmaf(poly, r, 1.0f);
  poly = fmaf(poly, r, 1.0f);
  const int32_t exponent = static_cast<int32_t>(float_bits(t) - float_bits(kShift));
  const float scale = bits_float(static_cast<uint32_t>(exponent + 127) << 23);
  return x >= -87.0f ? poly * scale : 0.0f;
}

// log(x) for normal x > 0 within about 2 ulp.
SIRI_HOST_DEVICE float log_positive(float x) {
  constexpr uint32_t kSqrtHalf = 0x3f3504f3u;
  const uint32_t shifted = float_bits(x) - kSqrtHalf;
  const int32_t exponent = static_cast<int32_t>(shifted) >> 23;
  const float m = bits_float((shifted & 0x007fffffu) + kSqrtHalf);  // in [sqrt(1/2), sqrt(2))
  const float f = m - 1.0f;
  const float s = f / (2.0f + f);  // log(1 + f) = 2 atanh(s)
  const float s2 = s * s;
  float q = fmaf(s2, 1.0f / 9.0f, 1.0f / 7.0f);
  q = fmaf(q, s2, 1.0f / 5.0f);
  q = fmaf(q, s2, 1.0f / 3.0f);
  q = q * s2;
  const float two_s = s + s;
  const float log_m = fmaf(two_s, q, two_s);
  const float e = static_cast<float>(exponent);
  return fmaf(e, 0.693145751953125f, fmaf(e, 1.42860682030941723e-06f, log_m));
}

// An Exp(1) variate from 32 random bits: -log(1 - w) with w uniform in (0, 1). Small values
// (the ones that win the race) come from small w, where a float has full relative precision.
SIRI_HOST_DEVICE float exponential_from_bits(uint32_t r) {
  // Bits above 2^32 - 256 would round to w = 1; they are clamped (in the integer domain, which
  // unlike a float select keeps GCC vectorising) to w = 1 - 2^-24.
  const uint32_t clamped = r < 0xFFFFFF00u ? r : 0xFFFFFF00u;
  const float w = fmaf(static_cast<float>(clamped), 2.3283064365386963e-10f, 1.1641532182693481e-10f);
  const float u = 1.0f - w;
  // log1p(-w) = log(u) - ((u - 1) + w) / u: the second term undoes the rounding of u (and is
  // the whole answer when u rounds to 1). No branch, so the loops calling this vectorise.
  return ((u - 1.0f) + w) / u - log_positive(u);
}

// Philox counter layout: (group of 4 vocabulary entries, stream 0, position lo, position hi),
// key (seed lo, seed hi). Nothing batch dependent goes in.
SIRI_HOST_DEVICE Philox4x32 vocab_noise_bits(uint64_t seed, uint64_t position, uint32_t group) {
  return philox4x32_10(group, 0u, static_cast<uint32_t>(position), static_cast<uint32_t>(position >> 32),
                       static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32));
}

SIRI_HOST_DEVICE uint64_t fixed_mass(float e) { return static_cast<uint64_t>(e * kMassScale); }

// A fixed-point mass (<= 2^40, as e <= 1) cut into two 32-bit parts that a warp can sum with
// 32-bit reductions (__reduce_add_sync) without overflow: 32 low parts sum below 2^29, 32 high
// parts below 2^22 (exact for masses below 2^51). Sums of parts join back into the exact sum.
constexpr int kMassLowBits = 24;
SIRI_HOST_DEVICE uint32_t mass_low_part(uint64_t m) { return static_cast<uint32_t>(m & ((uint64_t(1) << kMassLowBits) - 1)); }
SIRI_HOST_DEVICE uint32_t mass_high_part(uint64_t m) { return static_cast<uint32_t>(m >> kMassLowBits); }
SIRI_HOST_DEVICE uint64_t join_mass_parts(uint32_t low_sum, uint32_t high_sum) {
  return (static_cast<uint64_t>(high_sum) << kMassLowBits) + low_sum;
}

// Calls fn(g, v) for each Philox group g (entries 4g .. 4g+3; v[j] the logit of entry 4g + j,
// -inf past the end of the row) owned by `thread` of `threads`, so that every group's Philox
// draw is computed once. When the groups line up with the row's 16-byte vectors (head a
// multiple of 4 entries: every row of a vocabulary that is a multiple of 8) the whole groups
// inside the vectors are read through them; otherwise the row is read entry by entry (the race
// is bound by Philox, exp and log, not by loads, so a vector that splits a group and needed two
// Philox draws would cost more than it saves).
template <typename T, typename Fn>
SIRI_HOST_DEVICE void for_each_noise_group(const T* row, int64_t vocab, int64_t thread, int64_t threads, Fn&& fn) {
  constexpr int64_t kGroup = 4;
  constexpr int kWidth = Vector16<T>::kSize;
  static_assert(kWidth % kGroup == 0, "a vector must hold whole Philox groups");
  const VectorSplit s = split_for_vectors(row, vocab);
  const bool lined_up = s.head % kGroup == 0;
  const int64_t groups = (vocab + kGroup - 1) / kGroup;
  const auto scalar_groups = [&](int64_t first, int64_t last) {
    for (int64_t g = first + thread; g < last; g += threads) {
      float v[kGroup];
      SIRI_UNROLL
      for (int j = 0; j < kGroup; ++j) v[j] = kGroup * g + j < vocab ? load_logit(row, kGroup * g + j) : -INFINITY;
      fn(g, v);
    }
  };
  if (!lined_up) {
    scalar_groups(0, groups);
    return;
  }
  scalar_groups(0, s.head / kGroup);
  for (int64_t j = s.head + thread * kWidth; j < s.body_end; j += threads * kWidth) {
    const Vector16<T> vec = load_vector16(row + j);
    SIRI_UNROLL
    for (int q = 0; q < kWidth / kGroup; ++q) {
      float v[kGroup];
      SIRI_UNROLL
      for (int k = 0; k < kGroup; ++k) v[k] = load_logit(vec.elems, kGroup * q + k);
      fn(j / kGroup + q, v);
    }
  }
  scalar_groups(s.body_end / kGroup, groups);
}

// ---- thresholds ---------------------------------------------------------------------------

constexpr int kRadixBits = 8;
constexpr int kRadixBuckets = 1 << kRadixBits;
constexpr int kRadixLevels = 32 / kRadixBits;

// Exact radix selection of the order_key at which a running weight (count or fixed-point
// mass), accumulated from the most likely token down, first reaches `target`.
struct RadixSelect {
  uint32_t prefix = 0;    // the digits fixed so far
  int level = 0;          // how many digits are fixed
  uint64_t above = 0;     // weight of the candidates whose key is above every prefix match
  uint32_t tie_count = 0; // after the last level: the tokens whose key equals `prefix`
  uint64_t tie_mass = 0;

  SIRI_HOST_DEVICE bool matches(uint32_t key) const {
    return level == 0 || (key >> (32 - kRadixBits * level)) == prefix;
  }
  SIRI_HOST_DEVICE int digit(uint32_t key) const {
    return static_cast<int>((key >> (32 - kRadixBits * (level + 1))) & (kRadixBuckets - 1));
  }
  // Fixes the next digit from the histogram of the matching candidates.
  SIRI_HOST_DEVICE void step(const uint32_t* count, const uint64_t* mass, bool by_mass, double target) {
    int bucket = kRadixBuckets - 1;
    for (; bucket > 0; --bucket) {
      const uint64_t w = by_mass ? mass[bucket] : count[bucket];
      if (static_cast<double>(above + w) >= target) break;
      above += w;
    }
    prefix = (prefix << kRadixBits) | static_cast<uint32_t>(bucket);
    ++level;
    tie_count = count[bucket];
    tie_mass = mass[bucket];
  }
  SIRI_HOST_DEVICE bool done() const { return level == kRadixLevels; }
};

// Tokens kept for drawing: key > key_cut, or key == key_cut and index <= last_tie_index.
struct KeepFilter {
  uint32_t key_cut = 0;
  int64_t last_tie_index = 0;
  SIRI_HOST_DEVICE bool keeps(uint32_t key, int64_t index) const {
    return key > key_cut || (key == key_cut && index <= last_tie_index);
  }
};

// How many of the tokens tied at the top-p cut are kept: the smallest j >= 1 with
// above + j * (their mass) >= target.
SIRI_HOST_DEVICE uint32_t top_p_ties_kept(const RadixSelect& s, double target) {
  if (s.tie_count == 0 || s.tie_mass == 0) return s.tie_count;
  const double each = static_cast<double>(s.tie_mass / s.tie_count);
  const double needed = ceil((target - static_cast<double>(s.above)) / each);
  if (!(needed >= 1.0)) return 1;
  return needed >= static_cast<double>(s.tie_count) ? s.tie_count : static_cast<uint32_t>(needed);
}

// The top-p tie scan (the n-th token with a given key) as `threads` threads run it: each
// counts the matches in its contiguous_share of the row, an exclusive prefix sum of the counts
// tells every thread how many matches precede its share, and the one thread whose share holds
// the n-th match walks it again. count_key_in and nth_key_in are the per-thread parts.

// Number of tokens in row[r.begin, r.end) whose key equals `key`.
template <typename T>
SIRI_HOST_DEVICE uint32_t count_key_in(const T* row, IndexRange r, uint32_t key) {
  uint32_t count = 0;
  for_each_in_order(row, r, LogitLoad(), [&](int64_t, float v) { count += order_key(v) == key ? 1u : 0u; });
  return count;
}

// Index of the n-th (1-based) token of row[r.begin, r.end) whose key equals `key`; -1 if fewer.
template <typename T>
SIRI_HOST_DEVICE int64_t nth_key_in(const T* row, IndexRange r, uint32_t key, uint32_t n) {
  uint32_t seen = 0;
  int64_t found = -1;
  for_each_in_order(row, r, LogitLoad(), [&](int64_t i, float v) {
    if (order_key(v) == key && ++seen == n) found = i;
  });
  return found;
}

// 1 / T, capped at FLT_MAX so that a denormal T (1 / T = inf) gives (max - max) / T = 0,
// not NaN: the draw then becomes the argmax, the T -> 0 limit.
SIRI_HOST_DEVICE float inverse_temperature(float temperature) {
  const float inv = 1.0f / temperature;
  return inv < 3.402823466e38f ? inv : 3.402823466e38f;
}

SIRI_HOST_DEVICE bool top_k_active(int32_t k, int64_t vocab) { return k > 0 && k < vocab; }
SIRI_HOST_DEVICE bool top_p_active(float p) { return p < 1.0f; }

// ---- per-row results ----------------------------------------------------------------------

// Logprob of a token under softmax(x / T), given the row max and the fixed-point sum of
// e^((x - max) / T) over the whole row (T = 1 for greedy rows).
SIRI_HOST_DEVICE float row_logprob(float x_token, float x_max, float temperature, uint64_t mass_sum) {
  const double t = temperature > 0.0f ? static_cast<double>(temperature) : 1.0;
  const double z = static_cast<double>(mass_sum) * kInvMassScale;
  return static_cast<float>((static_cast<double>(x_token) - static_cast<double>(x_max)) / t - log(z));
}

// Writes the outputs of a row that was already finished: pad token, logprob 0, no change.
SIRI_HOST_DEVICE void write_finished_row(const SampleParams& p, int64_t row) {
  p.tokens_out[row] = p.pad_id;
  p.logprobs_out[row] = 0.0f;
  p.finished_out[row] = true;
  p.lengths_out[row] = p.lengths[row];
  p.finish_reason_out[row] = kRunning;
}

// Writes the outputs of a running row that drew `token`: length + 1, then stop on EOS
// (reason 1, also when the cap is reached by that same token) or on the cap (reason 2).
SIRI_HOST_DEVICE void write_running_row(const SampleParams& p, int64_t row, int64_t token, float logprob) {
  bool eos = false;
  for (int64_t j = 0; j < p.num_eos; ++j) eos = eos || token == p.eos_ids[j];
  const int32_t length = p.lengths[row] + 1;
  const bool capped = length >= p.max_lengths[row];
  p.tokens_out[row] = token;
  p.logprobs_out[row] = logprob;
  p.lengths_out[row] = length;
  p.finished_out[row] = eos || capped;
  p.finish_reason_out[row] = eos ? kStop : (capped ? kLength : kRunning);
}

}  // namespace siri
