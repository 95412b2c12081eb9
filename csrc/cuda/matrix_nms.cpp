// CUDA launch glue of solo::matrix_nms: argument checks (the rules and messages of the CPU kernel,
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

#include "matrix_nms.cuh"

namespace solo {
namespace {

void check_matrix_nms_inputs(const at::Tensor& masks, const at::Tensor& labels, const at::Tensor& scores,
                             const std::optional<at::Tensor>& areas, int64_t kernel, double sigma) {
  TORCH_CHECK(masks.is_cuda(), "matrix_nms: masks must be a CUDA tensor, got ", masks.device());
  TORCH_CHECK(masks.dim() == 3, "matrix_nms: masks must be 3-D [N, H, W], got shape ", masks.sizes());
  TORCH_CHECK(masks.scalar_type() == at::kBool || masks.scalar_type() == at::kByte,
              "matrix_nms: masks must be bool or uint8, got ", masks.scalar_type());
  const int64_t n = masks.size(0);
  TORCH_CHECK(labels.dim() == 1 && labels.size(0) == n, "matrix_nms: labels must have shape [", n,
              "] to match masks, got ", labels.sizes());
  TORCH_CHECK(labels.scalar_type() == at::kLong, "matrix_nms: labels must be int64, got ", labels.scalar_type());
  TORCH_CHECK(scores.dim() == 1 && scores.size(0) == n, "matrix_nms: scores must have shape [", n,
              "] to match masks, got ", scores.sizes());
  TORCH_CHECK(at::isFloatingType(scores.scalar_type()), "matrix_nms: scores must be floating point, got ",
              scores.scalar_type());
  TORCH_CHECK(labels.device() == masks.device(), "matrix_nms: labels must be on the device of masks (", masks.device(),
              "), got ", labels.device());
  TORCH_CHECK(scores.device() == masks.device(), "matrix_nms: scores must be on the device of masks (", masks.device(),
              "), got ", scores.device());
  if (areas.has_value()) {
    TORCH_CHECK(areas->dim() == 1 && areas->size(0) == n, "matrix_nms: areas must have shape [", n,
                "] to match masks, got ", areas->sizes());
    const auto at = areas->scalar_type();
    TORCH_CHECK(at != at::kBool && (at::isIntegralType(at, false) || at::isFloatingType(at)),
                "matrix_nms: areas must be an integer or floating point tensor, got ", at);
    TORCH_CHECK(areas->device() == masks.device(), "matrix_nms: areas must be on the device of masks (",
                masks.device(), "), got ", areas->device());
  }
  TORCH_CHECK(kernel == 0 || kernel == 1, "matrix_nms: kernel must be 0 (gaussian) or 1 (linear), got ", kernel);
  TORCH_CHECK(std::isfinite(sigma) && sigma >= 0, "matrix_nms: sigma must be a finite number >= 0, got ", sigma);
  TORCH_CHECK(n <= std::numeric_limits<int32_t>::max(), "matrix_nms: at most 2^31 - 1 masks, got ", n);
  TORCH_CHECK(masks.size(1) * masks.size(2) <= std::numeric_limits<int32_t>::max(),
              "matrix_nms: masks must have at most 2^31 - 1 pixels each, got ", masks.size(1), " x ", masks.size(2));
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
