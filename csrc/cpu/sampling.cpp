// CPU kernel for siri::sample_tokens. Rows are independent tasks. Every pass walks the row in
// chunks: a bf16 chunk is first widened into an fp32 buffer, then plain loops over the chunk
// (written so the compiler vectorises them) do the math from siri/sampling.h.
#include "cpu/sampling.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cstring>

namespace siri::cpu {
namespace {

constexpr int64_t kChunk = 1024;  // a multiple of 4: one Philox draw covers 4 entries

const float* load_chunk(const float* row, int64_t begin, int64_t, float*) { return row + begin; }

const float* load_chunk(const uint16_t* row, int64_t begin, int64_t n, float* buf) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) buf[i] = load_logit(row + begin, i);
  return buf;
}

// Index of the first maximum of v[0, n) whose value is > `above`, or -1.
int64_t first_max_above(const float* v, int64_t n, float above) {
  float m = above;
#pragma omp simd reduction(max : m)
  for (int64_t i = 0; i < n; ++i) m = std::max(m, v[i]);
  if (!(m > above)) return -1;
  for (int64_t i = 0; i < n; ++i) {
    if (v[i] == m) return i;
  }
  return -1;
}

template <typename T>
struct Row {
  const T* x;
  int64_t vocab;
  float buf[kChunk];

  // Calls fn(chunk_begin, chunk_values, chunk_length) over the row in order.
  template <typename Fn>
  void for_each_chunk(Fn&& fn) {
    for (int64_t begin = 0; begin < vocab; begin += kChunk) {
      const int64_t n = std::min(kChunk, vocab - begin);
      fn(begin, load_chunk(x, begin, n, buf), n);
    }
  }

  // The largest logit and the lowest index holding it (NaN never wins; index 0 if none does):
  // the order of argmax_better in siri/sampling.h, vectorised.
  void max_and_argmax(float& max, int64_t& argmax) {
    max = -INFINITY;
    argmax = 0;
    for_each_chunk([&](int64_t begin, const float* v, int64_t n) {
      const int64_t i = first_max_above(v, n, max);
      if (i >= 0) {
        max = v[i];
        argmax = begin + i;
      }
    });
  }

  // Fixed-point sum of e^((x - max) * inv_t) over the row.
  uint64_t mass_sum(float max, float inv_t) {
    uint64_t sum = 0;
    for_each_chunk([&](int64_t, const float* v, int64_t n) {
#pragma omp simd reduction(+ : sum)
      for (int64_t i = 0; i < n; ++i) sum += fixed_mass(exp_nonpositive((v[i] - max) * inv_t));
    });
    return sum;
  }

  // Histogram of the next radix digit over the candidates (key >= min_key, matching the prefix).
  // Keys and masses are computed by vectorised loops; only the scatter is scalar.
  void histogram(const RadixSelect& s, uint32_t min_key, float max, float inv_t, bool with_mass,
                 uint32_t* count, uint64_t* mass) {
    std::fill(count, count + kRadixBuckets, 0u);
    std::fill(mass, mass + kRadixBuckets, uint64_t(0));
    uint32_t keys[kChunk];
    uint64_t masses[kChunk];
    for_each_chunk([&](int64_t, const float* v, int64_t n) {
#pragma omp simd
      for (int64_t i = 0; i < n; ++i) keys[i] = order_key(v[i]);
      if (with_mass) {
#pragma omp simd
        for (int64_t i = 0; i < n; ++i) masses[i] = fixed_mass(exp_nonpositive((v[i] - max) * inv_t));
      }
      for (int64_t i = 0; i < n; ++i) {
        if (keys[i] < min_key || !s.matches(keys[i])) continue;
        const int d = s.digit(keys[i]);
        ++count[d];
        if (with_mass) mass[d] += masses[i];
      }
    });
  }

  // Radix selection over the candidates with key >= min_key. By count the target is `goal`
  // tokens; by mass it is `goal` times the candidates' total mass, returned in `total`.
  RadixSelect select(bool by_mass, double goal, uint32_t min_key, float max, float inv_t,
                     uint64_t* total) {
    RadixSelect s;
    uint32_t count[kRadixBuckets];
    uint64_t mass[kRadixBuckets];
    double target = goal;
    while (!s.done()) {
      histogram(s, min_key, max, inv_t, by_mass, count, mass);
      if (by_mass && s.level == 0) {
        uint64_t sum = 0;
        for (int b = 0; b < kRadixBuckets; ++b) sum += mass[b];
        *total = sum;
        target = goal * static_cast<double>(sum);
      }
      s.step(count, mass, by_mass, target);
    }
    return s;
  }

