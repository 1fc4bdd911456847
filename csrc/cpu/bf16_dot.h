// bf16 attention arithmetic on AVX512-BF16 (VDPBF16PS: 32 bf16 products summed in pairs into
// 16 fp32 lanes, twice the work per instruction of an fp32 FMA). The CPU paged attention kernel
// uses it for bf16 caches when the compiler targets a CPU that has it (SIRI_CPU_BF16_DOT is
// then 1); accumulation stays fp32. Dot products need their two inputs as bf16 pairs along
// the reduction dimension:
//   scores  s[j][h] = sum_d q[h][d] k[j][d]: pairs (d, d+1); q's pair for 8 heads forms one
//           operand, k[j]'s pair (one dword of the row) is broadcast;
//   values  o[h][d] = sum_j p[j][h] v[j][d]: pairs (j, j+1); two V rows are interleaved
//           (VPUNPCK{L,H}WD), which permutes d within 32-element chunks (see pair_lane_dim),
//           and the pair (p[j][h], p[j+1][h]) is broadcast.
#pragma once

#include <cstdint>
#include <cstring>

#include "siri/paged_attention.h"

#if defined(__AVX512BF16__) && defined(__AVX512VL__) && defined(__AVX512BW__)
#define SIRI_CPU_BF16_DOT 1
#include <immintrin.h>

namespace siri::cpu::bf16_dot {

using HeadVec = f32x8;                                   // fp32 per query head (8 lanes)
typedef uint32_t PairVec __attribute__((vector_size(32)));  // a bf16 pair per query head

// acc += the bf16 pairs of q dotted with the pair at *k in every lane. The broadcast is the
// instruction's own memory operand ({1to8}): GCC emits a separate VPBROADCASTD otherwise,
// which on AMD Zen 4 takes a vector ALU slot per dot product and halves the score rate.
inline __m256 dot_broadcast_pair(__m256 acc, __m256i q, const uint32_t* k) {
  asm("vdpbf16ps %2%{1to8%}, %1, %0" : "+v"(acc) : "v"(q), "m"(*k));
  return acc;
}

// s[j] = lanes h: sum_d q[h][d] k_rows[j][d] for kRows rows (held in registers together). qt: [D / 2, 8] dwords, the
// pair (q[h][d], q[h][d+1]) of each head h, unscaled.
// prefetch.advance_scoring() runs once per 8 pairs of d.
template <int D, int kRows, typename Prefetch>
inline void score_rows(const uint32_t* qt, const BFloat16Bits* const* k_rows, HeadVec* s, Prefetch& prefetch) {
  __m256 acc[kRows];
#pragma GCC unroll 16
  for (int j = 0; j < kRows; ++j) acc[j] = _mm256_setzero_ps();
  for (int d0 = 0; d0 < D / 2; d0 += 8) {
    prefetch.advance_scoring();
    __m256i qd[8];
#pragma GCC unroll 8
    for (int i = 0; i < 8; ++i) qd[i] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(qt + (d0 + i) * 8));
#pragma GCC unroll 16
    for (int j = 0; j < kRows; ++j) {
      const uint32_t* k = reinterpret_cast<const uint32_t*>(k_rows[j]) + d0;
#pragma GCC unroll 8
      for (int i = 0; i < 8; ++i) acc[j] = dot_broadcast_pair(acc[j], qd[i], k + i);
    }
  }
  for (int j = 0; j < kRows; ++j) memcpy(&s[j], &acc[j], sizeof(HeadVec));
}

// x rounded to the nearest bf16 (ties to even), as fp32 bits: probabilities in [0, 1].
inline PairVec round_bits(HeadVec x) {
  PairVec u;
  memcpy(&u, &x, sizeof(u));
  return (u + 0x7fffu + ((u >> 16) & 1u)) & 0xffff0000u;
}

// interleaved[c] for c < D / 16: rows a and b (D bf16 each) as (a[d], b[d]) dword pairs,
// d in the order pair_lane_dim gives.
template <int D>
inline void interleave_rows(const BFloat16Bits* a, const BFloat16Bits* b, __m512i* interleaved) {
  for (int c = 0; c < D / 32; ++c) {
    const __m512i x = _mm512_loadu_si512(a + 32 * c), y = _mm512_loadu_si512(b + 32 * c);
    interleaved[2 * c] = _mm512_unpacklo_epi16(x, y);
    interleaved[2 * c + 1] = _mm512_unpackhi_epi16(x, y);
  }
}

// The head dimension d held by lane i of an accumulator filled from interleave_rows.
inline int pair_lane_dim(int i) {
  const int chunk = i / 32, half = (i / 16) % 2, lane = i % 16;
  return 32 * chunk + 8 * (lane / 4) + 4 * half + lane % 4;
}

// acc[i] += sum over token pairs jp of p_pairs[jp][lane + i] . interleaved V pair jp, for N
// heads, accumulators (D / 16 vectors each, pair_lane_dim order) in registers.
// prefetch.advance() runs once per token pair.
template <int D, int N, typename Prefetch>
inline void accumulate_pairs(float* acc, const PairVec* p_pairs, int lane, HeadVec alpha,
                             const __m512i* v_pairs, int64_t pairs, Prefetch& prefetch) {
  __m512 a[N][D / 16];
  for (int i = 0; i < N; ++i) {
    for (int c = 0; c < D / 16; ++c) a[i][c] = _mm512_mul_ps(_mm512_loadu_ps(acc + i * D + 16 * c), _mm512_set1_ps(alpha[lane + i]));
  }
  for (int64_t jp = 0; jp < pairs; ++jp) {
    __m512i w[N];
    for (int i = 0; i < N; ++i) w[i] = _mm512_set1_epi32(static_cast<int32_t>(p_pairs[jp][lane + i]));
    prefetch.advance();
    const __m512i* v = v_pairs + jp * (D / 16);
#pragma GCC unroll 16
    for (int c = 0; c < D / 16; ++c) {
      const __m512i vc = _mm512_loadu_si512(v + c);
      for (int i = 0; i < N; ++i) a[i][c] = _mm512_dpbf16_ps(a[i][c], (__m512bh)vc, (__m512bh)w[i]);
    }
  }
  for (int i = 0; i < N; ++i) {
    for (int c = 0; c < D / 16; ++c) _mm512_storeu_ps(acc + i * D + 16 * c, a[i][c]);
  }
}

}  // namespace siri::cpu::bf16_dot
#else
#define SIRI_CPU_BF16_DOT 0
#endif
