#include "grpo_loss.h"

#include <torch/library.h>

#include "cpu/grpo_loss.h"

namespace siri::bind {
namespace {

std::tuple<at::Tensor, at::Tensor, at::Tensor> grpo_token_loss_cpu(
    const at::Tensor& logp, const at::Tensor& old_logprobs, const at::Tensor& advantages, const at::Tensor& mask,
    const std::optional<at::Tensor>& ref_logprobs, double clip_low, double clip_high, double clip_c,
    double kl_coef) {
  return grpo_token_loss_impl(logp, old_logprobs, advantages, mask, ref_logprobs, clip_low, clip_high, clip_c,
                              kl_coef, [](const auto& p) { siri::cpu::grpo_token_loss(p); });
}

}  // namespace

TORCH_LIBRARY_IMPL(siri, CPU, m) { m.impl("grpo_token_loss", &grpo_token_loss_cpu); }

}  // namespace siri::bind
