// CUDA launch glue of solo::downsample_masks: argument checks (csrc/op_checks.h, shared with the CPU kernel
// csrc/cpu/downsample_masks.cpp), device guard, current stream, output from torch's caching allocator. The kernel is
// torch-free, in kernels/downsample_masks.cu; it reads the masks through their strides, so nothing is copied.
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "../op_checks.h"
#include "downsample_masks.cuh"

namespace solo {
namespace {

at::Tensor downsample_masks_cuda(const at::Tensor& masks, int64_t stride) {
  TORCH_CHECK(masks.is_cuda(), "downsample_masks: masks must be a CUDA tensor, got ", masks.device());
  checks::downsample_masks_inputs(masks, stride);
  const int64_t M = masks.size(0);
  const int64_t H = masks.size(1);
  const int64_t W = masks.size(2);
  c10::cuda::CUDAGuard guard(masks.device());
  at::Tensor out = at::empty({M, H / stride, W / stride}, masks.options().dtype(at::kByte));
  if (out.numel() == 0) return out;
  // bool and uint8 are both one byte (a bool holds 0/1, a uint8 mask any value: nonzero = 1).
  const cudaError_t err = cuda::launch_downsample_masks(
      static_cast<const uint8_t*>(masks.const_data_ptr()), M, H, W, masks.stride(0), masks.stride(1),
      masks.stride(2), stride, out.mutable_data_ptr<uint8_t>(), at::cuda::getCurrentCUDAStream());
  C10_CUDA_CHECK(err);
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(solo, CUDA, m) { m.impl("downsample_masks", &downsample_masks_cuda); }

}  // namespace solo
