#include "paged_attention.h"

#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>

#include "cpu/paged_attention.h"
#include "siri/head_dims.h"

namespace siri::bind {
namespace {

void check_int_vector(const at::Tensor& t, const char* name, at::ScalarType dtype, int64_t size,
                      const at::Tensor& ref, const char* what) {
  check_dtype(t, name, dtype);
  check_dim(t, name, 1);
  check_size(t, name, 0, size, what);
  check_same_device(t, name, ref, "k_cache");
  check_contiguous(t, name);
}

// seq_lens in [min_len, max_pages * page_size], and every block id a sequence uses (its first
// ceil(seq_len / page_size) table entries) in [0, num_pages).
void check_pages(const at::Tensor& block_table, const at::Tensor& seq_lens, const at::Tensor& k_cache,
                 const at::Tensor& min_len) {
  check_dtype(block_table, "block_table", at::kInt);
  check_dim(block_table, "block_table", 2);
  check_same_device(block_table, "block_table", k_cache, "k_cache");
  check_contiguous(block_table, "block_table");
  const int64_t batch = block_table.size(0), max_pages = block_table.size(1);
  const int64_t num_pages = k_cache.size(0), page_size = k_cache.size(1);
  check_int_vector(seq_lens, "seq_lens", at::kInt, batch, k_cache, "block_table.shape[0]");
  if (batch == 0) return;
  const int64_t capacity = max_pages * page_size;
  const at::Tensor used_pages = (seq_lens.clamp(0, capacity) + (page_size - 1)).div(page_size, "floor");
  const at::Tensor used = at::arange(max_pages, block_table.options()).unsqueeze(0) < used_pages.unsqueeze(1);
  const at::Tensor bad = used & ((block_table < 0) | (block_table >= num_pages));
  // All three verdicts in one device-to-host copy (one sync per call on CUDA); the details of
  // a failure are computed only when there is one.
  const at::Tensor verdicts = at::stack({(seq_lens < min_len).any(), (seq_lens > capacity).any(), bad.any()}).cpu();
  const bool* fails = verdicts.data_ptr<bool>();
  TORCH_CHECK_VALUE(!fails[0], "seq_lens must be >= ",
                    min_len.dim() == 0 ? "1" : "the number of new tokens (cu_seqlens diff)",
                    " for every sequence, got min ", seq_lens.min().item<int>());
  TORCH_CHECK_VALUE(!fails[1], "seq_lens must be <= max_pages * page_size = ", max_pages, " * ", page_size,
                    " = ", capacity, " (the block_table's capacity), got ", seq_lens.max().item<int>());
  if (fails[2]) {
    const at::Tensor where = bad.nonzero()[0].cpu();
    const int64_t b = where[0].item<int64_t>(), j = where[1].item<int64_t>();
    TORCH_CHECK_VALUE(false, "block_table holds a block id outside [0, num_pages=", num_pages,
                      ") within the first ceil(seq_len / page_size) entries of a sequence: block_table[",
                      b, ", ", j, "] = ", block_table[b][j].item<int>());
  }
}

void check_q(const at::Tensor& q, const at::Tensor& k_cache) {
  TORCH_CHECK_TYPE(q.scalar_type() == k_cache.scalar_type(), "q must have the dtype of k_cache (",
                   k_cache.scalar_type(), "), got ", q.scalar_type());
  check_dim(q, "q", 3);
  check_same_device(q, "q", k_cache, "k_cache");
  check_contiguous(q, "q");
  check_size(q, "q", 2, k_cache.size(3), "head_dim of k_cache");
  TORCH_CHECK_VALUE(q.size(1) % k_cache.size(2) == 0, "q's number of heads (", q.size(1),
                    ") must be a multiple of k_cache's number of KV heads (", k_cache.size(2), ")");
}

// The split plan from the host facts (total, longest kv_len) when the caller has them;
// otherwise from kv_lens, read back from the device (one sync on CUDA).
struct KVLenFacts {
  int64_t total, longest;
};

// A chunk given at run time: on CUDA the kernels read it from `device_chunk` (the tensor's
// storage); on the CPU the binding has already turned it into `host_chunk` (sanitised, fitted
// to the longest query).
struct RunChunk {
  const int32_t* device_chunk = nullptr;
  int64_t host_chunk = 0;  // > 0: use it
};

PagedAttentionCall prepare_attention(const at::Tensor& q, const at::Tensor& k_cache,
                                     const at::Tensor& v_cache, const at::Tensor& block_table,
                                     at::Tensor kv_lens, at::Tensor query_seq,
                                     std::optional<double> scale, SplitPolicy policy, KernelChoice kernels,
                                     std::optional<KVLenFacts> facts = std::nullopt,
                                     std::optional<RunChunk> run_chunk = std::nullopt) {
  PagedAttentionCall call;
  PagedAttentionParams& p = call.params;
  p.query_tiled = kernels.query_tiled;
  p.cpu_bf16_dot = kernels.cpu_bf16_dot;
  p.dtype = check_kv_cache(k_cache, v_cache);
  const int64_t D = k_cache.size(3);
  const double s = scale.value_or(1.0 / std::sqrt(static_cast<double>(D)));
  TORCH_CHECK_VALUE(std::isfinite(s), "scale must be finite, got ", s);
  call.out = at::empty_like(q);
  call.kv_lens = kv_lens;
  call.query_seq = query_seq;
  p.num_queries = q.size(0);
  p.num_q_heads = q.size(1);
  p.num_kv_heads = k_cache.size(2);
  p.head_dim = D;
  p.page_size = k_cache.size(1);
  p.max_pages = block_table.size(1);
  p.scale = static_cast<float>(s);
  p.chunk_tokens = 1;
  p.max_splits = 1;
  p.chunk_tokens_at = nullptr;
  if (p.num_queries > 0 && run_chunk) {
    // Buffers for any batch up to the capacity (facts->longest) and any chunk >= the minimum.
    p.max_splits = graph_split_count(facts->longest, p.num_queries, p.num_q_heads, D, policy);
    // The fallback chunk (what a query of the full capacity gets); the kernels use the run-time one.
    p.chunk_tokens = query_split(facts->longest, facts->longest, 1, p.max_splits).chunk;
    if (run_chunk->host_chunk > 0) p.chunk_tokens = run_chunk->host_chunk;
    p.chunk_tokens_at = run_chunk->device_chunk;
  } else if (p.num_queries > 0) {
    if (!facts) {
      const at::Tensor lens_host = kv_lens.cpu();
      const int32_t* lens = lens_host.data_ptr<int32_t>();
      facts = KVLenFacts{0, 1};
      for (int64_t i = 0; i < p.num_queries; ++i) {
        facts->total += lens[i];
        facts->longest = std::max<int64_t>(facts->longest, lens[i]);
      }
    }
    const SplitPlan plan =
        eager_split_plan(facts->total, facts->longest, p.num_queries, p.num_q_heads, p.num_kv_heads, D, policy);
    p.chunk_tokens = plan.chunk_tokens;
    p.max_splits = plan.max_splits;
  }
  const auto f32 = q.options().dtype(at::kFloat);
  if (p.max_splits > 1) {
    call.partial_o = at::empty({p.num_queries, p.max_splits, p.num_q_heads, D}, f32);
    call.partial_lse = at::empty({p.num_queries, p.max_splits, p.num_q_heads}, f32);
  }
  p.q = q.data_ptr();
  p.k_cache = k_cache.data_ptr();
  p.v_cache = v_cache.data_ptr();
  p.block_table = block_table.data_ptr<int32_t>();
  p.kv_lens = call.kv_lens.data_ptr<int32_t>();
  p.query_seq = call.query_seq.defined() ? call.query_seq.data_ptr<int32_t>() : nullptr;
  p.out = call.out.data_ptr();
  p.partial_o = call.partial_o.defined() ? call.partial_o.data_ptr<float>() : nullptr;
  p.partial_lse = call.partial_lse.defined() ? call.partial_lse.data_ptr<float>() : nullptr;
  return call;
}

}  // namespace

SplitPlan eager_split_plan(int64_t total_kv_len, int64_t max_kv_len, int64_t num_queries, int64_t num_q_heads,
                           int64_t num_kv_heads, int64_t head_dim, const SplitPolicy& policy) {
  if (num_queries <= 0) return {1, 1};
  return plan_attention_splits(total_kv_len, max_kv_len, num_queries, num_q_heads, num_kv_heads, head_dim,
                               policy.item_spans_kv_heads, policy.limits);
}

int64_t graph_split_count(int64_t max_kv_len, int64_t num_queries, int64_t num_q_heads, int64_t head_dim,
                          const SplitPolicy& policy) {
  if (num_queries <= 0) return 1;
  return graph_attention_max_splits(max_kv_len, num_queries, num_q_heads, head_dim, policy.limits);
}

AttnDType check_kv_cache(const at::Tensor& k_cache, const at::Tensor& v_cache) {
  check_dim(k_cache, "k_cache", 4);
  TORCH_CHECK_VALUE(v_cache.sizes() == k_cache.sizes(), "v_cache must have the shape of k_cache ",
                    k_cache.sizes(), ", got ", v_cache.sizes());
  TORCH_CHECK_TYPE(v_cache.scalar_type() == k_cache.scalar_type(), "v_cache must have the dtype of k_cache (",
                   k_cache.scalar_type(), "), got ", v_cache.scalar_type());
  check_same_device(v_cache, "v_cache", k_cache, "k_cache");
  check_contiguous(k_cache, "k_cache");
  check_contiguous(v_cache, "v_cache");
  TORCH_CHECK_VALUE(supported_head_dim(k_cache.size(3)), "head_dim (k_cache.shape[3]) must be one of ",
                    c10::ArrayRef<int>(kSupportedHeadDims), ", got ", k_cache.size(3));
  TORCH_CHECK_VALUE(k_cache.size(1) >= 1 && k_cache.size(2) >= 1,
                    "k_cache must have page_size >= 1 and num_kv_heads >= 1, got shape ", k_cache.sizes());
  const bool cuda = k_cache.is_cuda();
  switch (k_cache.scalar_type()) {
    case at::kFloat: return AttnDType::kFloat32;
    case at::kBFloat16: return AttnDType::kBFloat16;
    case at::kHalf:
      if (cuda) return AttnDType::kFloat16;
      [[fallthrough]];
    default:
      TORCH_CHECK_TYPE(false, "k_cache must have dtype float32 or bfloat16", cuda ? " or float16" : "",
                       " on ", k_cache.device(), ", got ", k_cache.scalar_type());
  }
}

PagedAttentionCall prepare_decode(const at::Tensor& q, const at::Tensor& k_cache,
                                  const at::Tensor& v_cache, const at::Tensor& block_table,
                                  const at::Tensor& seq_lens, std::optional<double> scale,
                                  SplitPolicy policy, KernelChoice kernels) {
  check_kv_cache(k_cache, v_cache);
  check_q(q, k_cache);
  check_pages(block_table, seq_lens, k_cache, at::scalar_tensor(1, seq_lens.options()));
  check_size(q, "q", 0, block_table.size(0), "block_table.shape[0] (the batch)");
  return prepare_attention(q, k_cache, v_cache, block_table, seq_lens, at::Tensor(), scale, policy, kernels);
}

PagedAttentionCall prepare_prefill(const at::Tensor& q, const at::Tensor& k_cache,
                                   const at::Tensor& v_cache, const at::Tensor& block_table,
                                   const at::Tensor& seq_lens, const at::Tensor& cu_seqlens,
                                   std::optional<double> scale, SplitPolicy policy, KernelChoice kernels) {
  check_kv_cache(k_cache, v_cache);
  check_q(q, k_cache);
  const int64_t batch = block_table.dim() == 2 ? block_table.size(0) : 0;
  check_int_vector(cu_seqlens, "cu_seqlens", at::kInt, batch + 1, k_cache, "block_table.shape[0] + 1");
  const at::Tensor new_tokens = cu_seqlens.diff();
  TORCH_CHECK_VALUE(cu_seqlens[0].item<int>() == 0 && cu_seqlens[batch].item<int64_t>() == q.size(0),
                    "cu_seqlens must start at 0 and end at q.shape[0] (", q.size(0), "), got ",
                    cu_seqlens[0].item<int>(), " and ", cu_seqlens[batch].item<int>());
  TORCH_CHECK_VALUE((new_tokens >= 0).all().item<bool>(), "cu_seqlens must be non-decreasing");
  check_pages(block_table, seq_lens, k_cache, new_tokens);
  // Query i of sequence b (the j-th of its n_b new tokens, which are the last n_b of its
  // seq_len) sees the first seq_len - n_b + j + 1 tokens: causal attention over the pages.
  const auto opts = cu_seqlens.options();
  const at::Tensor seq = at::repeat_interleave(at::arange(batch, opts.dtype(at::kLong)),
                                               new_tokens.to(at::kLong), /*dim=*/0, q.size(0));
  const at::Tensor query_seq = seq.to(at::kInt);
  const at::Tensor kv_lens = (seq_lens.index({seq}) - new_tokens.index({seq}) +
                              at::arange(q.size(0), opts) - cu_seqlens.index({seq}) + 1).to(at::kInt);
  return prepare_attention(q, k_cache, v_cache, block_table, kv_lens.contiguous(), query_seq.contiguous(),
                           scale, policy, kernels);
}

PagedAttentionCall prepare_attention_run(const at::Tensor& q, const at::Tensor& k_cache,
                                         const at::Tensor& v_cache, const at::Tensor& block_table,
                                         const at::Tensor& kv_lens, const std::optional<at::Tensor>& query_seq,
                                         int64_t max_kv_len, int64_t total_kv_len, std::optional<double> scale,
                                         SplitPolicy policy, const std::optional<at::Tensor>& chunk_tokens,
                                         KernelChoice kernels) {
  check_kv_cache(k_cache, v_cache);
  check_q(q, k_cache);
  check_dtype(block_table, "block_table", at::kInt);
  check_dim(block_table, "block_table", 2);
  check_same_device(block_table, "block_table", k_cache, "k_cache");
  check_contiguous(block_table, "block_table");
  const int64_t queries = q.size(0), capacity = block_table.size(1) * k_cache.size(1);
  check_int_vector(kv_lens, "kv_lens", at::kInt, queries, k_cache, "q.shape[0]");
  if (query_seq) {
    check_int_vector(*query_seq, "query_seq", at::kInt, queries, k_cache, "q.shape[0]");
  } else {
    check_size(q, "q", 0, block_table.size(0), "block_table.shape[0] (without query_seq, one query per row)");
  }
  TORCH_CHECK_VALUE(queries == 0 || (max_kv_len >= 1 && max_kv_len <= capacity),
                    "max_kv_len must be in [1, max_pages * page_size = ", capacity, "], got ", max_kv_len);
  TORCH_CHECK_VALUE(total_kv_len >= 0, "total_kv_len must be >= 0, got ", total_kv_len);
  std::optional<RunChunk> run_chunk;
  if (chunk_tokens) {
    check_int_vector(*chunk_tokens, "chunk_tokens", at::kInt, 1, k_cache, "one chunk length");
    run_chunk = RunChunk{};
    if (k_cache.is_cuda()) run_chunk->device_chunk = chunk_tokens->data_ptr<int32_t>();  // read by the kernels
  }
  if (!k_cache.is_cuda()) {
    // Host memory: the values are checked too, without any device read.
    const int32_t* lens = kv_lens.data_ptr<int32_t>();
    const int32_t* rows = query_seq ? query_seq->data_ptr<int32_t>() : nullptr;
    const int32_t* table = block_table.data_ptr<int32_t>();
    const int64_t page_size = k_cache.size(1), num_pages = k_cache.size(0), max_pages = block_table.size(1);
    for (int64_t i = 0; i < queries; ++i) {
      TORCH_CHECK_VALUE(lens[i] >= 1 && lens[i] <= max_kv_len, "kv_lens[", i, "] = ", lens[i],
                        " is outside [1, max_kv_len = ", max_kv_len, "]");
      const int64_t row = rows ? rows[i] : i;
      TORCH_CHECK_VALUE(row >= 0 && row < block_table.size(0), "query_seq[", i, "] = ", row,
                        " is outside [0, block_table.shape[0] = ", block_table.size(0), ")");
      for (int64_t j = 0; j < (lens[i] + page_size - 1) / page_size; ++j) {
        const int32_t page = table[row * max_pages + j];
        TORCH_CHECK_VALUE(page >= 0 && page < num_pages, "block_table[", row, ", ", j, "] = ", page,
                          " is outside [0, num_pages = ", num_pages, ")");
      }
    }
    if (run_chunk && queries > 0) {
      // The CPU kernels split every query with one chunk: the run-time value, sanitised as the
      // CUDA kernels do, and raised (query_split) until the longest query fits max_splits, so no
      // query needs more (CUDA raises it per query; the results are the same).
      const int64_t value = chunk_tokens->data_ptr<int32_t>()[0];
      TORCH_CHECK_VALUE(value >= 1, "chunk_tokens must hold a chunk length >= 1, got ", value);
      int64_t longest = 1;
      for (int64_t i = 0; i < queries; ++i) longest = std::max<int64_t>(longest, lens[i]);
      const int64_t max_splits = graph_split_count(max_kv_len, queries, q.size(1), k_cache.size(3), policy);
      run_chunk->host_chunk = query_split(longest, capacity, sanitize_chunk(value), max_splits).chunk;
    }
  }
  return prepare_attention(q, k_cache, v_cache, block_table, kv_lens,
                           query_seq ? query_seq->contiguous() : at::Tensor(), scale, policy, kernels,
                           KVLenFacts{total_kv_len, max_kv_len}, run_chunk);
}

AppendKVParams prepare_append_kv(const at::Tensor& k, const at::Tensor& v, const at::Tensor& k_cache,
                                 const at::Tensor& v_cache, const at::Tensor& slot_mapping) {
  check_kv_cache(k_cache, v_cache);
  for (const auto& [t, name] : {std::pair{&k, "k"}, std::pair{&v, "v"}}) {
    check_dim(*t, name, 3);
    TORCH_CHECK_TYPE(t->scalar_type() == k_cache.scalar_type(), name, " must have the dtype of k_cache (",
                     k_cache.scalar_type(), "), got ", t->scalar_type());
    check_same_device(*t, name, k_cache, "k_cache");
    check_contiguous(*t, name);
    check_size(*t, name, 1, k_cache.size(2), "num_kv_heads of k_cache");
    check_size(*t, name, 2, k_cache.size(3), "head_dim of k_cache");
  }
  check_size(v, "v", 0, k.size(0), "k.shape[0]");
  check_int_vector(slot_mapping, "slot_mapping", at::kLong, k.size(0), k_cache, "k.shape[0]");
  const int64_t slots = k_cache.size(0) * k_cache.size(1);
  if (k.size(0) > 0) {
    TORCH_CHECK_VALUE(((slot_mapping >= -1) & (slot_mapping < slots)).all().item<bool>(),
                      "slot_mapping entries must be -1 (skip) or in [0, num_pages * page_size = ", slots,
                      "), got min ", slot_mapping.min().item<int64_t>(), ", max ",
                      slot_mapping.max().item<int64_t>());
  }
  AppendKVParams p;
  p.k = k.data_ptr();
  p.v = v.data_ptr();
  p.k_cache = k_cache.data_ptr();
  p.v_cache = v_cache.data_ptr();
  p.slot_mapping = slot_mapping.data_ptr<int64_t>();
  p.num_tokens = k.size(0);
  p.row_bytes = k_cache.size(2) * k_cache.size(3) * k_cache.element_size();
  return p;
}

namespace {

// Work items are handed out dynamically, longest first, so chunks need no upper bound.
SplitPolicy cpu_policy() { return cpu_split_policy(at::get_num_threads()); }

at::Tensor paged_decode_attention_cpu(const at::Tensor& q, const at::Tensor& k_cache,
                                      const at::Tensor& v_cache, const at::Tensor& block_table,
                                      const at::Tensor& seq_lens, std::optional<double> scale, bool cpu_bf16_dot) {
  const PagedAttentionCall call = prepare_decode(q, k_cache, v_cache, block_table, seq_lens, scale, cpu_policy(),
                                                 KernelChoice{true, cpu_bf16_dot});
  siri::cpu::paged_attention(call.params);
  return call.out;
}

at::Tensor paged_prefill_attention_cpu(const at::Tensor& q, const at::Tensor& k_cache,
                                       const at::Tensor& v_cache, const at::Tensor& block_table,
                                       const at::Tensor& seq_lens, const at::Tensor& cu_seqlens,
                                       std::optional<double> scale, bool query_tiled, bool cpu_bf16_dot) {
  const PagedAttentionCall call = prepare_prefill(q, k_cache, v_cache, block_table, seq_lens, cu_seqlens, scale,
                                                  cpu_policy(), KernelChoice{query_tiled, cpu_bf16_dot});
  siri::cpu::paged_attention(call.params);
  return call.out;
}

at::Tensor paged_attention_run_cpu(const at::Tensor& q, const at::Tensor& k_cache, const at::Tensor& v_cache,
                                   const at::Tensor& block_table, const at::Tensor& kv_lens,
                                   const std::optional<at::Tensor>& query_seq, int64_t max_kv_len,
                                   int64_t total_kv_len, std::optional<double> scale,
                                   const std::optional<at::Tensor>& chunk_tokens, bool query_tiled,
                                   bool cpu_bf16_dot) {
  const PagedAttentionCall call =
      prepare_attention_run(q, k_cache, v_cache, block_table, kv_lens, query_seq, max_kv_len, total_kv_len, scale,
                            cpu_policy(), chunk_tokens, KernelChoice{query_tiled, cpu_bf16_dot});
  siri::cpu::paged_attention(call.params);
  return call.out;
}

void append_kv_cpu(const at::Tensor& k, const at::Tensor& v, at::Tensor& k_cache, at::Tensor& v_cache,
                   const at::Tensor& slot_mapping) {
  siri::cpu::append_kv(prepare_append_kv(k, v, k_cache, v_cache, slot_mapping));
}

}  // namespace

TORCH_LIBRARY_IMPL(siri, CPU, m) {
  m.impl("paged_decode_attention", &paged_decode_attention_cpu);
  m.impl("paged_prefill_attention", &paged_prefill_attention_cpu);
  m.impl("paged_attention_run", &paged_attention_run_cpu);
  m.impl("append_kv", &append_kv_cpu);
}

}  // namespace siri::bind
