// The pybind11 module _siri_probes: test-only host entry points into the framework-free kernel
// headers (csrc/include/siri). The CUDA kernels cannot run without a GPU, but the math they
// share with the CPU is __host__ __device__: these probes run it on the host the way the GPU
// kernels use it, so a CPU test can check the GPU's arithmetic, traversal and planning rules.
//
// A module of its own so the production extension siri._C carries nothing test-only: siri
// never imports it; setup.py builds it next to the tests (tests/_siri_probes*.so), which import
// it as `import _siri_probes`. It includes no torch header and links no torch library.
#include <pybind11/pybind11.h>

#include <cstdint>

#include "probes.h"
#include "siri/philox.h"

namespace py = pybind11;

namespace {

// The generator behind sample_tokens, for known-answer tests.
py::tuple philox4x32_10(uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3, uint32_t k0, uint32_t k1) {
  const siri::Philox4x32 r = siri::philox4x32_10(c0, c1, c2, c3, k0, k1);
  return py::make_tuple(r.v[0], r.v[1], r.v[2], r.v[3]);
}

}  // namespace

PYBIND11_MODULE(_siri_probes, m) {
  m.doc() = "siri's test probes of the shared kernel headers (not part of the siri package)";
  m.def("philox4x32_10", &philox4x32_10, "Philox4x32-10 of counter (c0..c3) under key (k0, k1): 4 uint32",
        py::arg("c0"), py::arg("c1"), py::arg("c2"), py::arg("c3"), py::arg("k0"), py::arg("k1"));
  register_header_probes(m);
  register_attention_probes(m);
}
