// CPU paged attention. One work item is (query, split): it streams the split's K and V rows
// once, tile by tile, for every KV head and its whole GQA group, so it reads whole pages
// (contiguous memory). Scores are computed with a group's query heads in the lanes of a
// vector (kHeadLanes at a time): each K element is broadcast against a vector of q values, so
// a tile's scores come out as one vector per token with no horizontal sums, and the online
// softmax runs for all heads at once. The AXPYs then add each probability-weighted V row to
// per-head fp32 accumulators, two heads per V load, and prefetch the next tile as they go.
// Items are sorted by cost and handed out dynamically, so mixed lengths keep both cores busy;
// split queries are merged from their (o, lse) partials afterwards. Runs of prefill queries
// (one sequence, kv_len rising by one) go to the query-tiled kernel, cpu/paged_prefill.cpp.
#include "cpu/paged_attention.h"

#include "cpu/bf16_dot.h"
#include "cpu/paged_prefill.h"
#include "siri/head_dims.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <type_traits>
#include <vector>

namespace siri::cpu {
namespace {

using HeadVec = f32x8;  // one fp32 value per query head
constexpr int kHeadLanes = 8;
constexpr int kScoreRows = 16;  // tokens whose score vectors stay in registers together
constexpr int64_t kTile = 32;   // tokens per online-softmax update (a multiple of kScoreRows)
constexpr int kMaxHeadDim = kMaxSupportedHeadDim;

alignas(64) const float kZeroRow[kMaxHeadDim] = {};
alignas(64) const BFloat16Bits kZeroRowBf16[kMaxHeadDim] = {};

// The next tile's K and V bytes, fetched into L2 a few lines at a time from inside the score
// and AXPY loops. Pages are scattered, so the hardware prefetcher cannot run ahead; and a
// burst of prefetches fills the miss queue and stalls the core until the data arrives,
// where spreading them evenly over the tile's arithmetic keeps memory and core both busy.
class PrefetchStream {
 public:
  PrefetchStream(const void* k_cache, const void* v_cache)
      : v_minus_k_(static_cast<const char*>(v_cache) - static_cast<const char*>(k_cache)) {}

  void reset() { num_ranges_ = next_ = 0, cursor_ = end_ = nullptr; }
  // K bytes [begin, end) (V at the same offset from v_cache); at most kTile ranges per tile.
  void add(const char* begin, const char* end) { ranges_[num_ranges_++] = {begin, end}; }
  int64_t steps_per_row = 0;            // lines of K (and of V) to fetch per AXPY step
  int64_t steps_per_score_chunk = 0;    // ... and per chunk of a score computation

  void drain() {
    while (cursor_ < end_ || next_ < num_ranges_) step();
  }

  // Fetches the next line of K and of V, if any are left.
  void step() {
    if (cursor_ >= end_) {
      if (next_ == num_ranges_) return;
      cursor_ = ranges_[next_].begin, end_ = ranges_[next_].end, ++next_;
    }
    __builtin_prefetch(cursor_, 0, 2);
    __builtin_prefetch(cursor_ + v_minus_k_, 0, 2);
    cursor_ += 64;
  }

  // The fetches due per AXPY step, and per score chunk.
  void advance() {
    for (int64_t k = 0; k < steps_per_row; ++k) step();
  }
  void advance_scoring() {
    for (int64_t k = 0; k < steps_per_score_chunk; ++k) step();
  }

