# siri_cuda_archs(<archs> <cmake_out> <torch_out>): CUDA architectures as users write them
# (90, 9.0, sm_90, compute_90, 90a, 9.0a, sm_90a, 100f; separated by ; or ,) in CMake's
# spelling ("80;90a;100") and in torch's TORCH_CUDA_ARCH_LIST spelling ("8.0;9.0a;10.0+PTX").
# The newest portable architecture (no a/f suffix: the PTX of those runs only on their own
# GPU) also embeds PTX, so a newer GPU JIT-compiles the kernels instead of failing with "no
# kernel image is available" (a list of only a/f archs gets no PTX, with a warning). A spelling
# that is not an architecture is a FATAL_ERROR naming it.
function(siri_cuda_archs archs cmake_out torch_out)
  string(REPLACE "," ";" archs "${archs}")
  set(cmake_archs "")
  set(torch_archs "")
  set(ptx_arch "")
  foreach(arch IN LISTS archs)
    string(STRIP "${arch}" a)
    string(TOLOWER "${a}" a)
    string(REGEX REPLACE "^(sm_|compute_)" "" a "${a}")
    string(REPLACE "." "" a "${a}")
    if(NOT a MATCHES "^([1-9][0-9]*)([0-9])([af]?)$")
      message(FATAL_ERROR "SIRI_CUDA_ARCHS: '${arch}' is not a CUDA architecture; write it as 90, 9.0 or sm_90 "
                          "(90a for arch-specific features)")
    endif()
    set(major "${CMAKE_MATCH_1}")
    set(minor "${CMAKE_MATCH_2}")
    set(suffix "${CMAKE_MATCH_3}")
    list(APPEND cmake_archs "${major}${minor}${suffix}")
    list(APPEND torch_archs "${major}.${minor}${suffix}")
    if(suffix STREQUAL "" AND (ptx_arch STREQUAL "" OR "${major}${minor}" GREATER ptx_arch))
      set(ptx_arch "${major}${minor}")
      set(ptx_dotted "${major}.${minor}")
    endif()
  endforeach()
  if(cmake_archs STREQUAL "")
    message(FATAL_ERROR "SIRI_CUDA_ARCHS is empty; name at least one CUDA architecture (e.g. 90)")
  endif()
  list(REMOVE_DUPLICATES cmake_archs)
  list(REMOVE_DUPLICATES torch_archs)
  if(ptx_arch STREQUAL "")
    message(WARNING "SIRI_CUDA_ARCHS ('${archs}') has only arch-specific (a/f) architectures: no PTX is "
                    "embedded, so the build runs on exactly those GPUs (add e.g. 90 for PTX)")
  else()
    list(TRANSFORM torch_archs REPLACE "^${ptx_dotted}$" "${ptx_dotted}+PTX")
  endif()
  set(${cmake_out} "${cmake_archs}" PARENT_SCOPE)
  set(${torch_out} "${torch_archs}" PARENT_SCOPE)
endfunction()

# cmake -DSIRI_ARCHS="90a;100" -P cmake/siri_cuda_archs.cmake prints both spellings (tests).
if(CMAKE_SCRIPT_MODE_FILE STREQUAL CMAKE_CURRENT_LIST_FILE)
  siri_cuda_archs("${SIRI_ARCHS}" cmake_archs torch_archs)
  message(NOTICE "cmake=${cmake_archs}")
  message(NOTICE "torch=${torch_archs}")
endif()
