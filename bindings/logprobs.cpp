#include "logprobs.h"

#include <torch/library.h>

#include "cpu/logprobs.h"

namespace siri::bind {
namespace {

const auto cpu_token_logprobs = [](const auto& p) { siri::cpu::token_logprobs(p); };
const auto cpu_logits_grad = [](const auto& p) { siri::cpu::logits_grad(p); };

std::tuple<at::Tensor, at::Tensor, at::Tensor> token_logprobs_cpu(const at::Tensor& logits,
                                                                  const at::Tensor& targets,
                                                                  const std::optional<at::Tensor>& mask,
                                                                  double temperature, bool return_entropy, bool check_targets) {
  return token_logprobs_impl(logits, targets, mask, temperature, return_entropy, check_targets, cpu_token_logprobs);
}

at::Tensor logits_grad_cpu(const at::Tensor& logits, const at::Tensor& targets, const at::Tensor& softmax_stats,
                           const at::Tensor& row_scale, double temperature, bool check_targets) {
  return logits_grad_out_of_place(logits, targets, softmax_stats, row_scale, temperature, check_targets, cpu_logits_grad);
}

void logits_grad_inplace_cpu(const at::Tensor& logits, const at::Tensor& targets, const at::Tensor& softmax_stats,
                             const at::Tensor& row_scale, double temperature, bool check_targets) {
  logits_grad_impl(logits, targets, softmax_stats, row_scale, temperature, check_targets, logits, cpu_logits_grad);
}

}  // namespace

TORCH_LIBRARY_IMPL(siri, CPU, m) {
  m.impl("token_logprobs", &token_logprobs_cpu);
  m.impl("logits_grad", &logits_grad_cpu);
  m.impl("logits_grad_", &logits_grad_inplace_cpu);
}

}  // namespace siri::bind
