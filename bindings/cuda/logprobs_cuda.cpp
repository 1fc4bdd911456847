#include <torch/library.h>

#include "cuda/logprobs.h"
#include "cuda_utils.h"
#include "logprobs.h"

namespace siri::bind {
namespace {

const auto cuda_token_logprobs = [](const auto& p) {
  check_cuda_launch(siri::cuda::launch_token_logprobs(p, current_stream()), "token_logprobs");
};
const auto cuda_logits_grad = [](const auto& p) {
  check_cuda_launch(siri::cuda::launch_logits_grad(p, current_stream()), "logits_grad");
};

std::tuple<at::Tensor, at::Tensor, at::Tensor> token_logprobs_cuda(const at::Tensor& logits,
                                                                   const at::Tensor& targets,
                                                                   const std::optional<at::Tensor>& mask,
                                                                   double temperature, bool return_entropy, bool check_targets) {
  const c10::cuda::CUDAGuard guard(logits.device());
  return token_logprobs_impl(logits, targets, mask, temperature, return_entropy, check_targets, cuda_token_logprobs);
}

at::Tensor logits_grad_cuda(const at::Tensor& logits, const at::Tensor& targets, const at::Tensor& softmax_stats,
                            const at::Tensor& row_scale, double temperature, bool check_targets) {
  const c10::cuda::CUDAGuard guard(logits.device());
  return logits_grad_out_of_place(logits, targets, softmax_stats, row_scale, temperature, check_targets, cuda_logits_grad);
}

void logits_grad_inplace_cuda(const at::Tensor& logits, const at::Tensor& targets, const at::Tensor& softmax_stats,
                              const at::Tensor& row_scale, double temperature, bool check_targets) {
  const c10::cuda::CUDAGuard guard(logits.device());
  logits_grad_impl(logits, targets, softmax_stats, row_scale, temperature, check_targets, logits, cuda_logits_grad);
}

}  // namespace

TORCH_LIBRARY_IMPL(siri, CUDA, m) {
  m.impl("token_logprobs", &token_logprobs_cuda);
  m.impl("logits_grad", &logits_grad_cuda);
  m.impl("logits_grad_", &logits_grad_inplace_cuda);
}

}  // namespace siri::bind
