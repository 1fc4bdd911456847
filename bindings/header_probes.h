// Test probes of the shared kernel headers, added to the pybind11 module siri._C.
#pragma once

#include <pybind11/pybind11.h>

void register_header_probes(pybind11::module_& m);
