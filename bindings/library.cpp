// The schema of every siri op, in one place. Implementations register per backend in
// bindings/<op>.cpp (CPU) and bindings/cuda/<op>_cuda.cpp (CUDA); fake kernels, autograd
// rules and docstrings live in siri/ops/<op>.py.
#include <torch/library.h>

TORCH_LIBRARY(siri, m) {
  m.def("group_advantages(Tensor rewards, int group_size, float eps, bool scale_by_std) -> Tensor");
  // Returns new tensors (nothing is mutated): tokens int64, logprobs fp32, finished bool,
  // lengths int32, finish_reason int8, each [B].
  m.def("sample_tokens(Tensor logits, Tensor temperature, Tensor top_k, Tensor top_p, Tensor seeds, "
        "Tensor positions, Tensor lengths, Tensor max_lengths, Tensor finished, Tensor eos_ids, "
        "int pad_id) -> (Tensor, Tensor, Tensor, Tensor, Tensor)");
}
