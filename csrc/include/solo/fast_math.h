// Branch-free, table-free float versions of the two transcendental functions the losses need, written so that
// a compiler auto-vectorises loops calling them (libm calls stop vectorisation). Used by the CPU kernels; the
// CUDA kernels use the hardware expf/log1pf. Both are accurate to a few ulp over their domain (tests/cpp).
#pragma once

#include <stdint.h>

#include "solo/macros.h"

namespace solo {
namespace math {

// exp(x) for x <= 0. Cody-Waite reduction x = n ln2 + r, |r| <= ln2/2, degree-7 Taylor polynomial for exp(r)
// (truncation < 1e-8 relative), then 2^n built in the exponent bits. Below -87.3 the result would be a float
// denormal: it returns 0 there (absolute error < 1.2e-38).
SOLO_HOST_DEVICE float exp_nonpos(float x) {
  const float xc = x < -87.0f ? -87.0f : x;
  // Round-to-nearest through the 1.5 * 2^23 "magic" constant (no rint call, vectorises on plain SSE2).
  const float magic = 12582912.0f;
  const float fn = (xc * 1.44269504088896341f + magic) - magic;
  const float r = (xc - fn * 0.693359375f) - fn * -2.12194440e-4f;  // ln2 split in a high and a low part
  float p = 1.0f / 5040.0f;
  p = p * r + 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(fn) + 127) << 23;
  // A bit cast that takes no address: under `omp simd` an address-taken local becomes a per-lane array and
  // stops vectorisation.
#if defined(__CUDA_ARCH__)
  const float scale = __int_as_float(bits);
#else
  const float scale = __builtin_bit_cast(float, bits);
#endif
  return x < -87.0f ? 0.0f : p * scale;
}

// log1p(e) for e in [0, 1]: log(1 + e) = 2 atanh(s) with s = e / (2 + e) in [0, 1/3]. The series in s^2 has
// no cancellation (small e stays exact to relative precision) and its 9th term is below 1.5e-9 relative.
SOLO_HOST_DEVICE float log1p_unit(float e) {
  const float s = e / (2.0f + e);
  const float z = s * s;
  float p = 1.0f / 15.0f;
  p = p * z + 1.0f / 13.0f;
  p = p * z + 1.0f / 11.0f;
  p = p * z + 1.0f / 9.0f;
  p = p * z + 1.0f / 7.0f;
  p = p * z + 1.0f / 5.0f;
  p = p * z + 1.0f / 3.0f;
  p = p * z + 1.0f;
  return 2.0f * s * p;
}

}  // namespace math
}  // namespace solo
