// CPU query-tiled attention (see cpu/paged_prefill.h). One work item is (a tile of a run's
// queries, a KV head, a split): the tile's rows, one per (query, query head of the KV head's
// GQA group), attend to the split's keys together, so a K/V tile is read and widened to fp32
// once per query tile. Per key tile the arithmetic is two small matrix products, S = Q K^T and
// O = O * alpha + P V, with the rows in vector lanes (Q and O are held
// transposed, [D][rows]) and K / V elements broadcast, so the online softmax runs lane-wise
// on score vectors (the shared header's state and exp) with no horizontal sums. Only key
// tiles that reach past the tile's first query's kv_len (the diagonal) are masked. Items are
// sorted by cost and handed out dynamically, as in the per-query kernel.
#include "cpu/paged_prefill.h"

#include "siri/head_dims.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <climits>
#include <cstring>

namespace siri::cpu {
namespace {

// Rows sit in the lanes of Lanes vectors, the machine's register width: GCC keeps arrays of
// wider vectors (an f32x16 on AVX2) in memory. A micro-tile is kBroadcasts x kVecs accumulator
// vectors: kVecs row vectors times kBroadcasts keys (for S) or head dimensions (for P V).
#if defined(__AVX512F__)
using Lanes = f32x16;
constexpr int kVecs = 2;
constexpr int kBroadcasts = 8;  // 16 accumulators + 2 row vectors + 1 broadcast of 32 registers
#else
using Lanes = f32x8;
constexpr int kVecs = 2;
constexpr int kBroadcasts = 6;  // 12 + 2 + 1 of AVX2's 16 registers
#endif
using LaneInts = decltype(Lanes{} < Lanes{});
constexpr int64_t kLanes = sizeof(Lanes) / sizeof(float);
constexpr int64_t kRowBlock = kLanes * kVecs;  // rows per micro-tile
constexpr int64_t kTargetRows = 64;        // rows per query tile: tile queries = 64 / group
constexpr int64_t kKeyTile = 64;           // keys per online-softmax update

constexpr int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

template <typename V>
inline V load_vec(const void* p) {
  V v;
  memcpy(&v, p, sizeof(v));
  return v;
}

inline void store_vec(float* p, Lanes v) { memcpy(p, &v, sizeof(v)); }

struct TileItem {
  int64_t first, count;                // queries [first, first + count) of one run
  int64_t kv_head, split, begin, end;  // keys [begin, end): split `split` of the last query
};

// One micro-tile of a rank-`depth` product: for a < kBroadcasts and c < kVecs,
//   out[a * stride + kLanes c, + kLanes) = scale[c] * out[...] + sum over k < depth of
//                                          x[k * stride + kLanes c, + kLanes) * y[a * kYA + k * kYK]
// (out starts from 0 when scale is null). The kBroadcasts x kVecs accumulators stay in
// registers; each x vector is loaded once for all kBroadcasts broadcast y values.
template <int64_t kYA, int64_t kYK>
inline void update_micro_tile(float* out, const Lanes* scale, const float* x, int64_t stride, const float* y,
                              int64_t depth) {
  Lanes acc[kBroadcasts][kVecs];
  for (int a = 0; a < kBroadcasts; ++a) {
    for (int c = 0; c < kVecs; ++c) acc[a][c] = scale ? load_vec<Lanes>(out + a * stride + kLanes * c) * scale[c] : Lanes{};
  }
  for (int64_t k = 0; k < depth; ++k) {
    Lanes xv[kVecs];
#pragma GCC unroll 4
    for (int c = 0; c < kVecs; ++c) xv[c] = load_vec<Lanes>(x + k * stride + kLanes * c);
#pragma GCC unroll 8
    for (int a = 0; a < kBroadcasts; ++a) {
      const float b = y[a * kYA + k * kYK];
#pragma GCC unroll 4
      for (int c = 0; c < kVecs; ++c) acc[a][c] += xv[c] * b;
    }
  }
  for (int a = 0; a < kBroadcasts; ++a) {
    for (int c = 0; c < kVecs; ++c) store_vec(out + a * stride + kLanes * c, acc[a][c]);
  }
}

// One thread's buffers, sized for the largest tile (rows_capacity rows, padded).
template <int D>
struct TileBuffers {
  static constexpr int64_t kDimsPadded = round_up(D, kBroadcasts);  // P V works on kBroadcasts dims at a time

  explicit TileBuffers(int64_t rows_capacity)
      : q_t(D * rows_capacity),
        o_t(kDimsPadded * rows_capacity),
        scores((kKeyTile + kBroadcasts) * rows_capacity),
        keys((kKeyTile + kBroadcasts) * D),
        values(kKeyTile * kDimsPadded),
        limits(rows_capacity),
        states(rows_capacity / kLanes) {}

