#include <torch/library.h>

#include "cuda/grpo_loss.h"
#include "cuda_utils.h"
#include "grpo_loss.h"

namespace siri::bind {
namespace {

std::tuple<at::Tensor, at::Tensor, at::Tensor> grpo_token_loss_cuda(
    const at::Tensor& logp, const at::Tensor& old_logprobs, const at::Tensor& advantages, const at::Tensor& mask,
    const std::optional<at::Tensor>& ref_logprobs, double clip_low, double clip_high, double clip_c,
    double kl_coef) {
  const c10::cuda::CUDAGuard guard(logp.device());
  return grpo_token_loss_impl(logp, old_logprobs, advantages, mask, ref_logprobs, clip_low, clip_high, clip_c,
                              kl_coef, [](const auto& p) {
                                check_cuda_launch(siri::cuda::launch_grpo_token_loss(p, current_stream()),
                                                  "grpo_token_loss");
                              });
}

}  // namespace

TORCH_LIBRARY_IMPL(siri, CUDA, m) { m.impl("grpo_token_loss", &grpo_token_loss_cuda); }

}  // namespace siri::bind
