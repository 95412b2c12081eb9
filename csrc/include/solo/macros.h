// Portability macros shared by the CPU (C++) and CUDA kernels.
//
// Every per-element formula of solo lives in an inline function marked SOLO_HOST_DEVICE, so the
// CPU kernels (and the C++ unit tests in tests/cpp) exercise the very arithmetic the CUDA kernels run.
#pragma once

#if defined(__CUDACC__) || defined(__HIPCC__)
#define SOLO_HOST_DEVICE __host__ __device__ __forceinline__
#elif defined(__GNUC__)
// Forced inlining: the CPU loops only vectorise when the per-element math is inlined into them.
#define SOLO_HOST_DEVICE inline __attribute__((always_inline))
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

// Vectorisation hints for the CPU loops (setup.py compiles with -fopenmp-simd: no OpenMP runtime, only the
// simd pragmas). The reduction clause lets the compiler reorder a float sum into vector lanes, which it may
// not do on its own without -ffast-math.
#define SOLO_PRAGMA(x) _Pragma(#x)
#if defined(_OPENMP) || defined(__clang__) || defined(__GNUC__)
#define SOLO_SIMD SOLO_PRAGMA(omp simd)
#define SOLO_SIMD_SUM(...) SOLO_PRAGMA(omp simd reduction(+ : __VA_ARGS__))
#else
#define SOLO_SIMD
#define SOLO_SIMD_SUM(...)
#endif
