// The production split-plan helpers of siri._C (attention_plan.cpp).
#pragma once

#include <pybind11/pybind11.h>

// Adds attention_split_plan, graph_max_splits and ATTENTION_PARTIAL_BYTES to the module.
void register_attention_plan(pybind11::module_& m);
