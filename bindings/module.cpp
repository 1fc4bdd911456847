// The pybind11 module siri._C. Loading it also registers the TORCH_LIBRARY ops, since they
// are linked into the same shared library. Tensor ops are reached through torch.ops.siri.*.
#include <pybind11/pybind11.h>
#include <torch/version.h>

#include "header_probes.h"
#include "siri/common.h"
#include "siri/philox.h"

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

// The generator behind sample_tokens, exposed so tests can check it against known answers.
static py::tuple philox4x32_10(uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3, uint32_t k0, uint32_t k1) {
  const siri::Philox4x32 r = siri::philox4x32_10(c0, c1, c2, c3, k0, k1);
  return py::make_tuple(r.v[0], r.v[1], r.v[2], r.v[3]);
}

PYBIND11_MODULE(_C, m) {
  m.doc() = "siri compiled kernels (ops are registered under torch.ops.siri)";
  m.def("build_info", &build_info,
        "Dict describing this build: version, backends, cuda_archs, cuda_version, compiler, simd, "
        "torch_version, openmp");
  m.def("philox4x32_10", &philox4x32_10, "Philox4x32-10 of counter (c0..c3) under key (k0, k1): 4 uint32",
        py::arg("c0"), py::arg("c1"), py::arg("c2"), py::arg("c3"), py::arg("k0"), py::arg("k1"));
  register_attention_plan(m);
  register_header_probes(m);
}
