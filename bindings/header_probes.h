// Test probes of the shared kernel headers, added to the pybind11 module siri._C.
#pragma once

#include <pybind11/pybind11.h>

void register_header_probes(pybind11::module_& m);

// The split planner probe (attention_probes.cpp); called by register_header_probes.
void register_attention_probes(pybind11::module_& m);

// The production split-plan functions (attention_plan.cpp: attention_split_plan,
// graph_max_splits); called by the module itself, not a probe.
void register_attention_plan(pybind11::module_& m);
