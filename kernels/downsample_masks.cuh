// Mask downsampling on CUDA (SOLO's mask targets), torch-free launcher API.
//
// Semantics are those of the `solo::downsample_masks` schema (csrc/ops.cpp; the rule and why it equals OpenCV's
// INTER_LINEAR resize are in csrc/include/solo/downsample_masks.h):
//   masks [m, h, w] bytes (bool or uint8, nonzero = 1) read through element strides (stride_m, stride_h, stride_w),
//   so non-contiguous views need no copy; stride s > 0 divides h and w;
//   out [m, h/s, w/s] uint8 0/1, contiguous.
#pragma once

#include "common.cuh"

namespace solo {
namespace cuda {

// One kernel launch, no host synchronisation. Returns cudaErrorInvalidValue for negative sizes, s <= 0 or an s that
// does not divide h and w, else the launch's error.
cudaError_t launch_downsample_masks(const uint8_t* masks, int64_t m, int64_t h, int64_t w, int64_t stride_m,
                                    int64_t stride_h, int64_t stride_w, int64_t s, uint8_t* out, cudaStream_t stream);

}  // namespace cuda
}  // namespace solo
