// Paged-KV attention math shared by the CPU and CUDA kernels: the parameter structs, the
// online-softmax update, the (o, lse) merge of partial results, fp32 dot/AXPY helpers and the
// split planner. The CPU's register-row helpers are at the end.
//
// One "query" is one token's Hq heads attending to the first kv_len tokens of one sequence's
// pages. Decode has one query per sequence; prefill has one query per new prompt token, each
// with its own causal kv_len, sharing its sequence's block-table row (query_seq).
#pragma once

#include <cstring>

#include "siri/common.h"

namespace siri {

enum class AttnDType : int { kFloat32 = 0, kBFloat16 = 1, kFloat16 = 2 };

struct PagedAttentionParams {
  const void* q;               // [num_queries, Hq, D]
  const void* k_cache;         // [num_pages, page_size, Hkv, D]
  const void* v_cache;         // [num_pages, page_size, Hkv, D]
  const int32_t* block_table;  // [num_seqs, max_pages]
  const int32_t* kv_lens;      // [num_queries]: tokens of the sequence this query attends to
  const int32_t* query_seq;    // [num_queries]: block-table row of each query; nullptr = identity
  void* out;                   // [num_queries, Hq, D], dtype of q
  float* partial_o;            // [num_queries, max_splits, Hq, D] (unused when max_splits == 1)
  float* partial_lse;          // [num_queries, max_splits, Hq]
  int64_t num_queries;
  int64_t num_q_heads;
  int64_t num_kv_heads;
  int64_t head_dim;
  int64_t page_size;
  int64_t max_pages;
  int64_t chunk_tokens;  // a query whose kv_len exceeds this is split into chunks of this size
  int64_t max_splits;    // ceil(max kv_len / chunk_tokens): the partial buffers' second dimension
  // [1]: the chunk length read at run time instead of chunk_tokens (run_chunk_tokens), so a
  // CUDA graph captured once follows the value the engine writes before each replay; nullptr:
  // chunk_tokens. Either way a query takes at most max_splits splits (query_split).
  const int32_t* chunk_tokens_at;
  float scale;
  AttnDType dtype;
  // Kernel choices, made once per call by the binding from the op's arguments, so a captured
  // CUDA graph keeps them and a test or benchmark can force either path:
  bool query_tiled;   // runs of prefill queries (query_seq rows, kv_len rising by one) go to the
                      // query-tiled kernel; false: every query on its own (the per-query path)
  bool cpu_bf16_dot;  // CPU, bf16 caches: bf16 dot products where the build has them
                      // (cpu/bf16_dot.h); false: rows widened to fp32. The CUDA kernels ignore it.
};

struct AppendKVParams {
  const void* k;                // [num_tokens, Hkv, D]
  const void* v;                // [num_tokens, Hkv, D]
  void* k_cache;                // [num_pages, page_size, Hkv, D]
  void* v_cache;                // [num_pages, page_size, Hkv, D]
  const int64_t* slot_mapping;  // [num_tokens]: page * page_size + offset, or -1 to skip
  int64_t num_tokens;
  int64_t row_bytes;  // Hkv * D * element size: one token's K (or V) for every head
};

SIRI_HOST_DEVICE int64_t num_splits(int64_t kv_len, int64_t chunk_tokens) {
  return (kv_len + chunk_tokens - 1) / chunk_tokens;
}

// Split chunks are multiples of this many tokens (the planner's granularity).
inline constexpr int64_t kChunkAlign = 16;

SIRI_HOST_DEVICE int64_t round_up_chunk(int64_t x) { return (x + kChunkAlign - 1) / kChunkAlign * kChunkAlign; }

// A chunk length given at run time (the chunk_tokens tensor of paged_attention_run), which a
// CUDA kernel cannot reject: rounded up to a multiple of 16, and at least 16 (so a value <= 0
// reads as 16). A multiple of 16 that is >= 16 is used as it is.
SIRI_HOST_DEVICE int64_t sanitize_chunk(int64_t chunk) {
  return chunk < kChunkAlign ? kChunkAlign : round_up_chunk(chunk);
}

// The keys a query may read: kv_len within [0, capacity] (capacity = max_pages * page_size,
// what its block-table row holds), for kernels that cannot check kv_lens.
SIRI_HOST_DEVICE int64_t clamp_kv_len(int64_t kv_len, int64_t capacity) {
  return kv_len < 0 ? 0 : kv_len > capacity ? capacity : kv_len;
}

// How one query is split, as the kernels (decode, merge) and the planner agree on it.
struct QuerySplit {
  int64_t kv_len;  // keys the query reads: its kv_len within [0, capacity]
  int64_t chunk;   // tokens per split
  int64_t splits;  // in [1, max_splits]
};

// The split of a query of kv_len tokens into chunks of `chunk`, made safe for values the
// kernel cannot check: kv_len is clamped to [0, capacity] (capacity = max_pages * page_size,
// what the query's block-table row holds: no key past it is read), and when ceil(kv_len /
// chunk) passes max_splits (a kv_len above the max_kv_len the buffers were planned for, or a
// run-time chunk too short for this query) the chunk grows to ceil(kv_len / max_splits),
// rounded up to a multiple of 16, so the query uses at most max_splits splits (max_splits == 1:
// one split, which writes the output directly and never touches the partial buffers). A query
// with kv_len <= 0 gets one empty split (its output is 0/0 = NaN; no key is read).
SIRI_HOST_DEVICE QuerySplit query_split(int64_t kv_len, int64_t capacity, int64_t chunk, int64_t max_splits) {
  kv_len = clamp_kv_len(kv_len, capacity);
  max_splits = max_splits > 1 ? max_splits : 1;
  chunk = chunk > 1 ? chunk : 1;
  if (num_splits(kv_len, chunk) > max_splits) chunk = round_up_chunk((kv_len + max_splits - 1) / max_splits);
  const int64_t splits = num_splits(kv_len, chunk);
  return {kv_len, chunk, splits > 1 ? splits : 1};
}

// The chunk length a call runs with: the run-time value when the params carry one (sanitised),
// else the planned chunk_tokens.
SIRI_HOST_DEVICE int64_t run_chunk_tokens(const PagedAttentionParams& p) {
  return p.chunk_tokens_at ? sanitize_chunk(*p.chunk_tokens_at) : p.chunk_tokens;
}

// query_split of query `query` of a call, from its kv_lens, block-table capacity, run chunk and
// max_splits: what every CUDA kernel of the call computes for it.
SIRI_HOST_DEVICE QuerySplit query_split(const PagedAttentionParams& p, int64_t query) {
  return query_split(p.kv_lens[query], p.max_pages * p.page_size, run_chunk_tokens(p), p.max_splits);
}

// Query heads one CUDA decode block serves for a GQA group of `group_size` heads: the smallest
// of 1, 2, 4, 8 that holds the group (larger groups take several blocks of 8). The kernel keeps
// q and the accumulator of every head of its block in registers, so a small group must not
// pay for 8. The planner counts blocks with it too.
SIRI_HOST_DEVICE constexpr int decode_heads_per_block(int64_t group_size) {
  return group_size <= 1 ? 1 : group_size <= 2 ? 2 : group_size <= 4 ? 4 : 8;
}

// What the split planner may do on one kind of device.
struct SplitLimits {
  int64_t parallel_units;     // workers to keep busy (2 blocks per SM; 4 work items per CPU thread)
  int64_t min_chunk;          // shortest chunk worth a split (each costs a partial write and a merge)
  int64_t max_chunk;          // longest chunk: bounds one block's serial work
  int64_t max_partial_bytes;  // bound of the (o, lse) partial buffers, num_queries * max_splits rows
};

// The bound of one attention call's (o, lse) split partials, on either device. Python reads it
// as siri._C.ATTENTION_PARTIAL_BYTES for the CUDA-graph memory estimate.
inline constexpr int64_t kAttentionPartialBytes = int64_t{32} << 20;

// The CUDA kernels' limits on a GPU with `sms` SMs: two blocks per SM to fill; chunks of
// 256-2048 tokens (a longer one would make the whole batch wait for its block); partial
// buffers of at most 32 MiB, which the engine's CUDA-graph memory estimate counts.
// `prefill` (the queries carry block-table rows, one per prompt token): no upper chunk bound.
// The tiled prefill kernel serves only unsplit calls and gets its parallelism from query
// tiles, so a prefill is split only when it has too few queries to fill the GPU (a short tail
// after a long prefix), not merely because its context passes 2048 tokens.
inline SplitLimits cuda_split_limits(int64_t sms, bool prefill = false) {
  return {2 * sms, 256, prefill ? int64_t{1} << 40 : 2048, kAttentionPartialBytes};
}

// The CPU kernel's limits with `threads` threads: four work items per thread; chunks of at
// least 512 tokens and no upper bound (items are handed out dynamically, longest first).
inline SplitLimits cpu_split_limits(int64_t threads) {
  return {4 * threads, 512, int64_t{1} << 40, kAttentionPartialBytes};
}

struct SplitPlan {
  int64_t chunk_tokens;  // a query is split into chunks of this many tokens
  int64_t max_splits;    // chunks of the longest query (the partial buffers' second dimension)
};

// Plans the split length by total work, like flashinfer's plan step: a chunk is about one
// parallel unit's share of all the batch's tokens (total * items_per_query / parallel_units),
// within [min_chunk, max_chunk] and a multiple of 16, so one long sequence among short ones
// is split into about-average pieces instead of running serially in one block, while a batch
// that already fills the device with even lengths is not split. The partial buffers hold
// num_queries * max_splits rows of `bytes_per_partial`; when that passes max_partial_bytes
// the chunks grow until it fits.
// From host facts only (total and longest kv_len, upper bounds are fine), which a caller that
// built the batch knows without reading device memory.
// The most splits per query whose partials fit the bound: num_queries rows of
// bytes_per_partial each per split, within max_partial_bytes (at least 1).
inline int64_t fitting_splits(int64_t num_queries, int64_t bytes_per_partial, const SplitLimits& limits) {
  const int64_t rows = num_queries > 1 ? num_queries : 1;
  const int64_t fit = limits.max_partial_bytes / (rows * (bytes_per_partial > 1 ? bytes_per_partial : 1));
  return fit > 1 ? fit : 1;
}

inline SplitPlan plan_splits(int64_t total, int64_t longest, int64_t num_queries, int64_t items_per_query,
                             int64_t bytes_per_partial, const SplitLimits& limits) {
  longest = longest > 1 ? longest : 1;
  total = total > longest ? total : longest;
  int64_t chunk = (total * items_per_query + limits.parallel_units - 1) / limits.parallel_units;
  chunk = chunk < limits.min_chunk ? limits.min_chunk : chunk;
  chunk = round_up_chunk(chunk > limits.max_chunk ? limits.max_chunk : chunk);
  if (chunk >= longest) return {longest, 1};
  const int64_t fit = fitting_splits(num_queries, bytes_per_partial, limits);
  if (num_splits(longest, chunk) > fit) {  // fewer, longer chunks
    if (fit <= 1) return {longest, 1};
    chunk = round_up_chunk((longest + fit - 1) / fit);
    if (chunk >= longest) return {longest, 1};
  }
  return {chunk, num_splits(longest, chunk)};
}

// The max_splits of a call whose chunk comes at run time (a CUDA graph replayed for whatever
// batch it holds): any query may be as long as `capacity`, and the chunk as short as the
// device's min_chunk, so ceil(capacity / min_chunk) splits, within the partial bound that
// plan_splits fits its plans to (the same `fit`). Every plan_splits plan for num_queries queries
// no longer than capacity on the same device has max_splits <= this (its chunk is >= min_chunk,
// and its splits are <= fit), so a replay given that plan's chunk splits every query as it would.
inline int64_t graph_max_splits(int64_t capacity, int64_t num_queries, int64_t bytes_per_partial,
                                const SplitLimits& limits) {
  capacity = capacity > 1 ? capacity : 1;
  const int64_t by_length = num_splits(capacity, round_up_chunk(limits.min_chunk > 1 ? limits.min_chunk : 1));
  const int64_t fit = fitting_splits(num_queries, bytes_per_partial, limits);
  return by_length < fit ? by_length : fit;
}

// Bytes of one query's (o, lse) partial row: Hq outputs of D floats and Hq lse values.
inline int64_t attention_partial_bytes(int64_t num_q_heads, int64_t head_dim) {
  return num_q_heads * (head_dim + 1) * static_cast<int64_t>(sizeof(float));
}

// The plan of one attention call: Hq query heads over Hkv KV heads of head_dim D. A work item
// is a whole query on the CPU (item_spans_kv_heads), one (KV head, head block) on CUDA; a
// partial row holds Hq outputs of D floats and Hq lse values.
inline SplitPlan plan_attention_splits(int64_t total, int64_t longest, int64_t num_queries, int64_t num_q_heads,
                                       int64_t num_kv_heads, int64_t head_dim, bool item_spans_kv_heads,
                                       const SplitLimits& limits) {
  const int64_t group = num_q_heads / num_kv_heads, per_block = decode_heads_per_block(group);
  const int64_t items_per_query = item_spans_kv_heads ? 1 : num_kv_heads * ((group + per_block - 1) / per_block);
  return plan_splits(total, longest, num_queries, items_per_query, attention_partial_bytes(num_q_heads, head_dim),
                     limits);
}

// graph_max_splits of one attention call (Hq query heads of head_dim D per partial row).
inline int64_t graph_attention_max_splits(int64_t capacity, int64_t num_queries, int64_t num_q_heads,
                                          int64_t head_dim, const SplitLimits& limits) {
  return graph_max_splits(capacity, num_queries, attention_partial_bytes(num_q_heads, head_dim), limits);
}

// Running state of a softmax over a stream of scores: max m and sum l of exp(score - m).
// The attention output is acc / l, where acc = sum exp(score - m) * v.
// F is float, or on the CPU a vector of floats holding one head's state per lane.
template <typename F>
struct AttnSoftmaxStateOf {
  F m;
  F l;
};
using AttnSoftmaxState = AttnSoftmaxStateOf<float>;

SIRI_HOST_DEVICE AttnSoftmaxState softmax_init() { return AttnSoftmaxState{-INFINITY, 0.0f}; }

SIRI_HOST_DEVICE float softmax_max(float a, float b) { return fmaxf(a, b); }
SIRI_HOST_DEVICE float softmax_exp(float x) { return expf(x); }

#if !defined(__CUDACC__)
// exp(x) for x <= 0, lane-wise on any fp32 vector type (f32x16, f32x8), to about 2e-7
// relative error: 2^(x log2 e) split into 2^n * 2^f with |f| <= 1/2 and 2^f from its degree-7
// Taylor polynomial. std::exp does not vectorise without -ffast-math. Inputs below -87
// (including -inf) give about 1.6e-38, not 0.
template <typename F>
inline F exp_nonpositive(F x) {
  using I = decltype(x < x);  // the int vector type of the same width
  const F lo = F{} - 87.0f;
  const F t = (x < lo ? lo : x) * 1.44269504088896341f;
  const F n = (t + 12582912.0f) - 12582912.0f;  // round to nearest (|t| < 2^22)
  const F f = (t - n) * 0.693147180559945309f;
  F p = f * (1.0f / 5040) + 1.0f / 720;
  p = p * f + 1.0f / 120;
  p = p * f + 1.0f / 24;
  p = p * f + 1.0f / 6;
  p = p * f + 0.5f;
  p = p * f + 1.0f;
  p = p * f + 1.0f;
  const I bits = (__builtin_convertvector(n, I) + 127) << 23;
  F two_n;
  memcpy(&two_n, &bits, sizeof(two_n));
  return p * two_n;
}

// Lane-wise versions for the CPU's vectors of per-head states.
template <typename F>
inline F softmax_max(F a, F b) {
  return a > b ? a : b;
}
template <typename F>
inline F softmax_exp(F x) {
  return exp_nonpositive(x);
}
#endif

// Raises the running max to cover `block_max` (finite scores). Returns the factor by which
// the caller must multiply its accumulator (and which l has already been multiplied by):
// exp(-inf) = 0 for the first block (about 1e-38 lane-wise on the CPU; l and the accumulator
// are still 0 then).
template <typename F>
SIRI_HOST_DEVICE F softmax_rescale(AttnSoftmaxStateOf<F>& s, F block_max) {
  const F m_new = softmax_max(s.m, block_max);
  const F alpha = softmax_exp(s.m - m_new);
  s.l *= alpha;
  s.m = m_new;
  return alpha;
}

// Merging partial results of disjoint key ranges: with lse_i = m_i + log(l_i) and normalised
// o_i, out = sum_i w_i o_i with w_i = exp(lse_i - lse_total). The merge is itself an online
// softmax whose "scores" are the lse_i: softmax_rescale(state, lse_i) rescales the
// accumulator, then the weight of o_i is exp(lse_i - state.m), added to state.l.
SIRI_HOST_DEVICE float softmax_weight(AttnSoftmaxState& s, float score) {
  const float w = expf(score - s.m);
  s.l += w;
  return w;
}

SIRI_HOST_DEVICE float softmax_lse(const AttnSoftmaxState& s) { return s.m + logf(s.l); }

// Combines two unnormalised states (a absorbs b): returns the factors for a's and b's
// accumulators.
SIRI_HOST_DEVICE void softmax_combine(AttnSoftmaxState& a, const AttnSoftmaxState& b, float& alpha_a,
                                      float& alpha_b) {
  const float m = fmaxf(a.m, b.m);
  alpha_a = a.m == -INFINITY ? 0.0f : expf(a.m - m);
  alpha_b = b.m == -INFINITY ? 0.0f : expf(b.m - m);
  a.l = a.l * alpha_a + b.l * alpha_b;
  a.m = m;
}

// bf16 <-> fp32 on raw bits (the CPU kernel's bf16 element type; CUDA uses __nv_bfloat16).
struct BFloat16Bits {
  uint16_t bits;
};

SIRI_HOST_DEVICE float to_float(float x) { return x; }

SIRI_HOST_DEVICE float to_float(BFloat16Bits x) {
  const uint32_t u = static_cast<uint32_t>(x.bits) << 16;
  float f;
  memcpy(&f, &u, sizeof(f));
  return f;
}

SIRI_HOST_DEVICE void from_float(float x, float& dst) { dst = x; }

SIRI_HOST_DEVICE void from_float(float x, BFloat16Bits& dst) {
  uint32_t u;
  memcpy(&u, &x, sizeof(u));
  if ((u & 0x7fffffffu) > 0x7f800000u) {  // nan: keep it a quiet nan
    dst.bits = static_cast<uint16_t>((u >> 16) | 0x40u);
    return;
  }
  u += 0x7fffu + ((u >> 16) & 1u);  // round to nearest even
  dst.bits = static_cast<uint16_t>(u >> 16);
}

#if !defined(__CUDACC__)
// CPU only. Kernels work on rows of D fp32 values, D a multiple of 16, as arrays of 16-lane
// vectors (GCC/Clang vector extensions: AVX-512 registers with -march=native, pairs of AVX2
// registers otherwise). Explicit vectors, because the auto-vectoriser turned the tile loops
// into gathers.
typedef float f32x16 __attribute__((vector_size(64)));
typedef float f32x8 __attribute__((vector_size(32)));  // one value per query head of a block of 8
typedef int32_t i32x16 __attribute__((vector_size(64)));

inline f32x16 load16(const float* p) {
  f32x16 v;
  memcpy(&v, p, sizeof(v));
  return v;
}

// 16 bf16 values widened to fp32 in registers (bf16 is the top half of an fp32).
inline f32x16 load16(const BFloat16Bits* p) {
  typedef uint16_t u16x16 __attribute__((vector_size(32)));
  u16x16 h;
  memcpy(&h, p, sizeof(h));
  const i32x16 bits = __builtin_convertvector(h, i32x16) << 16;
  f32x16 v;
  memcpy(&v, &bits, sizeof(v));
  return v;
}

inline void store16(float* p, f32x16 v) { memcpy(p, &v, sizeof(v)); }

// dst[0, n) = src[0, n) as fp32, n a multiple of 16: a copy, or bf16 widened.
inline void widen_row(const float* src, float* dst, int64_t n) { memcpy(dst, src, n * sizeof(float)); }

inline void widen_row(const BFloat16Bits* src, float* dst, int64_t n) {
  for (int64_t i = 0; i < n; i += 16) store16(dst + i, load16(src + i));
}

inline float hsum(f32x16 v) {
  f32x16 s = v + __builtin_shuffle(v, i32x16{8, 9, 10, 11, 12, 13, 14, 15, 0, 1, 2, 3, 4, 5, 6, 7});
  s += __builtin_shuffle(s, i32x16{4, 5, 6, 7, 0, 1, 2, 3, 4, 5, 6, 7, 0, 1, 2, 3});
  s += __builtin_shuffle(s, i32x16{2, 3, 0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3, 0, 1});
  return s[0] + s[1];
}

// A row of D fp32 values held in registers.
template <int D>
struct Row {
  static_assert(D % 16 == 0, "head_dim must be a multiple of 16");
  f32x16 v[D / 16];
  template <typename T>  // float or BFloat16Bits
  void load(const T* p) {
    for (int c = 0; c < D / 16; ++c) v[c] = load16(p + 16 * c);
  }
  void store(float* p) const {
    for (int c = 0; c < D / 16; ++c) store16(p + 16 * c, v[c]);
  }
  void scale(float a) {
    for (int c = 0; c < D / 16; ++c) v[c] *= a;
  }
};

// dst[i] = src[i] * factor for i < n, rounded to T (float or BFloat16Bits).
template <typename T>
inline void store_row(const float* src, float factor, T* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) from_float(src[i] * factor, dst[i]);
}

// out[i * out_stride] = rows[i] . x for N rows in registers; x is loaded once for all N, which
// halves the loads per FMA for N = 2.
template <int D, int N>
inline void dot_n(const Row<D> (&rows)[N], const float* x, float* out, int64_t out_stride) {
  f32x16 s[N] = {};
  for (int c = 0; c < D / 16; ++c) {
    const f32x16 xc = load16(x + 16 * c);
    for (int i = 0; i < N; ++i) s[i] += rows[i].v[c] * xc;
  }
  for (int i = 0; i < N; ++i) out[i * out_stride] = hsum(s[i]);
}

// ys[i] += w[i] * x for N rows in registers (AXPY), x loaded once for all N.
template <int D, int N>
inline void axpy_n(Row<D> (&ys)[N], const float (&w)[N], const float* x) {
  for (int c = 0; c < D / 16; ++c) {
    const f32x16 xc = load16(x + 16 * c);
    for (int i = 0; i < N; ++i) ys[i].v[c] += w[i] * xc;
  }
}

#endif

}  // namespace siri
