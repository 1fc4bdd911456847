// Framework-free helpers shared by the CPU (C++) and CUDA kernels.
// Nothing here may include torch or any other framework header.
#pragma once

#include <cmath>
#include <cstdint>

#if defined(__CUDACC__)
#define SIRI_HOST_DEVICE __host__ __device__ __forceinline__
#define SIRI_DEVICE __device__ __forceinline__
#else
#define SIRI_HOST_DEVICE inline
#define SIRI_DEVICE inline
#endif

namespace siri {

// Build-time description of the CPU SIMD level the kernels were compiled for.
inline const char* simd_level() {
#if defined(__AVX512F__) && defined(__AVX512BF16__)
  return "AVX512+BF16";  // the CPU attention kernel's bf16 dot products (cpu/bf16_dot.h)
#elif defined(__AVX512F__)
  return "AVX512";
#elif defined(__AVX2__)
  return "AVX2";
#elif defined(__AVX__)
  return "AVX";
#elif defined(__SSE4_2__)
  return "SSE4.2";
#elif defined(__ARM_NEON)
  return "NEON";
#else
  return "scalar";
#endif
}

}  // namespace siri