  std::vector<float> q_t;     // [D, rows]: the tile's queries, transposed and pre-scaled
  std::vector<float> o_t;     // [kDimsPadded, rows]: unnormalised outputs, transposed
  std::vector<float> scores;  // [keys, rows]: scores, then probabilities
  std::vector<float> keys;    // [keys, D]: the key tile in fp32, then rows whose scores go unread
  std::vector<float> values;  // [keys, kDimsPadded]: the value tile in fp32 (columns past D stay 0)
  std::vector<int32_t> limits;                  // [rows]: row r sees keys t < limits[r]
  std::vector<AttnSoftmaxStateOf<Lanes>> states;  // [rows / kLanes]: kLanes rows' (m, l) per vector
};

// Online-softmax update of kLanes rows' state with the scores of keys [t0, t0 + n)
// (s[j * stride], one vector per key), masked to keys t < limit per lane when kMasked. Turns
// the scores into probabilities (0 where masked) and returns the factor the rows' outputs
// must be scaled by.
template <bool kMasked>
inline Lanes tile_softmax(float* s, int64_t stride, int64_t n, int64_t t0, LaneInts limit,
                          AttnSoftmaxStateOf<Lanes>& state) {
  const Lanes neg_inf = Lanes{} - INFINITY;
  const auto visible = [&](int64_t j) { return LaneInts{} + static_cast<int32_t>(t0 + j) < limit; };
  Lanes tile_max = neg_inf;
  for (int64_t j = 0; j < n; ++j) {
    Lanes sj = load_vec<Lanes>(s + j * stride);
    if constexpr (kMasked) {
      sj = visible(j) ? sj : neg_inf;
      store_vec(s + j * stride, sj);
    }
    tile_max = softmax_max(tile_max, sj);
  }
  const Lanes alpha = softmax_rescale(state, tile_max);
  Lanes sum = {};
  for (int64_t j = 0; j < n; ++j) {
    Lanes pj = exp_nonpositive(load_vec<Lanes>(s + j * stride) - state.m);
    if constexpr (kMasked) pj = visible(j) ? pj : Lanes{};  // exp_nonpositive(-inf) is 1.6e-38
    store_vec(s + j * stride, pj);
    sum += pj;
  }
  state.l += sum;
  return alpha;
}

template <typename T, int D>
void attend_tile(const PagedAttentionParams& p, const TileItem& w, TileBuffers<D>& buf) {
  constexpr int64_t kDimsPadded = TileBuffers<D>::kDimsPadded;
  const int64_t Hq = p.num_q_heads, Hkv = p.num_kv_heads, G = Hq / Hkv;
  // Row r is query first + r / G with query head kv_head * G + r % G; rows past `rows` pad
  // the tile to whole micro-tiles (zero queries: finite scores, never stored).
  const int64_t rows = w.count * G, stride = round_up(rows, kRowBlock);
  float* q_t = buf.q_t.data();
  float* o_t = buf.o_t.data();
  float* scores = buf.scores.data();
  float* keys = buf.keys.data();
  float* values = buf.values.data();
  int32_t* limits = buf.limits.data();

  const T* q = static_cast<const T*>(p.q);
  for (int64_t r = 0; r < rows; ++r) {
    const T* src = q + ((w.first + r / G) * Hq + w.kv_head * G + r % G) * D;
    for (int64_t d = 0; d < D; ++d) q_t[d * stride + r] = to_float(src[d]) * p.scale;
    // A query with no key in this split (kv_len <= begin) still gets one: its row is not
    // stored, and a row without any key would turn its state into NaN.
    limits[r] = std::max<int32_t>(p.kv_lens[w.first + r / G], static_cast<int32_t>(w.begin + 1));
  }
  for (int64_t r = rows; r < stride; ++r) {
    for (int64_t d = 0; d < D; ++d) q_t[d * stride + r] = 0.0f;
    limits[r] = INT32_MAX;
  }
  std::fill(o_t, o_t + kDimsPadded * stride, 0.0f);
  for (int64_t v = 0; v < stride / kLanes; ++v) buf.states[v] = {Lanes{} - INFINITY, Lanes{}};
  // Every row sees keys below the first query's limit (kv_lens rise along the run).
  const int64_t unmasked_end = limits[0];

  const int64_t seq = p.query_seq ? p.query_seq[w.first] : w.first;
  const int32_t* pages = p.block_table + seq * p.max_pages;
  const T* k_cache = static_cast<const T*>(p.k_cache);
  const T* v_cache = static_cast<const T*>(p.v_cache);
  for (int64_t t0 = w.begin; t0 < w.end; t0 += kKeyTile) {
    const int64_t n = std::min(kKeyTile, w.end - t0);
    for (int64_t j = 0; j < n; ++j) {
      const int64_t t = t0 + j;
      const int64_t slot = static_cast<int64_t>(pages[t / p.page_size]) * p.page_size + t % p.page_size;
      const int64_t offset = (slot * Hkv + w.kv_head) * D;
      widen_row(k_cache + offset, keys + j * D, D);
      widen_row(v_cache + offset, values + j * kDimsPadded, D);
    }
    const bool masked = t0 + n > unmasked_end;
    for (int64_t r0 = 0; r0 < stride; r0 += kRowBlock) {
      float* s = scores + r0;  // s[j * stride + lane]: this micro-tile's rows
      // S = Q K^T, kBroadcasts keys at a time (keys past n: padding, never read).
      for (int64_t j0 = 0; j0 < n; j0 += kBroadcasts) {
        update_micro_tile<D, 1>(s + j0 * stride, nullptr, q_t + r0, stride, keys + j0 * D, D);
      }
      Lanes alpha[kVecs];
      for (int c = 0; c < kVecs; ++c) {
        const LaneInts limit = load_vec<LaneInts>(limits + r0 + kLanes * c);
        AttnSoftmaxStateOf<Lanes>& state = buf.states[r0 / kLanes + c];
        alpha[c] = masked ? tile_softmax<true>(s + kLanes * c, stride, n, t0, limit, state)
                          : tile_softmax<false>(s + kLanes * c, stride, n, t0, limit, state);
      }
      // O = O * alpha + P V, kBroadcasts head dims at a time.
      for (int64_t d0 = 0; d0 < kDimsPadded; d0 += kBroadcasts) {
        update_micro_tile<1, kDimsPadded>(o_t + d0 * stride + r0, alpha, s, stride, values + d0, n);
      }
    }
  }

  float o[D];
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t query = w.first + r / G, head = w.kv_head * G + r % G;
    const int64_t splits = num_splits(p.kv_lens[query], p.chunk_tokens);
    if (w.split >= splits) continue;  // the query ends before this split
    const AttnSoftmaxState state{buf.states[r / kLanes].m[r % kLanes], buf.states[r / kLanes].l[r % kLanes]};
    for (int64_t d = 0; d < D; ++d) o[d] = o_t[d * stride + r];
    if (splits == 1) {
      store_row(o, 1.0f / state.l, static_cast<T*>(p.out) + (query * Hq + head) * D, D);
    } else {
      const int64_t part = (query * p.max_splits + w.split) * Hq + head;
      store_row(o, 1.0f / state.l, p.partial_o + part * D, D);
      p.partial_lse[part] = softmax_lse(state);
    }
  }
}

template <typename T, int D>
void attend_items(const PagedAttentionParams& p, const std::vector<TileItem>& items, int64_t rows_capacity) {
  std::atomic<int64_t> next{0};
  const int64_t n_items = static_cast<int64_t>(items.size());
  at::parallel_for(0, std::min<int64_t>(at::get_num_threads(), n_items), 1, [&](int64_t, int64_t) {
    TileBuffers<D> buf(rows_capacity);
    for (int64_t i = next.fetch_add(1); i < n_items; i = next.fetch_add(1)) attend_tile<T, D>(p, items[i], buf);
  });
}

// The binding admits only the supported head sizes (siri/head_dims.h).
template <typename T>
void attend_items_any_dim(const PagedAttentionParams& p, const std::vector<TileItem>& items, int64_t rows_capacity) {
  visit_head_dim(p.head_dim, [&](auto d) { attend_items<T, decltype(d)::value>(p, items, rows_capacity); });
}

}  // namespace

