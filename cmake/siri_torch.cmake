# Torch for siri._C. Sets SIRI_TORCH_LIBRARIES (what _C links for ATen and the op registry)
# and SIRI_TORCH_ROOT (the torch package directory: include/, lib/). A CPU-only build caches
# nothing about torch, so a build directory reconfigured from another environment follows
# that environment's torch.
#
# With SIRI_CUDA: torch's own CMake package, which also brings the CUDA toolkit's targets.
# Without: torch's headers and libraries by path, the way torch.utils.cpp_extension builds a
# CPU extension. torch's CMake package cannot serve a CPU-only build when torch itself is a
# CUDA build (what `pip install torch` gives on Linux) and the CUDA toolkit is missing or
# partial: it stops with "Your installed Caffe2 version uses CUDA but I cannot find the CUDA
# libraries", although the extension needs none of them.
if(SIRI_CUDA)
  find_package(Torch REQUIRED)
  get_filename_component(SIRI_TORCH_ROOT "${TORCH_INSTALL_PREFIX}" ABSOLUTE)
  set(SIRI_TORCH_LIBRARIES ${TORCH_LIBRARIES})
else()
  execute_process(
    COMMAND "${Python_EXECUTABLE}" -c
            "import os, torch; print(os.path.dirname(torch.__file__) + ';' + str(int(torch._C._GLIBCXX_USE_CXX11_ABI)), end='')"
    OUTPUT_VARIABLE _siri_torch ERROR_VARIABLE _siri_torch_error RESULT_VARIABLE _siri_torch_rc)
  if(NOT _siri_torch_rc EQUAL 0)
    message(FATAL_ERROR "siri: cannot import torch with ${Python_EXECUTABLE}; install torch first "
                        "(see README, 'Install'):\n${_siri_torch_error}")
  endif()
  list(GET _siri_torch 0 SIRI_TORCH_ROOT)
  list(GET _siri_torch 1 _siri_cxx11_abi)
  add_library(siri_torch_cpu INTERFACE)
  target_include_directories(siri_torch_cpu SYSTEM INTERFACE
    "${SIRI_TORCH_ROOT}/include" "${SIRI_TORCH_ROOT}/include/torch/csrc/api/include")
  target_compile_definitions(siri_torch_cpu INTERFACE _GLIBCXX_USE_CXX11_ABI=${_siri_cxx11_abi})
  foreach(_siri_lib c10 torch_cpu torch)
    find_library(_siri_torch_${_siri_lib}_path ${_siri_lib} PATHS "${SIRI_TORCH_ROOT}/lib" REQUIRED NO_DEFAULT_PATH
                 NO_CACHE)
    target_link_libraries(siri_torch_cpu INTERFACE "${_siri_torch_${_siri_lib}_path}")
  endforeach()
  set(SIRI_TORCH_LIBRARIES siri_torch_cpu)
  message(STATUS "siri: CPU-only build against torch in ${SIRI_TORCH_ROOT} (by path, not torch's CMake package)")
endif()
