// Philox4x32-10, the counter-based generator of Salmon et al., "Parallel random numbers: as
// easy as 1, 2, 3" (SC'11). A draw is a pure function of (counter, key), so a sequence's
// random numbers depend only on its own seed and position, never on the batch it sits in,
// the thread that computes them, or the backend: CPU and CUDA produce the same bits.
#pragma once

#include "siri/common.h"

namespace siri {

struct Philox4x32 {
  uint32_t v[4];
};

// 32x32 -> 64-bit product split into (hi, lo).
SIRI_HOST_DEVICE uint32_t philox_mulhilo(uint32_t a, uint32_t b, uint32_t& hi) {
#if defined(__CUDA_ARCH__)
  hi = __umulhi(a, b);
  return a * b;
#else
  const uint64_t product = static_cast<uint64_t>(a) * b;
  hi = static_cast<uint32_t>(product >> 32);
  return static_cast<uint32_t>(product);
#endif
}

// Ten rounds of Philox4x32 on `counter` under `key` (the Random123 reference parameters).
SIRI_HOST_DEVICE Philox4x32 philox4x32_10(uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3,
                                          uint32_t k0, uint32_t k1) {
  constexpr uint32_t kMul0 = 0xD2511F53u, kMul1 = 0xCD9E8D57u;
  constexpr uint32_t kWeyl0 = 0x9E3779B9u, kWeyl1 = 0xBB67AE85u;
#if defined(__CUDA_ARCH__)
#pragma unroll
#endif
  for (int round = 0; round < 10; ++round) {
    uint32_t hi0, hi1;
    const uint32_t lo0 = philox_mulhilo(kMul0, c0, hi0);
    const uint32_t lo1 = philox_mulhilo(kMul1, c2, hi1);
    c0 = hi1 ^ c1 ^ k0;
    c1 = lo1;
    c2 = hi0 ^ c3 ^ k1;
    c3 = lo0;
    k0 += kWeyl0;
    k1 += kWeyl1;
  }
  return Philox4x32{{c0, c1, c2, c3}};
}

}  // namespace siri
