// The schema of every siri op, in one place. Implementations register per backend in
// bindings/<op>.cpp (CPU) and bindings/cuda/<op>_cuda.cpp (CUDA); fake kernels, autograd
// rules and docstrings live in siri/ops/<op>.py.
#include <torch/library.h>

TORCH_LIBRARY(siri, m) {
  m.def("group_advantages(Tensor rewards, int group_size, float eps, bool scale_by_std) -> Tensor");
}