 private:
  struct Range {
    const char* begin;
    const char* end;
  };
  Range ranges_[kTile];
  int64_t num_ranges_ = 0, next_ = 0;
  const char* cursor_ = nullptr;
  const char* end_ = nullptr;
  std::ptrdiff_t v_minus_k_;
};

struct WorkItem {
  int64_t query, split, begin, end;
};

// A row of n elements (n % 16 == 0) as fp32: fp32 rows are used in place, bf16 rows are
// widened into buf.
inline const float* row_as_float(const float* src, float*, int64_t) { return src; }

inline const float* row_as_float(const BFloat16Bits* src, float* buf, int64_t n) {
  widen_row(src, buf, n);
  return buf;
}

// s[j][h] = sum_d qt[d][h] * k_rows[j][d] for kScoreRows rows. qt is [D, kHeadLanes]: the
// block's query heads transposed, pre-scaled. Each K element is a broadcast memory operand of
// one FMA; eight qt vectors and the kScoreRows accumulators stay in registers.
template <int D>
void score_rows(const float* qt, const float* const* k_rows, HeadVec* s, PrefetchStream& prefetch) {
  HeadVec acc[kScoreRows] = {};
  for (int d0 = 0; d0 < D; d0 += 8) {
    prefetch.advance_scoring();
    HeadVec qd[8];
#pragma GCC unroll 8
    for (int i = 0; i < 8; ++i) memcpy(&qd[i], qt + (d0 + i) * kHeadLanes, sizeof(HeadVec));
#pragma GCC unroll 16
    for (int j = 0; j < kScoreRows; ++j) {
      const float* k = k_rows[j] + d0;
#pragma GCC unroll 8
      for (int i = 0; i < 8; ++i) acc[j] += qd[i] * k[i];
    }
  }
  for (int j = 0; j < kScoreRows; ++j) s[j] = acc[j];
}

// acc[h] += sum_j p[j][h] * V[j] for N heads starting at lane `lane` of p, with the N
// accumulator rows in registers and each V chunk loaded once for all N.
template <int D, int N>
void accumulate_heads(float* acc, const HeadVec* p, int lane, HeadVec alpha,
                      const float* const* v_rows, int64_t n, PrefetchStream& prefetch) {
  Row<D> a[N];
  for (int i = 0; i < N; ++i) {
    a[i].load(acc + i * D);
    a[i].scale(alpha[lane + i]);
  }
  for (int64_t j = 0; j < n; ++j) {
    float w[N];
    for (int i = 0; i < N; ++i) w[i] = p[j][lane + i];
    prefetch.advance();
    axpy_n<D, N>(a, w, v_rows[j]);
  }
  for (int i = 0; i < N; ++i) a[i].store(acc + i * D);
}

// Online-softmax update of state (m, l per lane) with a tile's scores s[0, n); turns s into
// the probabilities (0 past n) and returns the accumulators' rescale factor. kRoundBf16: the
// probabilities are rounded to bf16 (as the bf16 dot products will use them) before l sums
// them, so numerator and denominator agree.
template <bool kRoundBf16>
inline HeadVec tile_softmax(HeadVec* s, int64_t n, AttnSoftmaxStateOf<HeadVec>& state) {
  HeadVec tile_max = s[0];
  for (int64_t j = 1; j < n; ++j) tile_max = softmax_max(tile_max, s[j]);
  const HeadVec alpha = softmax_rescale(state, tile_max);
  // exp on two tokens' vectors at a time (16 lanes); s[n] (odd n) is computed and discarded.
  f32x16 m2;
  memcpy(&m2, &state.m, sizeof(HeadVec));
  memcpy(reinterpret_cast<char*>(&m2) + sizeof(HeadVec), &state.m, sizeof(HeadVec));
  for (int64_t j = 0; j < n; j += 2) {
    float* pair = reinterpret_cast<float*>(s + j);
    store16(pair, exp_nonpositive(load16(pair) - m2));
  }
  for (int64_t j = n; j < kTile; ++j) s[j] = HeadVec{};
  for (int64_t j = 0; j < n; ++j) {
#if SIRI_CPU_BF16_DOT
    if constexpr (kRoundBf16) {
      const auto bits = bf16_dot::round_bits(s[j]);
      memcpy(&s[j], &bits, sizeof(HeadVec));
    }
#endif
    state.l += s[j];
  }
  return alpha;
}

constexpr int heads_per_pass(int D) { return D <= 128 ? 2 : 1; }  // accumulator rows in registers

// The tile arithmetic in fp32 (fp32 caches, and bf16 ones widened to fp32). q: [D, 8] per
// block of 8 query heads, transposed and pre-scaled.
template <typename T, int D>
class FloatTile {
 public:
  static constexpr int64_t kAxpySteps = kTile;  // AXPY steps per tile and head pass
  static constexpr int64_t kScoreChunks = kTile / kScoreRows * (D / 8);  // score chunks per tile and block

