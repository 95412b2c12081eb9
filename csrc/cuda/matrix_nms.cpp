// CUDA launch glue of solo::matrix_nms: argument checks (csrc/op_checks.h, shared with the CPU kernel
// csrc/cpu/matrix_nms.cpp), device guard, current stream, output and scratch from torch's caching allocator. The
// kernels are torch-free, in kernels/matrix_nms.cu.
//
// The order of the scores is not checked here: a check would need a device-to-host sync. Index order is the priority
// order (the Python wrapper checks it with SOLO_CHECK_VALUES=1).
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <cmath>
#include <limits>
#include <optional>

#include "../op_checks.h"
#include "matrix_nms.cuh"

namespace solo {
namespace {

void check_matrix_nms_inputs(const at::Tensor& masks, const at::Tensor& labels, const at::Tensor& scores,
                             const std::optional<at::Tensor>& areas, int64_t kernel, double sigma) {
  TORCH_CHECK(masks.is_cuda(), "matrix_nms: masks must be a CUDA tensor, got ", masks.device());
  checks::matrix_nms_inputs(masks, labels, scores, areas, kernel, sigma);
  const int64_t n = masks.size(0);
  TORCH_CHECK(n <= std::numeric_limits<int32_t>::max(), "matrix_nms: at most 2^31 - 1 masks, got ", n);
  checks::matrix_nms_pixels(masks);
}

at::Tensor matrix_nms_cuda(const at::Tensor& masks, const at::Tensor& labels, const at::Tensor& scores,
                           const std::optional<at::Tensor>& areas, int64_t kernel, double sigma) {
  check_matrix_nms_inputs(masks, labels, scores, areas, kernel, sigma);
  c10::cuda::CUDAGuard guard(masks.device());
  const int64_t n = masks.size(0);
  const int64_t hw = masks.size(1) * masks.size(2);
  at::Tensor out = at::empty({n}, scores.options().dtype(at::kFloat));
  if (n == 0) return out;
  // Each mask's H x W block must be contiguous; the stride between masks may be anything (a slice of a batch).
  const bool block_contiguous = (masks.size(2) <= 1 || masks.stride(2) == 1) &&
                                (masks.size(1) <= 1 || masks.stride(1) == masks.size(2));
  const at::Tensor m = block_contiguous ? masks : masks.contiguous();
  const at::Tensor lab = labels.contiguous();
  const at::Tensor s = scores.to(at::kFloat).contiguous();
  const at::Tensor given = areas.has_value() ? areas->to(at::kFloat).contiguous() : at::Tensor();
  const size_t scratch_bytes = cuda::matrix_nms_scratch_bytes(n, hw);
  at::Tensor scratch = at::empty({static_cast<int64_t>(scratch_bytes)}, masks.options().dtype(at::kByte));
  const cudaError_t err = cuda::launch_matrix_nms(
      static_cast<const uint8_t*>(m.const_data_ptr()), n, hw, n > 1 ? m.stride(0) : hw, lab.const_data_ptr<int64_t>(),
      s.const_data_ptr<float>(), given.defined() ? given.const_data_ptr<float>() : nullptr, static_cast<int>(kernel),
      static_cast<float>(sigma), out.mutable_data_ptr<float>(), scratch.mutable_data_ptr(), scratch_bytes,
      at::cuda::getCurrentCUDAStream());
  C10_CUDA_CHECK(err);
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(solo, CUDA, m) { m.impl("matrix_nms", &matrix_nms_cuda); }

}  // namespace solo
