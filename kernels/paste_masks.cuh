// Mask pasting on CUDA (SOLO inference, last step), torch-free launcher API.
//
// Semantics are those of the `solo::paste_masks` schema (csrc/ops.cpp): probs [n, h, w] (contiguous) is resized
// bilinearly (align_corners=False) to the canvas (canvas_h, canvas_w), cropped to its first (valid_h, valid_w)
// samples, resized to (out_h, out_w) and compared with the threshold: out [n, out_h, out_w] (contiguous, one byte
// per pixel, 0 or 1: the storage of a bool tensor). The tap math is csrc/include/solo/bilinear.h; the compute type is
// float (double for double probs), probs of type __half / __nv_bfloat16 are upcast on load.
#pragma once

#include "common.cuh"

namespace solo {
namespace cuda {

// One launch, no scratch, no host synchronisation. Returns cudaErrorInvalidValue for non-positive sizes (n may be 0:
// nothing is launched), valid > canvas, sizes of 2^31 or more, or more than 65535 * 32 output rows; otherwise the
// launch's error.
template <typename scalar_t>
cudaError_t launch_paste_masks(const scalar_t* probs, int64_t n, int64_t h, int64_t w, int64_t canvas_h,
                               int64_t canvas_w, int64_t valid_h, int64_t valid_w, int64_t out_h, int64_t out_w,
                               double threshold, uint8_t* out, cudaStream_t stream);

}  // namespace cuda
}  // namespace solo
