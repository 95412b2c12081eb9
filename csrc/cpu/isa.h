// Runtime choice of the CPU instruction set for the hot loops.
//
// The extension is compiled for the baseline of its platform (x86-64: SSE2, 4 floats per vector) so that one
// wheel runs on every machine. The compute-bound loops (exp per element) are worth 2x more with AVX2 + FMA, so a
// kernel file compiles its loop templates twice: once plainly (namespace `baseline`) and once between
// SOLO_BEGIN_AVX2 / SOLO_END_AVX2 (namespace `avx2`), and picks one per call with use_avx2().
//
// Rules for code between the markers: only templates and functions with internal linkage (an anonymous
// namespace), and only headers included *before* the markers: an inline function with external linkage compiled
// for AVX2 could otherwise be merged by the linker into code that runs on CPUs without it. The always-inline
// math of csrc/include/solo is inlined into the AVX2 loops and compiled for AVX2 there.
//
// SOLO_CPU_ISA=baseline (environment, read per call) forces the baseline loops: the tests run both variants.
#pragma once

#include <cstdlib>
#include <cstring>

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define SOLO_HAVE_AVX2_VARIANT 1
#define SOLO_BEGIN_AVX2 _Pragma("GCC push_options") _Pragma("GCC target(\"avx2,fma\")")
#define SOLO_END_AVX2 _Pragma("GCC pop_options")
#elif defined(__x86_64__) && defined(__clang__)
#define SOLO_HAVE_AVX2_VARIANT 1
#define SOLO_BEGIN_AVX2 \
  _Pragma("clang attribute push (__attribute__((target(\"avx2,fma\"))), apply_to = function)")
#define SOLO_END_AVX2 _Pragma("clang attribute pop")
#else
#define SOLO_HAVE_AVX2_VARIANT 0
#define SOLO_BEGIN_AVX2
#define SOLO_END_AVX2
#endif

namespace solo {
namespace cpu {

// True when the AVX2 loops may run: the CPU has AVX2 and FMA and SOLO_CPU_ISA does not ask for the baseline.
inline bool use_avx2() {
#if SOLO_HAVE_AVX2_VARIANT
  static const bool supported = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  if (!supported) return false;
  const char* isa = std::getenv("SOLO_CPU_ISA");
  return isa == nullptr || std::strcmp(isa, "baseline") != 0;
#else
  return false;
#endif
}

}  // namespace cpu
}  // namespace solo