  FloatTile(int64_t blocks) : q_(blocks * D * kHeadLanes, 0.0f), rows_(2 * kTile * D) {}

  void set_query(int64_t block, int64_t lane, const T* q, float scale) {
    for (int64_t d = 0; d < D; ++d) q_[(block * D + d) * kHeadLanes + lane] = to_float(q[d]) * scale;
  }

  // The tile's rows of one KV head; offsets[j] is token j's row, in elements.
  void load(const T* k_cache, const T* v_cache, const int64_t* offsets, int64_t n) {
    float* kt = rows_.data();
    float* vt = kt + kTile * D;
    for (int64_t j = 0; j < n; ++j) {
      k_rows_[j] = row_as_float(k_cache + offsets[j], kt + j * D, D);
      v_rows_[j] = row_as_float(v_cache + offsets[j], vt + j * D, D);
    }
    // Rows past the tile's end give finite scores that the softmax never reads.
    for (int64_t j = n; j < kTile; ++j) k_rows_[j] = kZeroRow;
    n_ = n;
  }

  // One block of `heads` query heads: scores, softmax update, accumulation into acc [heads, D].
  void attend(int64_t block, int64_t heads, AttnSoftmaxStateOf<HeadVec>& state, float* acc, PrefetchStream& prefetch) {
    HeadVec s[kTile];
    for (int64_t j0 = 0; j0 < n_; j0 += kScoreRows) score_rows<D>(q_.data() + block * D * kHeadLanes, k_rows_ + j0, s + j0, prefetch);
    const HeadVec alpha = tile_softmax<false>(s, n_, state);
    constexpr int kPair = heads_per_pass(D);
    int lane = 0;
    for (; lane + kPair <= heads; lane += kPair) {
      accumulate_heads<D, kPair>(acc + lane * D, s, lane, alpha, v_rows_, n_, prefetch);
    }
    for (; lane < heads; ++lane) accumulate_heads<D, 1>(acc + lane * D, s, lane, alpha, v_rows_, n_, prefetch);
  }

  // An accumulator row in head-dimension order.
  const float* output_row(const float* acc, float*) const { return acc; }

 private:
  std::vector<float> q_, rows_;
  const float* k_rows_[kTile];
  const float* v_rows_[kTile];
  int64_t n_ = 0;
};

#if SIRI_CPU_BF16_DOT
// The tile arithmetic for bf16 caches with bf16 dot products (see cpu/bf16_dot.h). q: [D / 2,
// 8] bf16 pairs per block of 8 heads, unscaled (scores are scaled in fp32). Accumulator rows
// are in bf16_dot::pair_lane_dim order until output_row.
template <int D>
class Bf16DotTile {
 public:
  static constexpr int64_t kAxpySteps = kTile / 2;  // one step per token pair
  static constexpr int64_t kScoreChunks = kTile / kScoreRows * (D / 16);

  Bf16DotTile(int64_t blocks, float scale)
      : q_(blocks * D / 2 * kHeadLanes, 0u), v_pairs_(kTile / 2 * (D / 16)), scale_(scale) {}

  void set_query(int64_t block, int64_t lane, const BFloat16Bits* q, float) {
    for (int64_t d = 0; d < D; d += 2) {
      q_[(block * D / 2 + d / 2) * kHeadLanes + lane] = q[d].bits | static_cast<uint32_t>(q[d + 1].bits) << 16;
    }
  }

  void load(const BFloat16Bits* k_cache, const BFloat16Bits* v_cache, const int64_t* offsets, int64_t n) {
    for (int64_t j = 0; j < n; ++j) k_rows_[j] = k_cache + offsets[j];
    for (int64_t j = n; j < kTile; ++j) k_rows_[j] = kZeroRowBf16;
    for (int64_t j = 0; j < n; j += 2) {
      const BFloat16Bits* second = j + 1 < n ? v_cache + offsets[j + 1] : kZeroRowBf16;
      bf16_dot::interleave_rows<D>(v_cache + offsets[j], second, v_pairs_.data() + j / 2 * (D / 16));
    }
    n_ = n;
  }