  // Index of the n-th (1-based) token whose key equals `key`.
  int64_t nth_index_with_key(uint32_t key, uint32_t n) {
    uint32_t seen = 0;
    int64_t found = vocab - 1;
    for (int64_t begin = 0; begin < vocab && seen < n; begin += kChunk) {
      const int64_t len = std::min(kChunk, vocab - begin);
      const float* v = load_chunk(x, begin, len, buf);
      for (int64_t i = 0; i < len; ++i) {
        if (order_key(v[i]) == key && ++seen == n) {
          found = begin + i;
          break;
        }
      }
    }
    return found;
  }

  // Exponential race over the kept tokens. Returns the winner; `sum` gets the row's mass.
  int64_t race(const KeepFilter& keep, float max, float inv_t, uint64_t seed, uint64_t position,
               uint64_t& sum) {
    uint32_t bits[kChunk];
    float score[kChunk];
    float best = -1.0f;
    int64_t winner = -1;
    uint64_t total = 0;
    const bool filtered = keep.key_cut != 0 || keep.last_tie_index < vocab - 1;
    for_each_chunk([&](int64_t begin, const float* v, int64_t n) {
      const int64_t groups = (n + 3) / 4;
      const uint32_t first_group = static_cast<uint32_t>(begin / 4);
#pragma omp simd
      for (int64_t g = 0; g < groups; ++g) {
        const Philox4x32 r = vocab_noise_bits(seed, position, first_group + static_cast<uint32_t>(g));
        bits[4 * g] = r.v[0];  // written out: a loop over j here stops the vectoriser
        bits[4 * g + 1] = r.v[1];
        bits[4 * g + 2] = r.v[2];
        bits[4 * g + 3] = r.v[3];
      }
#pragma omp simd reduction(+ : total)
      for (int64_t i = 0; i < n; ++i) {
        const float e = exp_nonpositive((v[i] - max) * inv_t);
        total += fixed_mass(e);
        score[i] = e / exponential_from_bits(bits[i]);
      }
      // A separate loop: folded into the one above, the select stops the vectoriser.
      if (filtered) {
#pragma omp simd
        for (int64_t i = 0; i < n; ++i) score[i] = keep.keeps(order_key(v[i]), begin + i) ? score[i] : -1.0f;
      }
      const int64_t i = first_max_above(score, n, best);
      if (i >= 0) {
        best = score[i];
        winner = begin + i;
      }
    });
    sum = total;
    return winner;
  }
};

template <typename T>
void sample_row(const SampleParams& p, int64_t r, Row<T>& row) {
  if (p.finished[r]) {
    write_finished_row(p, r);
    return;
  }
  row.x = static_cast<const T*>(p.logits) + r * p.row_stride;
  float max;
  int64_t argmax;
  row.max_and_argmax(max, argmax);
  const float temperature = p.temperature[r];
  if (temperature == 0.0f || !std::isfinite(max)) {
    // Greedy. A row without a finite maximum has no distribution: its logprob is NaN.
    const float logprob = std::isfinite(max) ? row_logprob(max, max, 0.0f, row.mass_sum(max, 1.0f)) : NAN;
    write_running_row(p, r, argmax, logprob);
    return;
  }
  const float inv_t = inverse_temperature(temperature);
  KeepFilter keep;  // keeps everything
  keep.last_tie_index = p.vocab - 1;
  if (top_k_active(p.top_k[r], p.vocab)) {
    keep.key_cut = row.select(false, p.top_k[r], 0, max, inv_t, nullptr).prefix;
  }
  if (top_p_active(p.top_p[r])) {
    uint64_t kept_mass = 0;
    const RadixSelect s = row.select(true, p.top_p[r], keep.key_cut, max, inv_t, &kept_mass);
    const uint32_t ties = top_p_ties_kept(s, p.top_p[r] * static_cast<double>(kept_mass));
    keep.key_cut = s.prefix;
    keep.last_tie_index = ties == s.tie_count ? p.vocab - 1 : row.nth_index_with_key(s.prefix, ties);
  }
  uint64_t sum = 0;
  const int64_t token = row.race(keep, max, inv_t, static_cast<uint64_t>(p.seeds[r]),
                                 static_cast<uint64_t>(p.positions[r]), sum);
  const int64_t chosen = token >= 0 ? token : argmax;
  write_running_row(p, r, chosen, row_logprob(load_logit(row.x, chosen), max, temperature, sum));
}

template <typename T>
void sample_rows(const SampleParams& p) {
  at::parallel_for(0, p.batch, 1, [&](int64_t begin, int64_t end) {
    Row<T> row;
    row.vocab = p.vocab;
    for (int64_t r = begin; r < end; ++r) sample_row(p, r, row);
  });
}

}  // namespace

void sample_tokens(const SampleParams& params) {
  if (params.logits_bf16) {
    sample_rows<uint16_t>(params);
  } else {
    sample_rows<float>(params);
  }
}

}  // namespace siri::cpu