std::vector<QueryRun> runs_to_tile(const PagedAttentionParams& p) {
  std::vector<QueryRun> runs;
  if (!p.query_seq || !p.query_tiled) return runs;
  for (int64_t i = 0; i < p.num_queries;) {
    int64_t end = i + 1;
    while (end < p.num_queries && p.query_seq[end] == p.query_seq[i] &&
           static_cast<int64_t>(p.kv_lens[end]) == static_cast<int64_t>(p.kv_lens[end - 1]) + 1) {
      ++end;
    }
    if (end - i >= 2) runs.push_back({i, end - i});
    i = end;
  }
  return runs;
}

void attend_query_runs(const PagedAttentionParams& p, const std::vector<QueryRun>& runs) {
  if (runs.empty()) return;
  const int64_t G = p.num_q_heads / p.num_kv_heads;
  const int64_t tile_queries = std::max<int64_t>(1, kTargetRows / G);
  std::vector<TileItem> items;
  for (const QueryRun& run : runs) {
    for (int64_t first = run.first; first < run.first + run.count; first += tile_queries) {
      const int64_t count = std::min(tile_queries, run.first + run.count - first);
      const int64_t kv_last = p.kv_lens[first + count - 1];  // the tile's longest
      for (int64_t s = 0, begin = 0; begin < kv_last; ++s, begin += p.chunk_tokens) {
        for (int64_t h = 0; h < p.num_kv_heads; ++h) {
          items.push_back({first, count, h, s, begin, std::min(kv_last, begin + p.chunk_tokens)});
        }
      }
    }
  }
  // Longest first, then dynamic hand-out (as the per-query kernel does).
  std::stable_sort(items.begin(), items.end(), [](const TileItem& a, const TileItem& b) {
    return (a.end - a.begin) * a.count > (b.end - b.begin) * b.count;
  });
  const int64_t rows_capacity = round_up(tile_queries * G, kRowBlock);
  if (p.dtype == AttnDType::kBFloat16) {
    attend_items_any_dim<BFloat16Bits>(p, items, rows_capacity);
  } else {
    attend_items_any_dim<float>(p, items, rows_capacity);
  }
}

}  // namespace siri::cpu
