// Host entry points into the shared kernel headers (csrc/include/siri), for tests only. The
// CUDA kernels cannot run without a GPU, but the math they share with the CPU is
// __host__ __device__: these probes run it on the host the way the GPU kernels use it, so a
// CPU test can check the GPU's arithmetic and reduction rules.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <vector>

#include "header_probes.h"
#include "siri/logprobs.h"
#include "siri/sampling.h"

namespace py = pybind11;

namespace {

// The decode-time softmax state as a GPU thread group builds it: add() element by element
// within each run of `chunk` values (one thread's share), then merge() the runs in order.
py::tuple softmax_state(const std::vector<float>& values, float inv_temp, int64_t chunk) {
  if (chunk < 1) throw py::value_error("chunk must be >= 1");
  auto total = siri::SoftmaxState<float>::empty();
  for (size_t lo = 0; lo < values.size(); lo += static_cast<size_t>(chunk)) {
    auto part = siri::SoftmaxState<float>::empty();
    for (size_t i = lo; i < values.size() && i < lo + static_cast<size_t>(chunk); ++i) part.add(values[i], inv_temp);
    total.merge(part, inv_temp);
  }
  return py::make_tuple(total.max, total.log_norm(), total.entropy());
}

// The CUDA sampler's greedy pick: `threads` threads each scan a strided share of the row
// (i = t, t + threads, ...), then their (value, index) bests are combined.
int64_t greedy_argmax(const std::vector<float>& values, int64_t threads) {
  if (threads < 1) throw py::value_error("threads must be >= 1");
  float best = -INFINITY;
  int64_t winner = -1;
  for (int64_t t = 0; t < threads; ++t) {
    float max = -INFINITY;
    int64_t argmax = -1;
    for (int64_t i = t; i < static_cast<int64_t>(values.size()); i += threads) {
      const float v = siri::argmax_key(values[i]);
      if (siri::argmax_better(v, i, max, argmax)) {
        max = v;
        argmax = i;
      }
    }
    if (siri::argmax_better(max, argmax, best, winner)) {
      best = max;
      winner = argmax;
    }
  }
  return winner;
}

}  // namespace

void register_header_probes(py::module_& m) {
  m.def("_softmax_state", &softmax_state,
        "Test probe: (max, log_norm, entropy) of softmax(values * inv_temp) built with the shared "
        "SoftmaxState's add() within runs of `chunk` values and merge() across them (fp32)",
        py::arg("values"), py::arg("inv_temp"), py::arg("chunk"));
  m.def("_greedy_argmax", &greedy_argmax,
        "Test probe: the CUDA sampler's greedy index of `values` with `threads` strided threads, "
        "by the shared argmax_key / argmax_better rule",
        py::arg("values"), py::arg("threads"));
  register_attention_probes(m);
}
