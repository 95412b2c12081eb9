// Matrix NMS on CUDA (SOLOv2), torch-free launcher API.
//
// Semantics are those of the `solo::matrix_nms` schema (csrc/ops.cpp) and of solo.ops.reference.matrix_nms:
//   masks: n masks of hw bytes each (bool or uint8, nonzero = inside), mask i at masks + i * mask_stride (each
//   mask's hw bytes contiguous; masks may overlap, e.g. a stride of 0); labels [n] int64; scores [n] float32 in
//   priority order (index 0 first); areas [n] float32 or nullptr (counted from the masks); kernel 0 gaussian /
//   1 linear; sigma >= 0. out [n] float32 = scores * decay. The per-pair math is in csrc/include/solo/matrix_nms.h.
#pragma once

#include "common.cuh"

namespace solo {
namespace cuda {

// Bytes of scratch launch_matrix_nms needs: the bit-packed masks (hw / 8 bytes per mask, rounded up to 32-bit
// words), per-mask area and word range, the n x n int32 intersections and the per-mask compensation.
size_t matrix_nms_scratch_bytes(int64_t n, int64_t hw);

// Five stream-ordered steps, no host synchronisation: a memset of the intersections, then kernels for (1) bit
// packing + areas + word ranges, (2) tiled pairwise AND/popcount over the 64 x 64 tiles on and above the diagonal
// (split over the words when there are few tiles; exact integer atomics), (3) compensation (column max), (4) decay
// (column min) and the output. Deterministic. Returns the first CUDA error (cudaErrorInvalidValue for negative sizes,
// hw >= 2^31, a negative mask_stride, a bad kernel or too small a scratch buffer).
cudaError_t launch_matrix_nms(const uint8_t* masks, int64_t n, int64_t hw, int64_t mask_stride, const int64_t* labels,
                              const float* scores, const float* areas, int kernel, float sigma, float* out,
                              void* scratch, size_t scratch_bytes, cudaStream_t stream);

}  // namespace cuda
}  // namespace solo
