// The harness of the GPU tests in tests/cpp/test_kernels*.cpp, on top of test_util.h: CUDA_OK, the skip without a
// CUDA device (exit code 77, which CMakeLists.txt tells ctest means "skipped"), and host conversions of the element
// types the launchers take. Host C++: the launcher headers are included with the host compiler, as the torch glue in
// csrc/cuda does.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <type_traits>

#include "test_util.h"

#define CUDA_OK(expr)                                                                                 \
  do {                                                                                                \
    const cudaError_t err_ = (expr);                                                                  \
    if (err_ != cudaSuccess) {                                                                        \
      std::fprintf(stderr, "%s:%d: %s -> %s\n", __FILE__, __LINE__, #expr, cudaGetErrorString(err_)); \
      std::exit(1);                                                                                   \
    }                                                                                                 \
  } while (0)

namespace solo_test {

// The exit code of a test that did not run (ctest: skipped).
constexpr int kSkipped = 77;

// True, after printing "<name>: no CUDA device, skipped", when there is no CUDA device to test on.
inline bool no_cuda_device(const char* name) {
  int devices = 0;
  if (cudaGetDeviceCount(&devices) == cudaSuccess && devices > 0) return false;
  std::printf("%s: no CUDA device, skipped\n", name);
  return true;
}

// Host conversions (the cuda_fp16 / cuda_bf16 conversion functions are host-callable).
inline double to_double(float v) { return v; }
inline double to_double(double v) { return v; }
inline double to_double(__half v) { return __half2float(v); }
inline double to_double(__nv_bfloat16 v) { return __bfloat162float(v); }
inline double to_double(uint8_t v) { return v; }

template <typename T>
T from_double(double v) {
  if constexpr (std::is_same_v<T, __half>) {
    return __float2half_rn(static_cast<float>(v));
  } else if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    return __float2bfloat16_rn(static_cast<float>(v));
  } else {
    return static_cast<T>(v);
  }
}

template <typename T>
const char* type_name() {
  if constexpr (std::is_same_v<T, float>) return "float";
  if constexpr (std::is_same_v<T, double>) return "double";
  if constexpr (std::is_same_v<T, __half>) return "half";
  if constexpr (std::is_same_v<T, __nv_bfloat16>) return "bfloat16";
  return "uint8";
}

}  // namespace solo_test
