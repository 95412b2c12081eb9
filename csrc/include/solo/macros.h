// Portability macros shared by the CPU (C++) and CUDA kernels.
//
// Every per-element formula of solo lives in an inline function marked SOLO_HOST_DEVICE, so the
// CPU kernels (and the C++ unit tests in tests/cpp) exercise the very arithmetic the CUDA kernels run.
#pragma once

#if defined(__CUDACC__) || defined(__HIPCC__)
#define SOLO_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define SOLO_HOST_DEVICE inline
#endif

#include <math.h>

namespace solo {
namespace math {

// Overloads of the libm functions we need that resolve the same way in host and device code
// (std:: functions are not callable from device code; the C names exist on both sides).
SOLO_HOST_DEVICE float exp_(float x) { return ::expf(x); }
SOLO_HOST_DEVICE double exp_(double x) { return ::exp(x); }
SOLO_HOST_DEVICE float log1p_(float x) { return ::log1pf(x); }
SOLO_HOST_DEVICE double log1p_(double x) { return ::log1p(x); }
SOLO_HOST_DEVICE float pow_(float x, float y) { return ::powf(x, y); }
SOLO_HOST_DEVICE double pow_(double x, double y) { return ::pow(x, y); }

}  // namespace math
}  // namespace solo
