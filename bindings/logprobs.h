// Validation and launch of siri::token_logprobs and siri::logits_grad(_), shared by the CPU
// and CUDA registrations: each passes a `launch(params)` callable for its backend.
#pragma once

#include <tuple>
#include <vector>

#include "checks.h"
#include "dispatch.h"
#include "siri/logprobs.h"

namespace siri::bind {

// Checks `logits` ([N, V] or [B, T, V], last dim contiguous) and returns its row layout.
inline RowLayout logits_layout(const at::Tensor& logits, const char* name) {
  TORCH_CHECK_VALUE(logits.dim() == 2 || logits.dim() == 3, name, " must be [N, V] or [B, T, V], got shape ",
                    logits.sizes());
  TORCH_CHECK_VALUE(logits.size(-1) >= 1, name, " must have a vocabulary dimension >= 1, got shape ",
                    logits.sizes());
  TORCH_CHECK_VALUE(logits.stride(-1) == 1 || logits.size(-1) == 1, name,
                    " must be contiguous in its last (vocabulary) dimension, got strides ", logits.strides());
  if (logits.dim() == 2) return RowLayout{std::max<int64_t>(logits.size(0), 1), 0, logits.stride(0)};
  return RowLayout{std::max<int64_t>(logits.size(1), 1), logits.stride(0), logits.stride(1)};
}

inline void check_row_tensor(const at::Tensor& t, const char* name, const at::Tensor& logits,
                             at::ScalarType dtype) {
  check_dtype(t, name, dtype);
  check_same_device(t, name, logits, "logits");
  const auto rows = logits.sizes().slice(0, logits.dim() - 1);
  TORCH_CHECK_VALUE(t.sizes() == rows, name, " must have shape ", rows, " (logits.shape[:-1]), got ",
                    t.sizes());
}

// Every target of a row that will be read must index the vocabulary.
inline void check_targets_in_range(const at::Tensor& targets, const at::Tensor& rows_used, int64_t vocab) {
  const at::Tensor bad = (targets.lt(0) | targets.ge(vocab)).logical_and_(rows_used);
  TORCH_CHECK_VALUE(!bad.any().item<bool>(), "targets must lie in [0, ", vocab,
                    ") on every row that is not masked out; found an out-of-range target");
}

inline void check_temperature(double temperature) {
  TORCH_CHECK_VALUE(std::isfinite(temperature) && temperature > 0, "temperature must be finite and > 0, got ",
                    temperature);
}

template <typename Launch>
std::tuple<at::Tensor, at::Tensor, at::Tensor> token_logprobs_impl(
    const at::Tensor& logits, const at::Tensor& targets, const std::optional<at::Tensor>& mask,
    double temperature, bool return_entropy, bool check_targets, Launch&& launch) {
  const RowLayout layout = logits_layout(logits, "logits");
  check_row_tensor(targets, "targets", logits, at::kLong);
  check_temperature(temperature);
  const int64_t vocab = logits.size(-1);
  at::Tensor t = targets.contiguous(), m;
  if (mask.has_value()) {
    check_row_tensor(*mask, "mask", logits, at::kBool);
    m = mask->contiguous();
    if (check_targets) check_targets_in_range(t, m, vocab);
  } else if (check_targets) {
    check_targets_in_range(t, at::ones_like(t, t.options().dtype(at::kBool)), vocab);
  }
  const auto out_opts = logits.options().dtype(acc_dtype(logits.scalar_type()));
  const auto rows = logits.sizes().slice(0, logits.dim() - 1);
  std::vector<int64_t> stats_shape(rows.begin(), rows.end());
  stats_shape.push_back(2);
  at::Tensor logp = at::empty(rows, out_opts), stats = at::empty(stats_shape, out_opts);
  at::Tensor entropy = return_entropy ? at::empty(rows, out_opts) : at::empty({0}, out_opts);
  dispatch_logits_dtype(logits.scalar_type(), "logits", [&](auto tag) {
    using T = decltype(tag);
    using A = acc_t<T>;
    LogprobParams<T> p{data_as<const T>(logits), layout, t.numel(), vocab, t.data_ptr<int64_t>(),
                       m.defined() ? m.data_ptr<bool>() : nullptr, static_cast<A>(1.0 / temperature),
                       data_as<A>(logp), data_as<A>(stats), return_entropy ? data_as<A>(entropy) : nullptr};
    if (p.rows > 0) launch(p);
  });
  return {logp, stats, entropy};
}

// Writes dL/dlogits into `grad` (which may be `logits` itself).
template <typename Launch>
void logits_grad_impl(const at::Tensor& logits, const at::Tensor& targets, const at::Tensor& softmax_stats,
                      const at::Tensor& row_scale, double temperature, bool check_targets,
                      const at::Tensor& grad, Launch&& launch) {
  const RowLayout layout = logits_layout(logits, "logits");
  const RowLayout grad_layout = logits_layout(grad, "grad");
  const at::ScalarType acc = acc_dtype(logits.scalar_type());
  check_row_tensor(targets, "targets", logits, at::kLong);
  check_dtype(softmax_stats, "softmax_stats", acc);
  check_same_device(softmax_stats, "softmax_stats", logits, "logits");
  TORCH_CHECK_VALUE(softmax_stats.dim() == logits.dim() && softmax_stats.size(-1) == 2 &&
                        softmax_stats.sizes().slice(0, logits.dim() - 1) == targets.sizes(),
                    "softmax_stats must have shape logits.shape[:-1] + (2,), got ", softmax_stats.sizes());
  check_row_tensor(row_scale, "row_scale", logits, acc);
  check_temperature(temperature);
  const int64_t vocab = logits.size(-1);
  const at::Tensor t = targets.contiguous(), l = softmax_stats.contiguous(), s = row_scale.contiguous();
  if (check_targets) check_targets_in_range(t, s.ne(0), vocab);
  dispatch_logits_dtype(logits.scalar_type(), "logits", [&](auto tag) {
    using T = decltype(tag);
    using A = acc_t<T>;
    LogitsGradParams<T> p{data_as<const T>(logits), layout, data_as<T>(grad), grad_layout, t.numel(), vocab,
                          t.data_ptr<int64_t>(), data_as<const A>(l), data_as<const A>(s),
                          static_cast<A>(1.0 / temperature)};
    if (p.rows > 0) launch(p);
  });
}

template <typename Launch>
at::Tensor logits_grad_out_of_place(const at::Tensor& logits, const at::Tensor& targets,
                                    const at::Tensor& softmax_stats, const at::Tensor& row_scale, double temperature,
                                    bool check_targets, Launch&& launch) {
  at::Tensor grad = at::empty(logits.sizes(), logits.options());
  logits_grad_impl(logits, targets, softmax_stats, row_scale, temperature, check_targets, grad, launch);
  return grad;
}

}  // namespace siri::bind
