// CUDA launch glue of solo::assign_grid_targets_mass / solo::assign_grid_targets_cells: argument checks
// (csrc/op_checks.h, shared with the CPU kernels, csrc/cpu/assign_grid_targets.cpp), device guard, current stream,
// outputs and scratch from torch's caching allocator, and the one host sync (reading P, the number of positives).
// The kernels are torch-free, in kernels/assign_grid_targets.cu.
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "../op_checks.h"
#include "assign_grid_targets.cuh"

namespace solo {
namespace {

at::Tensor assign_grid_targets_mass_cuda(const at::Tensor& masks) {
  TORCH_CHECK(masks.is_cuda(), "assign_grid_targets_mass: masks must be a CUDA tensor, got ", masks.device());
  checks::grid_mass_inputs(masks);
  c10::cuda::CUDAGuard guard(masks.device());
  const at::Tensor mk = masks.contiguous();
  const int64_t M = mk.size(0), H = mk.size(1), W = mk.size(2);
  at::Tensor out = at::empty({M, 3}, mk.options().dtype(at::kLong));
  if (M == 0) return out;
  C10_CUDA_CHECK(cuda::launch_mask_moments(static_cast<const uint8_t*>(mk.const_data_ptr()), M, H, W,
                                           mk.scalar_type() == at::kBool, out.mutable_data_ptr<int64_t>(),
                                           at::cuda::getCurrentCUDAStream()));
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> assign_grid_targets_cells_cuda(
    const at::Tensor& mass, const at::Tensor& boxes, const at::Tensor& labels, const at::Tensor& image_ids,
    int64_t batch_size, int64_t height, int64_t width, at::IntArrayRef num_grids, at::ArrayRef<double> scale_ranges,
    double sigma, int64_t num_classes, int64_t mode) {
  constexpr const char* fn = "assign_grid_targets";
  TORCH_CHECK(mass.is_cuda(), fn, ": mass must be a CUDA tensor, got ", mass.device());
  const grid::GridConfig cfg = checks::grid_cells_inputs(fn, mass, boxes, labels, image_ids, batch_size, height, width,
                                                         num_grids, scale_ranges, sigma, num_classes, mode);
  const int64_t M = mass.size(0);
  const int64_t N = batch_size * cfg.cells_per_image;
  TORCH_CHECK(N < (int64_t(1) << 31), fn, ": batch_size * sum(S^2) must be below 2^31 cells, got ", N);
  TORCH_CHECK(M < (int64_t(1) << 31), fn, ": at most 2^31 - 1 instances, got ", M);

  c10::cuda::CUDAGuard guard(mass.device());
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  const at::Tensor ms = mass.contiguous();
  const at::Tensor bx = boxes.to(at::kDouble).contiguous();
  const at::Tensor lb = labels.contiguous();
  const at::Tensor im = image_ids.contiguous();
  const size_t scratch_bytes = cuda::grid_targets_scratch_bytes(M, cfg.num_levels, N);
  at::Tensor scratch = at::empty({static_cast<int64_t>(scratch_bytes)}, ms.options().dtype(at::kByte));
  void* sp = scratch.mutable_data_ptr();
  C10_CUDA_CHECK(cuda::launch_grid_targets_count(ms.const_data_ptr<int64_t>(), bx.const_data_ptr<double>(),
                                                 im.const_data_ptr<int64_t>(), M, batch_size, cfg,
                                                 static_cast<int>(mode), sp, scratch_bytes, stream));
  // The one host sync: P sizes the outputs.
  int64_t P = 0;
  C10_CUDA_CHECK(cudaMemcpyAsync(&P, cuda::grid_targets_total(sp, M, cfg.num_levels, N), sizeof(int64_t),
                                 cudaMemcpyDeviceToHost, stream));
  C10_CUDA_CHECK(cudaStreamSynchronize(stream));
  at::Tensor out_labels = at::empty({batch_size, cfg.cells_per_image}, lb.options());
  at::Tensor pos_cells = at::empty({P}, lb.options());
  at::Tensor pos_instances = at::empty({P}, lb.options());
  C10_CUDA_CHECK(cuda::launch_grid_targets_write(
      lb.const_data_ptr<int64_t>(), im.const_data_ptr<int64_t>(), M, batch_size, cfg, num_classes,
      static_cast<int>(mode), sp, scratch_bytes, out_labels.mutable_data_ptr<int64_t>(),
      pos_cells.mutable_data_ptr<int64_t>(), pos_instances.mutable_data_ptr<int64_t>(), stream));
  return {out_labels, pos_cells, pos_instances};
}

}  // namespace

TORCH_LIBRARY_IMPL(solo, CUDA, m) {
  m.impl("assign_grid_targets_mass", &assign_grid_targets_mass_cuda);
  m.impl("assign_grid_targets_cells", &assign_grid_targets_cells_cuda);
}

}  // namespace solo
