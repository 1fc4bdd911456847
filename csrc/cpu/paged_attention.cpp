// CPU paged attention. One work item is (query, KV head, split): it loads the group's G query
// heads once, then streams the split's K and V rows once for all of them, in tiles of kTile
// tokens: scores for the tile, one online-softmax rescale per head, then the AXPYs. Items are
// sorted by cost and handed out dynamically, so mixed lengths keep both cores busy; split
// queries are merged from their (o, lse) partials afterwards.
#include "cpu/paged_attention.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <vector>

namespace siri::cpu {
namespace {

constexpr int64_t kTile = 32;

struct WorkItem {
  int64_t query, kv_head, split, begin, end;
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

// acc[g] += sum_j p[g][j] * V[j] for all G heads. Pairs of heads share each V load where two
// accumulator rows fit in the 32 vector registers with room to spare (D <= 128).
template <int D, int N>
void accumulate_heads(Row<D>* acc, const float* p, const float* const* v_rows, int64_t n) {
  Row<D> a[N];
  for (int i = 0; i < N; ++i) a[i] = acc[i];
  for (int64_t j = 0; j < n; ++j) {
    float w[N];
    for (int i = 0; i < N; ++i) w[i] = p[i * kTile + j];
    axpy_n<D, N>(a, w, v_rows[j]);
  }
  for (int i = 0; i < N; ++i) acc[i] = a[i];
}

template <int D>
void accumulate_values(Row<D>* acc, const float* p, const float* const* v_rows, int64_t n, int64_t G) {
  constexpr int kPair = D <= 128 ? 2 : 1;
  int64_t g = 0;
  for (; g + kPair <= G; g += kPair) accumulate_heads<D, kPair>(acc + g, p + g * kTile, v_rows, n);
  for (; g < G; ++g) accumulate_heads<D, 1>(acc + g, p + g * kTile, v_rows, n);
}

template <typename T, int D>
void attend(const PagedAttentionParams& p, const WorkItem& w) {
  const int64_t G = p.num_q_heads / p.num_kv_heads, Hkv = p.num_kv_heads;
  const int64_t seq = p.query_seq ? p.query_seq[w.query] : w.query;
  const int32_t* pages = p.block_table + seq * p.max_pages;
  const T* k_cache = static_cast<const T*>(p.k_cache);
  const T* v_cache = static_cast<const T*>(p.v_cache);

  std::vector<float> buf(G * D + G * kTile + kTile * D);
  float* q = buf.data();       // [G, D], pre-scaled
  float* s = q + G * D;        // [G, kTile] scores, then probabilities
  float* vt = s + G * kTile;   // [kTile, D] V rows as fp32 (bf16 only)
  const T* q_src = static_cast<const T*>(p.q) + (w.query * p.num_q_heads + w.kv_head * G) * D;
  for (int64_t i = 0; i < G * D; ++i) q[i] = to_float(q_src[i]) * p.scale;
  std::vector<Row<D>> acc(G, Row<D>{});
  std::vector<SoftmaxState> state(G, softmax_init());

  // Element offset of token t's row for this KV head.
  const auto row_offset = [&](int64_t t) {
    const int64_t slot = static_cast<int64_t>(pages[t / p.page_size]) * p.page_size + t % p.page_size;
    return (slot * Hkv + w.kv_head) * D;
  };
  const T* k_rows[kTile];
  const float* v_rows[kTile];
  for (int64_t t0 = w.begin; t0 < w.end; t0 += kTile) {
    const int64_t n = std::min(kTile, w.end - t0);
    // Pages are scattered, so the hardware prefetcher cannot run ahead: fetch the next tile's
    // rows into L2 while this one is computed.
    for (int64_t t = t0 + kTile; t < std::min(t0 + 2 * kTile, w.end); ++t) {
      const int64_t offset = row_offset(t);
      for (int64_t b = 0; b < D * static_cast<int64_t>(sizeof(T)); b += 64) {
        __builtin_prefetch(reinterpret_cast<const char*>(k_cache + offset) + b, 0, 2);
        __builtin_prefetch(reinterpret_cast<const char*>(v_cache + offset) + b, 0, 2);
      }
    }
    for (int64_t j = 0; j < n; ++j) {
      const int64_t offset = row_offset(t0 + j);
      k_rows[j] = k_cache + offset;
      v_rows[j] = row_as_float(v_cache + offset, vt + j * D, D);
    }
    // Scores: each q row is loaded once per pair of K rows.
    int64_t j = 0;
    for (; j + 2 <= n; j += 2) {
      Row<D> k[2];
      k[0].load(k_rows[j]);
      k[1].load(k_rows[j + 1]);
      for (int64_t g = 0; g < G; ++g) dot_n<D, 2>(k, q + g * D, s + g * kTile + j, 1);
    }
    for (; j < n; ++j) {
      Row<D> k[1];
      k[0].load(k_rows[j]);
      for (int64_t g = 0; g < G; ++g) dot_n<D, 1>(k, q + g * D, s + g * kTile + j, 1);
    }
    for (int64_t g = 0; g < G; ++g) {
      float* sg = s + g * kTile;
      const float alpha = softmax_rescale(state[g], *std::max_element(sg, sg + n));
      if (alpha != 1.0f) acc[g].scale(alpha);
      f32x16 sum{};
      for (int64_t c = 0; c < kTile; c += 16) {
        const f32x16 e = exp_nonpositive(load16(sg + c) - state[g].m);
        store16(sg + c, e);
      }
      std::fill(sg + n, sg + kTile, 0.0f);  // the tail of a short tile holds stale scores
      for (int64_t c = 0; c < kTile; c += 16) sum += load16(sg + c);
      state[g].l += hsum(sum);
    }
    accumulate_values<D>(acc.data(), s, v_rows, n, G);
  }

  const int64_t splits = num_splits(p.kv_lens[w.query], p.chunk_tokens);
  float row[D];
  for (int64_t g = 0; g < G; ++g) {
    const int64_t head = w.kv_head * G + g;
    const float inv_l = 1.0f / state[g].l;
    acc[g].store(row);
    if (splits == 1) {
      store_row(row, inv_l, static_cast<T*>(p.out) + (w.query * p.num_q_heads + head) * D, D);
    } else {
      const int64_t part = (w.query * p.max_splits + w.split) * p.num_q_heads + head;
      store_row(row, inv_l, p.partial_o + part * D, D);
      p.partial_lse[part] = softmax_lse(state[g]);
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
    for (int64_t h = 0; h < p.num_kv_heads; ++h) {
      for (int64_t s = 0, begin = 0; begin < len; ++s, begin += p.chunk_tokens) {
        items.push_back({i, h, s, begin, std::min(len, begin + p.chunk_tokens)});
      }
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
