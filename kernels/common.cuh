// Helpers shared by the torch-free CUDA kernels in kernels/*.cu.
//
// The part above the `__CUDACC__` guard is plain host C++ (accumulation types, grid-sizing helpers) so the
// launch glue in csrc/cuda/*.cpp, compiled by the host compiler, can include the launcher headers; the part
// below it (conversions, vector loads, block reductions) is device code and only seen by nvcc.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <atomic>
#include <cstddef>
#include <cstdint>

namespace solo {
namespace cuda {

// Math and reductions run in float for float/half/bfloat16 inputs and in double for double inputs (DESIGN.md,
// principle 6); losses and saved sums are returned in this type.
template <typename T>
struct AccType {
  using type = float;
};
template <>
struct AccType<double> {
  using type = double;
};
template <typename T>
using acc_t = typename AccType<T>::type;

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
inline int64_t round_up(int64_t a, int64_t b) { return ceil_div(a, b) * b; }

// Number of SMs of the current device, queried once per device and cached: grid sizes are derived from it, and
// cudaDeviceGetAttribute is cheap but not free on every launch. Races only ever store the same value.
inline int sm_count() {
  constexpr int kMaxDevices = 64;
  static std::atomic<int> cache[kMaxDevices];  // static storage: zero-initialised
  int dev = 0;
  if (cudaGetDevice(&dev) != cudaSuccess) return 1;  // the launch that follows reports the error
  if (dev >= 0 && dev < kMaxDevices) {
    const int cached = cache[dev].load(std::memory_order_relaxed);
    if (cached > 0) return cached;
  }
  int sms = 0;
  if (cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess || sms <= 0) return 1;
  if (dev >= 0 && dev < kMaxDevices) cache[dev].store(sms, std::memory_order_relaxed);
  return sms;
}

// Largest gridDim.y / gridDim.z.
constexpr int64_t kMaxGridY = 65535;

// Whether `ptr` can be read/written with `bytes`-wide aligned vector accesses.
inline bool is_aligned(const void* ptr, size_t bytes) {
  return ptr == nullptr || reinterpret_cast<uintptr_t>(ptr) % bytes == 0;
}

}  // namespace cuda
}  // namespace solo

#if defined(__CUDACC__)

namespace solo {
namespace cuda {

// Conversions to and from the accumulation type. Explicit intrinsics, not conversion operators: the torch
// extension build defines __CUDA_NO_HALF_CONVERSIONS__ / __CUDA_NO_BFLOAT16_CONVERSIONS__.
__device__ __forceinline__ float to_acc(float v) { return v; }
__device__ __forceinline__ double to_acc(double v) { return v; }
__device__ __forceinline__ float to_acc(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_acc(__nv_bfloat16 v) { return __bfloat162float(v); }
__device__ __forceinline__ float to_acc(uint8_t v) { return static_cast<float>(v); }

template <typename T>
__device__ __forceinline__ T from_acc(acc_t<T> v);
template <>
__device__ __forceinline__ float from_acc<float>(float v) {
  return v;
}
template <>
__device__ __forceinline__ double from_acc<double>(double v) {
  return v;
}
template <>
__device__ __forceinline__ __half from_acc<__half>(float v) {
  return __float2half_rn(v);
}
template <>
__device__ __forceinline__ __nv_bfloat16 from_acc<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}

// N consecutive elements moved as one aligned access (one 16-byte load for 4 floats / 8 halves, several for
// wider types).
template <typename T, int N>
struct alignas(sizeof(T) * N) Vec {
  T v[N];
};

template <typename T, int N>
__device__ __forceinline__ Vec<T, N> load_vec(const T* base, int64_t vec_index) {
  return reinterpret_cast<const Vec<T, N>*>(base)[vec_index];
}

template <typename T, int N>
__device__ __forceinline__ void store_vec(T* base, int64_t vec_index, const Vec<T, N>& v) {
  reinterpret_cast<Vec<T, N>*>(base)[vec_index] = v;
}

// Sum of K values over the block, valid in thread 0. blockDim.x must be a multiple of 32 (at most 1024). The
// shuffle tree and the order of the warp sums are fixed, so the result is bit-reproducible for a given block size.
// `shared` holds K * 32 values; the function ends with a barrier so `shared` can be reused straight away.
template <int K, typename A>
__device__ __forceinline__ void block_sum(A (&v)[K], A* shared) {
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  const int num_warps = blockDim.x >> 5;
#pragma unroll
  for (int k = 0; k < K; ++k) {
#pragma unroll
    for (int offset = 16; offset > 0; offset >>= 1) v[k] += __shfl_down_sync(0xffffffffu, v[k], offset);
  }
  if (lane == 0) {
#pragma unroll
    for (int k = 0; k < K; ++k) shared[k * 32 + warp] = v[k];
  }
  __syncthreads();
  if (warp == 0) {
#pragma unroll
    for (int k = 0; k < K; ++k) {
      v[k] = lane < num_warps ? shared[k * 32 + lane] : A(0);
#pragma unroll
      for (int offset = 16; offset > 0; offset >>= 1) v[k] += __shfl_down_sync(0xffffffffu, v[k], offset);
    }
  }
  __syncthreads();
}

}  // namespace cuda
}  // namespace solo

#endif  // __CUDACC__
