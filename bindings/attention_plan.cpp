// The paged-attention split plans as host functions for the engine (siri.ops.paged_attention
// attention_split_plan / graph_max_splits): the same functions paged_attention_run plans with,
// for a device kind and size given explicitly, so the engine can compute on the host, before a
// CUDA-graph replay, the chunk an eager call would use and write it into the graph's
// chunk_tokens tensor; and the partial-buffer bound its CUDA-graph memory estimate counts.
#include <pybind11/pybind11.h>

#include <string>

#include "attention_plan.h"
#include "paged_attention.h"

namespace py = pybind11;

namespace {

void require(bool ok, const std::string& message) {
  if (!ok) throw py::value_error(message);
}

// The policy paged_attention_run uses on `device` ("cpu": `units` threads; "cuda": `units` SMs;
// prefill: the call passes query_seq).
siri::bind::SplitPolicy policy_for(const std::string& device, int64_t units, bool prefill) {
  require(device == "cpu" || device == "cuda", "device must be 'cpu' or 'cuda', got '" + device + "'");
  require(units >= 1, "units must be >= 1, got " + std::to_string(units));
  return device == "cuda" ? siri::bind::cuda_split_policy(units, prefill) : siri::bind::cpu_split_policy(units);
}

void check_shape(int64_t num_queries, int64_t num_q_heads, int64_t num_kv_heads, int64_t head_dim) {
  require(num_queries >= 0, "num_queries must be >= 0, got " + std::to_string(num_queries));
  require(num_kv_heads >= 1, "num_kv_heads must be >= 1, got " + std::to_string(num_kv_heads));
  require(num_q_heads >= 1 && num_q_heads % num_kv_heads == 0,
          "num_q_heads must be a positive multiple of num_kv_heads (" + std::to_string(num_kv_heads) + "), got " +
              std::to_string(num_q_heads));
  require(head_dim >= 1, "head_dim must be >= 1, got " + std::to_string(head_dim));
}

py::tuple attention_split_plan(int64_t total_kv_len, int64_t max_kv_len, int64_t num_queries, int64_t num_q_heads,
                               int64_t num_kv_heads, int64_t head_dim, const std::string& device, int64_t units,
                               bool prefill) {
  check_shape(num_queries, num_q_heads, num_kv_heads, head_dim);
  require(max_kv_len >= 1, "max_kv_len must be >= 1, got " + std::to_string(max_kv_len));
  require(total_kv_len >= 0, "total_kv_len must be >= 0, got " + std::to_string(total_kv_len));
  const siri::SplitPlan plan = siri::bind::eager_split_plan(total_kv_len, max_kv_len, num_queries, num_q_heads,
                                                            num_kv_heads, head_dim, policy_for(device, units, prefill));
  return py::make_tuple(plan.chunk_tokens, plan.max_splits);
}

int64_t graph_max_splits(int64_t capacity, int64_t num_queries, int64_t num_q_heads, int64_t num_kv_heads,
                         int64_t head_dim, const std::string& device, int64_t units, bool prefill) {
  check_shape(num_queries, num_q_heads, num_kv_heads, head_dim);
  require(capacity >= 1, "capacity must be >= 1, got " + std::to_string(capacity));
  return siri::bind::graph_split_count(capacity, num_queries, num_q_heads, head_dim,
                                       policy_for(device, units, prefill));
}

}  // namespace

void register_attention_plan(py::module_& m) {
  m.attr("ATTENTION_PARTIAL_BYTES") = siri::kAttentionPartialBytes;
  m.def("attention_split_plan", &attention_split_plan,
        "(chunk_tokens, max_splits) that paged_attention_run plans without chunk_tokens for these host facts on "
        "'cpu' with `units` threads or 'cuda' with `units` SMs (prefill: the call passes query_seq)",
        py::arg("total_kv_len"), py::arg("max_kv_len"), py::arg("num_queries"), py::arg("num_q_heads"),
        py::arg("num_kv_heads"), py::arg("head_dim"), py::arg("device"), py::arg("units"),
        py::arg("prefill") = false);
  m.def("graph_max_splits", &graph_max_splits,
        "max_splits that paged_attention_run allocates when given chunk_tokens with max_kv_len = capacity",
        py::arg("capacity"), py::arg("num_queries"), py::arg("num_q_heads"), py::arg("num_kv_heads"),
        py::arg("head_dim"), py::arg("device"), py::arg("units"), py::arg("prefill") = false);
}