  void attend(int64_t block, int64_t heads, AttnSoftmaxStateOf<HeadVec>& state, float* acc, PrefetchStream& prefetch) {
    HeadVec s[kTile];
    for (int64_t j0 = 0; j0 < n_; j0 += kScoreRows) {
      bf16_dot::score_rows<D, kScoreRows>(q_.data() + block * D / 2 * kHeadLanes, k_rows_ + j0, s + j0, prefetch);
    }
    for (int64_t j = 0; j < n_; ++j) s[j] *= scale_;
    const HeadVec alpha = tile_softmax<true>(s, n_, state);
    bf16_dot::PairVec p_pairs[kTile / 2];
    for (int64_t jp = 0; jp < (n_ + 1) / 2; ++jp) {
      bf16_dot::PairVec even, odd;
      memcpy(&even, &s[2 * jp], sizeof(even));
      memcpy(&odd, &s[2 * jp + 1], sizeof(odd));
      p_pairs[jp] = (even >> 16) | odd;  // rounded: the low 16 bits are 0
    }
    constexpr int kPair = heads_per_pass(D);
    int lane = 0;
    const int64_t pairs = (n_ + 1) / 2;
    for (; lane + kPair <= heads; lane += kPair) {
      bf16_dot::accumulate_pairs<D, kPair>(acc + lane * D, p_pairs, lane, alpha, v_pairs_.data(), pairs, prefetch);
    }
    for (; lane < heads; ++lane) {
      bf16_dot::accumulate_pairs<D, 1>(acc + lane * D, p_pairs, lane, alpha, v_pairs_.data(), pairs, prefetch);
    }
  }

  const float* output_row(const float* acc, float* buf) const {
    for (int i = 0; i < D; ++i) buf[bf16_dot::pair_lane_dim(i)] = acc[i];
    return buf;
  }

