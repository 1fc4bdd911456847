#include <torch/library.h>

#include "cuda/sampling.h"
#include "cuda_utils.h"
#include "sampling.h"

namespace siri::bind {

SampleOutputs sample_tokens_cuda(const at::Tensor& logits, const at::Tensor& temperature,
                                 const at::Tensor& top_k, const at::Tensor& top_p, const at::Tensor& seeds,
                                 const at::Tensor& positions, const at::Tensor& lengths,
                                 const at::Tensor& max_lengths, const at::Tensor& finished,
                                 const at::Tensor& eos_ids, int64_t pad_id, bool check_values) {
  const c10::cuda::CUDAGuard guard(logits.device());
  SampleInputs in{temperature, top_k, top_p, seeds, positions, lengths, max_lengths, finished, eos_ids};
  SampleOutputs out;
  const SampleParams p = prepare_sample_tokens(logits, in, pad_id, check_values, out);
  check_cuda_launch(siri::cuda::launch_sample_tokens(p, current_stream()), "sample_tokens");
  return out;
}

TORCH_LIBRARY_IMPL(siri, CUDA, m) { m.impl("sample_tokens", &sample_tokens_cuda); }

}  // namespace siri::bind
