// The pybind11 module siri._C. Loading it also registers the TORCH_LIBRARY ops, since they
// are linked into the same shared library. Tensor ops are reached through torch.ops.siri.*.
// Only production entries live here; the tests' probes of the kernel headers are the separate
// module _siri_probes (bindings/probes).
#include <pybind11/pybind11.h>
#include <torch/version.h>

#include "attention_plan.h"
#include "siri/common.h"
#include "siri/head_dims.h"

#define SIRI_STR_(x) #x
#define SIRI_STR(x) SIRI_STR_(x)

#ifndef SIRI_CUDA_VERSION
#define SIRI_CUDA_VERSION ""
#endif

namespace py = pybind11;

static py::dict build_info() {
  py::dict info;
  info["version"] = SIRI_VERSION;
  py::list backends;
  backends.append("cpu");
  if (SIRI_WITH_CUDA) backends.append("cuda");
  info["backends"] = backends;
  info["cuda_archs"] = SIRI_CUDA_ARCHS;
  info["cuda_version"] = SIRI_CUDA_VERSION;
  info["compiler"] = SIRI_COMPILER;
  info["simd"] = siri::simd_level();
  info["torch_version"] = SIRI_STR(TORCH_VERSION_MAJOR) "." SIRI_STR(TORCH_VERSION_MINOR) "." SIRI_STR(TORCH_VERSION_PATCH);
#ifdef _OPENMP
  info["openmp"] = true;
#else
  info["openmp"] = false;
#endif
  return info;
}

PYBIND11_MODULE(_C, m) {
  m.doc() = "siri compiled kernels (ops are registered under torch.ops.siri)";
  m.def("build_info", &build_info,
        "Dict describing this build: version, backends, cuda_archs, cuda_version, compiler, simd, "
        "torch_version, openmp");
  py::tuple head_dims(siri::kNumSupportedHeadDims);
  for (int i = 0; i < siri::kNumSupportedHeadDims; ++i) head_dims[i] = siri::kSupportedHeadDims[i];
  // The head sizes the attention ops accept (siri/head_dims.h), for the engine's model check.
  m.attr("SUPPORTED_HEAD_DIMS") = head_dims;
  register_attention_plan(m);
}
