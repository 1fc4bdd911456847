// The schema of every siri op, in one place. Implementations register per backend in
// bindings/<op>.cpp (CPU) and bindings/cuda/<op>_cuda.cpp (CUDA); fake kernels, autograd
// rules and docstrings live in siri/ops/<op>.py.
#include <torch/library.h>

TORCH_LIBRARY(siri, m) {
  m.def("group_advantages(Tensor rewards, int group_size, float eps, bool scale_by_std) -> Tensor");
  m.def("paged_decode_attention(Tensor q, Tensor k_cache, Tensor v_cache, Tensor block_table, "
        "Tensor seq_lens, float? scale=None) -> Tensor");
  m.def("paged_prefill_attention(Tensor q, Tensor k_cache, Tensor v_cache, Tensor block_table, "
        "Tensor seq_lens, Tensor cu_seqlens, float? scale=None) -> Tensor");
  m.def("append_kv(Tensor k, Tensor v, Tensor(a!) k_cache, Tensor(b!) v_cache, Tensor slot_mapping) -> ()");
}