 private:
  std::vector<uint32_t> q_;
  std::vector<__m512i> v_pairs_;  // [kTile / 2, D / 16] interleaved V row pairs
  const BFloat16Bits* k_rows_[kTile];
  float scale_;
  int64_t n_ = 0;
};
#endif

// Queues tokens [begin, end) of one sequence, every KV head, for prefetching: one
// contiguous byte range per page touched.
template <typename T>
void queue_tokens(const PagedAttentionParams& p, const int32_t* pages, int64_t begin, int64_t end,
                  PrefetchStream& prefetch) {
  const int64_t row_bytes = p.num_kv_heads * p.head_dim * static_cast<int64_t>(sizeof(T));
  const char* k_cache = static_cast<const char*>(p.k_cache);
  prefetch.reset();
  for (int64_t t = begin; t < end;) {
    const int64_t in_page = std::min(end - t, p.page_size - t % p.page_size);
    const int64_t slot = static_cast<int64_t>(pages[t / p.page_size]) * p.page_size + t % p.page_size;
    prefetch.add(k_cache + slot * row_bytes, k_cache + (slot + in_page) * row_bytes);
    t += in_page;
  }
}

// One work item: a query's tokens [w.begin, w.end) for every KV head. A tile's tokens are
// read for all heads before the next tile, so the item streams whole pages (contiguous
// memory) rather than one head's rows, a stride apart.
template <typename T, int D, typename Tile>
void attend_with(const PagedAttentionParams& p, const WorkItem& w, Tile& tile) {
  const int64_t Hkv = p.num_kv_heads, G = p.num_q_heads / Hkv;
  const int64_t blocks = (G + kHeadLanes - 1) / kHeadLanes;  // blocks of 8 query heads per KV head
  const int64_t seq = p.query_seq ? p.query_seq[w.query] : w.query;
  const int32_t* pages = p.block_table + seq * p.max_pages;
  const T* q = static_cast<const T*>(p.q) + w.query * p.num_q_heads * D;
  for (int64_t head = 0; head < p.num_q_heads; ++head) {
    tile.set_query((head / G) * blocks + (head % G) / kHeadLanes, (head % G) % kHeadLanes, q + head * D, p.scale);
  }
  std::vector<float> acc(p.num_q_heads * D, 0.0f);  // [Hq, D]
  std::vector<AttnSoftmaxStateOf<HeadVec>> state(Hkv * blocks, {HeadVec{} - INFINITY, HeadVec{}});

  // The next tile's lines are spread over the score chunks and AXPY steps of this one.
  int64_t passes = 0;  // AXPY passes per tile, all KV heads
  for (int64_t b = 0; b < blocks; ++b) {
    passes += Hkv * ((std::min<int64_t>(kHeadLanes, G - b * kHeadLanes) + heads_per_pass(D) - 1) / heads_per_pass(D));
  }
  const int64_t lines = kTile * Hkv * D * static_cast<int64_t>(sizeof(T)) / 64;
  PrefetchStream prefetch(p.k_cache, p.v_cache);
  // Scores and AXPYs do the same multiply-adds (G * D per token each), so each phase
  // issues half the fetches: memory stays busy throughout instead of idling while scores
  // are computed and then stalling the AXPYs with a burst.
  const int64_t score_lines = lines / 2, chunks = Hkv * blocks * Tile::kScoreChunks;
  prefetch.steps_per_score_chunk = (score_lines + chunks - 1) / chunks;
  prefetch.steps_per_row = (lines - score_lines + passes * Tile::kAxpySteps - 1) / (passes * Tile::kAxpySteps);
  queue_tokens<T>(p, pages, w.begin, std::min(w.begin + kTile, w.end), prefetch);
  prefetch.drain();  // nothing to overlap the first tile with
  int64_t slots[kTile], offsets[kTile];
  for (int64_t t0 = w.begin; t0 < w.end; t0 += kTile) {
    const int64_t n = std::min(kTile, w.end - t0);
    queue_tokens<T>(p, pages, t0 + kTile, std::min(t0 + 2 * kTile, w.end), prefetch);
    for (int64_t j = 0; j < n; ++j) {
      const int64_t t = t0 + j;
      slots[j] = static_cast<int64_t>(pages[t / p.page_size]) * p.page_size + t % p.page_size;
    }
    for (int64_t h = 0; h < Hkv; ++h) {
      for (int64_t j = 0; j < n; ++j) offsets[j] = (slots[j] * Hkv + h) * D;
      tile.load(static_cast<const T*>(p.k_cache), static_cast<const T*>(p.v_cache), offsets, n);
      for (int64_t b = 0; b < blocks; ++b) {
        tile.attend(h * blocks + b, std::min<int64_t>(kHeadLanes, G - b * kHeadLanes), state[h * blocks + b],
                    acc.data() + (h * G + b * kHeadLanes) * D, prefetch);
      }
    }
  }

  const int64_t splits = num_splits(p.kv_lens[w.query], p.chunk_tokens);
  float row[kMaxHeadDim];
  for (int64_t head = 0; head < p.num_q_heads; ++head) {
    const int64_t block = (head / G) * blocks + (head % G) / kHeadLanes, lane = (head % G) % kHeadLanes;
    const AttnSoftmaxState head_state{state[block].m[lane], state[block].l[lane]};
    const float* o = tile.output_row(acc.data() + head * D, row);
    if (splits == 1) {
      store_row(o, 1.0f / head_state.l, static_cast<T*>(p.out) + (w.query * p.num_q_heads + head) * D, D);
    } else {
      const int64_t part = (w.query * p.max_splits + w.split) * p.num_q_heads + head;
      store_row(o, 1.0f / head_state.l, p.partial_o + part * D, D);
      p.partial_lse[part] = softmax_lse(head_state);
    }
  }
}

// bf16 caches use bf16 dot products when the build targets a CPU that has them and the call
// asks for them (params.cpu_bf16_dot, the op's argument); otherwise the fp32 arithmetic.
template <typename T, int D>
void attend(const PagedAttentionParams& p, const WorkItem& w) {
  const int64_t blocks = (p.num_q_heads / p.num_kv_heads + kHeadLanes - 1) / kHeadLanes * p.num_kv_heads;
#if SIRI_CPU_BF16_DOT
  if constexpr (std::is_same_v<T, BFloat16Bits> && D % 32 == 0) {
    if (p.cpu_bf16_dot) {
      Bf16DotTile<D> tile(blocks, p.scale);
      return attend_with<T, D>(p, w, tile);
    }
  }
#endif
  FloatTile<T, D> tile(blocks);
  attend_with<T, D>(p, w, tile);
}

// The binding admits only the supported head sizes (siri/head_dims.h).
template <typename T>
void attend_any_dim(const PagedAttentionParams& p, const WorkItem& w) {
  visit_head_dim(p.head_dim, [&](auto d) { attend<T, decltype(d)::value>(p, w); });
}

// out[query, head] = sum over splits of w_i * o_i, with weights from the partial lse values.
template <typename T>
void merge_splits(const PagedAttentionParams& p, int64_t query, int64_t head, float* acc) {
  const int64_t D = p.head_dim, H = p.num_q_heads;
  const int64_t splits = num_splits(p.kv_lens[query], p.chunk_tokens);
  std::fill(acc, acc + D, 0.0f);
  AttnSoftmaxState state = softmax_init();
  for (int64_t i = 0; i < splits; ++i) {
    const int64_t part = (query * p.max_splits + i) * H + head;
    const float alpha = softmax_rescale(state, p.partial_lse[part]);
    const float weight = softmax_weight(state, p.partial_lse[part]);
    const float* o = p.partial_o + part * D;
    for (int64_t d = 0; d < D; ++d) acc[d] = acc[d] * alpha + weight * o[d];
  }
  store_row(acc, 1.0f / state.l, static_cast<T*>(p.out) + (query * H + head) * D, D);
}

template <typename T>
void run(const PagedAttentionParams& p) {
  // Runs of prefill queries are attended a tile of queries at a time (cpu/paged_prefill.h),
  // every other query on its own.
  const std::vector<QueryRun> runs = runs_to_tile(p);
  attend_query_runs(p, runs);
  std::vector<WorkItem> items;
  int64_t query = 0;
  const auto add_queries_before = [&](int64_t end) {
    for (; query < end; ++query) {
      const int64_t len = p.kv_lens[query];
      for (int64_t s = 0, begin = 0; begin < len; ++s, begin += p.chunk_tokens) {
        items.push_back({query, s, begin, std::min(len, begin + p.chunk_tokens)});
      }
    }
  };
  for (const QueryRun& run : runs) {
    add_queries_before(run.first);
    query = run.first + run.count;
  }
  add_queries_before(p.num_queries);
  // Longest first, then dynamic hand-out: near-optimal balance for mixed lengths.
  std::stable_sort(items.begin(), items.end(), [](const WorkItem& a, const WorkItem& b) {
    return a.end - a.begin > b.end - b.begin;
  });
  std::atomic<int64_t> next{0};
  const int64_t n_items = static_cast<int64_t>(items.size());
  at::parallel_for(0, std::min<int64_t>(at::get_num_threads(), n_items), 1, [&](int64_t, int64_t) {
    for (int64_t i = next.fetch_add(1); i < n_items; i = next.fetch_add(1)) attend_any_dim<T>(p, items[i]);
  });
  if (p.max_splits == 1) return;
  at::parallel_for(0, p.num_queries * p.num_q_heads, 16, [&](int64_t begin, int64_t end) {
    std::vector<float> acc(p.head_dim);
    for (int64_t i = begin; i < end; ++i) {
      const int64_t query = i / p.num_q_heads;
      if (num_splits(p.kv_lens[query], p.chunk_tokens) > 1) {
        merge_splits<T>(p, query, i % p.num_q_heads, acc.data());
      }
    }
  });
}

}  // namespace

void paged_attention(const PagedAttentionParams& params) {
  if (params.num_queries == 0) return;
  if (params.dtype == AttnDType::kBFloat16) {
    run<BFloat16Bits>(params);
  } else {
    run<float>(params);
  }
}

void append_kv(const AppendKVParams& p) {
  const auto* k = static_cast<const char*>(p.k);
  const auto* v = static_cast<const char*>(p.v);
  at::parallel_for(0, p.num_tokens, 64, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const int64_t slot = p.slot_mapping[t];
      if (slot < 0) continue;
      std::memcpy(static_cast<char*>(p.k_cache) + slot * p.row_bytes, k + t * p.row_bytes, p.row_bytes);
      std::memcpy(static_cast<char*>(p.v_cache) + slot * p.row_bytes, v + t * p.row_bytes, p.row_bytes);
    }
  });
}

}  // namespace siri::cpu
