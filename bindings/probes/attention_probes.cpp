// Probe of the paged-attention split planner (siri/paged_attention.h): the plan the CPU and CUDA
// bindings make, computed for any device size, so a CPU test can check the CUDA plan for a
// skewed batch on an H200's 132 SMs; and the per-query split the CUDA kernels compute.
// Test-only: part of the module _siri_probes (module.cpp), not of siri._C.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <climits>
#include <cstdint>
#include <string>
#include <vector>

#include "probes.h"
#include "siri/paged_attention.h"

namespace py = pybind11;

namespace {

// The attention split plan the binding makes for a batch with these kv_lens, on `device`
// ("cuda": `units` SMs; "cpu": `units` threads; `prefill`: one query per prompt token, with
// block-table rows): chunk_tokens, max_splits, and the longest
// serial run of tokens any one work item gets (the batch's critical path).
py::dict attention_plan(const std::vector<int64_t>& kv_lens, int64_t num_q_heads, int64_t num_kv_heads,
                        int64_t head_dim, const std::string& device, int64_t units, bool prefill) {
  if (kv_lens.empty()) throw py::value_error("kv_lens must not be empty");
  if (num_kv_heads < 1 || num_q_heads % num_kv_heads != 0) {
    throw py::value_error("num_q_heads must be a positive multiple of num_kv_heads");
  }
  if (device != "cuda" && device != "cpu") throw py::value_error("device must be 'cuda' or 'cpu', got '" + device + "'");
  if (units < 1) throw py::value_error("units must be >= 1");
  int64_t total = 0, longest = 1;
  for (const int64_t len : kv_lens) {
    if (len < 1) throw py::value_error("kv_lens must be >= 1");
    total += len;
    longest = len > longest ? len : longest;
  }
  const bool cuda = device == "cuda";
  const siri::SplitLimits limits = cuda ? siri::cuda_split_limits(units, prefill) : siri::cpu_split_limits(units);
  const siri::SplitPlan plan = siri::plan_attention_splits(total, longest, static_cast<int64_t>(kv_lens.size()),
                                                           num_q_heads, num_kv_heads, head_dim, !cuda, limits);
  py::dict out;
  out["chunk_tokens"] = plan.chunk_tokens;
  out["max_splits"] = plan.max_splits;
  out["longest_item_tokens"] = longest < plan.chunk_tokens ? longest : plan.chunk_tokens;
  out["heads_per_block"] = siri::decode_heads_per_block(num_q_heads / num_kv_heads);
  out["max_partial_bytes"] = limits.max_partial_bytes;
  return out;
}

// How the CUDA kernels (decode and merge, through siri::query_split(params, query)) split each
// query of a call with these kv_lens, block-table capacity, chunk and max_splits: a list of
// (keys read, chunk, splits). run_time: the chunk is the chunk_tokens tensor's value (read
// through params.chunk_tokens_at, sanitised as on the device), else the planned chunk_tokens.
py::list attention_query_splits(const std::vector<int32_t>& kv_lens, int64_t capacity, int64_t chunk,
                                int64_t max_splits, bool run_time) {
  if (capacity < 1) throw py::value_error("capacity must be >= 1");
  if (chunk < INT32_MIN || chunk > INT32_MAX) throw py::value_error("chunk must fit in int32");
  const int32_t chunk_value = static_cast<int32_t>(chunk);
  siri::PagedAttentionParams p{};
  p.kv_lens = kv_lens.data();
  p.num_queries = static_cast<int64_t>(kv_lens.size());
  p.page_size = 1;
  p.max_pages = capacity;
  p.chunk_tokens = chunk;
  p.max_splits = max_splits;
  p.chunk_tokens_at = run_time ? &chunk_value : nullptr;
  py::list out;
  for (int64_t i = 0; i < p.num_queries; ++i) {
    const siri::QuerySplit s = siri::query_split(p, i);
    out.append(py::make_tuple(s.kv_len, s.chunk, s.splits));
  }
  return out;
}

}  // namespace

void register_attention_probes(py::module_& m) {
  m.def("attention_plan", &attention_plan,
        "The paged-attention split plan (siri/paged_attention.h) for a batch of kv_lens on "
        "'cuda' with `units` SMs or 'cpu' with `units` threads: chunk_tokens, max_splits, "
        "longest_item_tokens, heads_per_block, max_partial_bytes",
        py::arg("kv_lens"), py::arg("num_q_heads"), py::arg("num_kv_heads"), py::arg("head_dim"),
        py::arg("device"), py::arg("units"), py::arg("prefill") = false);
  m.def("attention_query_splits", &attention_query_splits,
        "siri::query_split(params, i) for each kv_len (the CUDA kernels' per-query split) -> "
        "[(keys read, chunk, splits)]; run_time: chunk is the chunk_tokens tensor's value",
        py::arg("kv_lens"), py::arg("capacity"), py::arg("chunk"), py::arg("max_splits"), py::arg("run_time"));
}
