// CPU paged attention. One work item is (query, split): it streams the split's K and V rows
// once, tile by tile, for every KV head and its whole GQA group, so it reads whole pages
// (contiguous memory). Scores are computed with a group's query heads in the lanes of a
// vector (kHeadLanes at a time): each K element is broadcast against a vector of q values, so
// a tile's scores come out as one vector per token with no horizontal sums, and the online
// softmax runs for all heads at once. The AXPYs then add each probability-weighted V row to
// per-head fp32 accumulators, two heads per V load, and prefetch the next tile as they go.
// Items are sorted by cost and handed out dynamically, so mixed lengths keep both cores busy;
// split queries are merged from their (o, lse) partials afterwards.
#include "cpu/paged_attention.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <vector>

namespace siri::cpu {
namespace {

typedef float HeadVec __attribute__((vector_size(32)));  // one fp32 value per query head
constexpr int kHeadLanes = 8;
constexpr int kScoreRows = 16;  // tokens whose score vectors stay in registers together
constexpr int64_t kTile = 32;   // tokens per online-softmax update (a multiple of kScoreRows)
constexpr int kMaxHeadDim = 256;

alignas(64) const float kZeroRow[kMaxHeadDim] = {};

// The next tile's K and V bytes, fetched into L2 a few lines at a time from inside the AXPY
// loop. Pages are scattered, so the hardware prefetcher cannot run ahead; and a burst of
// prefetches at the start of a tile fills the miss queue and stalls the core until the data
// arrives, where spreading them lets the fetches overlap the arithmetic.
class PrefetchStream {
 public:
  PrefetchStream(const void* k_cache, const void* v_cache)
      : v_minus_k_(static_cast<const char*>(v_cache) - static_cast<const char*>(k_cache)) {}

