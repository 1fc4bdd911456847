// The test-only pybind11 module _siri_probes (bindings/probes/module.cpp): host entry points
// into the shared kernel headers (csrc/include/siri), built beside siri._C but never part of it.
#pragma once

#include <pybind11/pybind11.h>

// Log-prob, sampler and vector-traversal math (header_probes.cpp).
void register_header_probes(pybind11::module_& m);

// The paged-attention split planner (attention_probes.cpp).
void register_attention_probes(pybind11::module_& m);
