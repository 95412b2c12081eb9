// Shared by the CUDA launch glue in csrc/cuda/*.cpp: the map from ATen's scalar types to the CUDA types the
// torch-free launchers in kernels/ are instantiated for. at::Half / at::BFloat16 have the bit layout of __half /
// __nv_bfloat16, so data pointers are reinterpreted, never converted.
#pragma once

#include <ATen/ATen.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

namespace solo {

template <typename T>
struct CudaType {
  using type = T;
};
template <>
struct CudaType<at::Half> {
  using type = __half;
};
template <>
struct CudaType<at::BFloat16> {
  using type = __nv_bfloat16;
};
template <typename T>
using cuda_type_t = typename CudaType<T>::type;

template <typename T>
struct TypeTag {
  using type = T;
};

// Calls f(TypeTag<T>{}) with the CUDA element type of a Dice target dtype (bool masks are read as uint8: one byte,
// 0 or 1).
template <typename F>
void dispatch_cuda_target(const char* fn, at::ScalarType st, F&& f) {
  switch (st) {
    case at::kBool:
    case at::kByte:
      f(TypeTag<uint8_t>{});
      break;
    case at::kHalf:
      f(TypeTag<__half>{});
      break;
    case at::kBFloat16:
      f(TypeTag<__nv_bfloat16>{});
      break;
    case at::kFloat:
      f(TypeTag<float>{});
      break;
    case at::kDouble:
      f(TypeTag<double>{});
      break;
    default:
      TORCH_CHECK(false, fn, ": targets must be bool, uint8 or floating point, got ", st);
  }
}

}  // namespace solo