  void reset() { num_ranges_ = next_ = 0, cursor_ = end_ = nullptr; }
  // K bytes [begin, end) (V at the same offset from v_cache); at most kTile ranges per tile.
  void add(const char* begin, const char* end) { ranges_[num_ranges_++] = {begin, end}; }
  int64_t steps_per_row = 0;  // lines of K (and of V) to fetch per AXPY step

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
  for (int64_t i = 0; i < n; i += 16) store16(buf + i, load16(src + i));
  return buf;
}

template <typename T>
void store_row(const float* src, float factor, T* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) from_float(src[i] * factor, dst[i]);
}

// s[j][h] = sum_d qt[d][h] * k_rows[j][d] for kScoreRows rows. qt is [D, kHeadLanes]: the
// block's query heads transposed, pre-scaled. Each K element is a broadcast memory operand of
// one FMA; eight qt vectors and the kScoreRows accumulators stay in registers.
template <int D>
void score_rows(const float* qt, const float* const* k_rows, HeadVec* s) {
  HeadVec acc[kScoreRows] = {};
  for (int d0 = 0; d0 < D; d0 += 8) {
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
    for (int64_t k = 0; k < prefetch.steps_per_row; ++k) prefetch.step();
    axpy_n<D, N>(a, w, v_rows[j]);
  }
  for (int i = 0; i < N; ++i) a[i].store(acc + i * D);
}

// One tile for a block of `heads` (<= kHeadLanes) query heads: scores, online-softmax update
// of state (m, l per lane), then the rescaled accumulation of the tile's V rows into acc
// ([heads, D]).
template <int D>
void attend_tile(const float* qt, const float* const* k_rows, const float* const* v_rows, int64_t n,
                 int64_t heads, SoftmaxStateOf<HeadVec>& state, float* acc, PrefetchStream& prefetch) {
  HeadVec s[kTile] = {};
  for (int64_t j0 = 0; j0 < n; j0 += kScoreRows) score_rows<D>(qt, k_rows + j0, s + j0);
  HeadVec tile_max = s[0];
  for (int64_t j = 1; j < n; ++j) tile_max = softmax_max(tile_max, s[j]);
  const HeadVec alpha = softmax_rescale(state, tile_max);
  for (int64_t j = 0; j < n; ++j) {
    s[j] = exp_nonpositive(s[j] - state.m);
    state.l += s[j];
  }
  constexpr int kPair = D <= 128 ? 2 : 1;  // two rows of accumulators fit the registers
  int lane = 0;
  for (; lane + kPair <= heads; lane += kPair) {
    accumulate_heads<D, kPair>(acc + lane * D, s, lane, alpha, v_rows, n, prefetch);
  }
  for (; lane < heads; ++lane) accumulate_heads<D, 1>(acc + lane * D, s, lane, alpha, v_rows, n, prefetch);
}

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
template <typename T, int D>
void attend(const PagedAttentionParams& p, const WorkItem& w) {
  const int64_t Hkv = p.num_kv_heads, G = p.num_q_heads / Hkv;
  const int64_t blocks = (G + kHeadLanes - 1) / kHeadLanes;  // head blocks per KV head
  const int64_t seq = p.query_seq ? p.query_seq[w.query] : w.query;
  const int32_t* pages = p.block_table + seq * p.max_pages;
  const T* k_cache = static_cast<const T*>(p.k_cache);
  const T* v_cache = static_cast<const T*>(p.v_cache);

  // qt: [Hkv, blocks, D, kHeadLanes] q transposed and pre-scaled, zero in unused lanes;
  // acc: [Hq, D]; kt, vt: [kTile, D] one head's tile rows as fp32 (bf16 only).
  std::vector<float> buf(Hkv * blocks * D * kHeadLanes + p.num_q_heads * D + 2 * kTile * D, 0.0f);
  float* qt = buf.data();
  float* acc = qt + Hkv * blocks * D * kHeadLanes;
  float* kt = acc + p.num_q_heads * D;
  float* vt = kt + kTile * D;
  const T* q_src = static_cast<const T*>(p.q) + w.query * p.num_q_heads * D;
  for (int64_t head = 0; head < p.num_q_heads; ++head) {
    const int64_t block = (head / G) * blocks + (head % G) / kHeadLanes;
    for (int64_t d = 0; d < D; ++d) {
      qt[(block * D + d) * kHeadLanes + (head % G) % kHeadLanes] = to_float(q_src[head * D + d]) * p.scale;
    }
  }
  std::vector<SoftmaxStateOf<HeadVec>> state(Hkv * blocks, {HeadVec{} - INFINITY, HeadVec{}});

  const float* k_rows[kTile];
  const float* v_rows[kTile];
  int64_t slots[kTile];
  // AXPY steps per tile (head pairs x tokens x KV heads), over which the next tile's lines
  // are spread.
  constexpr int kPair = D <= 128 ? 2 : 1;
  const int64_t steps = Hkv * blocks * ((std::min<int64_t>(G, kHeadLanes) + kPair - 1) / kPair) * kTile;
  const int64_t lines = kTile * Hkv * D * static_cast<int64_t>(sizeof(T)) / 64;
  PrefetchStream prefetch(p.k_cache, p.v_cache);
  prefetch.steps_per_row = (lines + steps - 1) / steps;
  queue_tokens<T>(p, pages, w.begin, std::min(w.begin + kTile, w.end), prefetch);
  prefetch.drain();  // nothing to overlap the first tile with
  for (int64_t t0 = w.begin; t0 < w.end; t0 += kTile) {
    const int64_t n = std::min(kTile, w.end - t0);
    queue_tokens<T>(p, pages, t0 + kTile, std::min(t0 + 2 * kTile, w.end), prefetch);
    for (int64_t j = 0; j < n; ++j) {
      const int64_t t = t0 + j;
      slots[j] = static_cast<int64_t>(pages[t / p.page_size]) * p.page_size + t % p.page_size;
    }
    for (int64_t h = 0; h < Hkv; ++h) {
      for (int64_t j = 0; j < n; ++j) {
        const int64_t offset = (slots[j] * Hkv + h) * D;
        k_rows[j] = row_as_float(k_cache + offset, kt + j * D, D);
        v_rows[j] = row_as_float(v_cache + offset, vt + j * D, D);
      }
      // Rows past the tile's end give finite scores that the softmax never reads.
      for (int64_t j = n; j < (n + kScoreRows - 1) / kScoreRows * kScoreRows; ++j) k_rows[j] = kZeroRow;
      for (int64_t b = 0; b < blocks; ++b) {
        const int64_t block = h * blocks + b;
        attend_tile<D>(qt + block * D * kHeadLanes, k_rows, v_rows, n,
                       std::min<int64_t>(kHeadLanes, G - b * kHeadLanes), state[block],
                       acc + (h * G + b * kHeadLanes) * D, prefetch);
      }
    }
  }

  const int64_t splits = num_splits(p.kv_lens[w.query], p.chunk_tokens);
  for (int64_t head = 0; head < p.num_q_heads; ++head) {
    const int64_t block = (head / G) * blocks + (head % G) / kHeadLanes, lane = (head % G) % kHeadLanes;
    const SoftmaxState head_state{state[block].m[lane], state[block].l[lane]};
    if (splits == 1) {
      store_row(acc + head * D, 1.0f / head_state.l, static_cast<T*>(p.out) + (w.query * p.num_q_heads + head) * D, D);
    } else {
      const int64_t part = (w.query * p.max_splits + w.split) * p.num_q_heads + head;
      store_row(acc + head * D, 1.0f / head_state.l, p.partial_o + part * D, D);
      p.partial_lse[part] = softmax_lse(head_state);
    }
  }
}

template <typename T>
void attend_any_dim(const PagedAttentionParams& p, const WorkItem& w) {
  switch (p.head_dim) {
    case 64: return attend<T, 64>(p, w);
    case 80: return attend<T, 80>(p, w);
    case 96: return attend<T, 96>(p, w);
    case 128: return attend<T, 128>(p, w);
    default: return attend<T, 256>(p, w);  // the binding admits no other head_dim
  }
}

// out[query, head] = sum over splits of w_i * o_i, with weights from the partial lse values.
template <typename T>
void merge_splits(const PagedAttentionParams& p, int64_t query, int64_t head, float* acc) {
  const int64_t D = p.head_dim, H = p.num_q_heads;
  const int64_t splits = num_splits(p.kv_lens[query], p.chunk_tokens);
  std::fill(acc, acc + D, 0.0f);
  SoftmaxState state = softmax_init();
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
  std::vector<WorkItem> items;
  for (int64_t i = 0; i < p.num_queries; ++i) {
    const int64_t len = p.kv_lens[i];
    for (int64_t s = 0, begin = 0; begin < len; ++s, begin += p.chunk_tokens) {
      items.push_back({i, s, begin, std::min(len, begin + p.chunk_tokens)});
    }
  }
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
