// CUDA launch glue of solo::assign_grid_targets_mass / solo::assign_grid_targets_cells: argument checks (the rules
// and messages of the CPU kernels, csrc/cpu/assign_grid_targets.cpp), device guard, current stream, outputs and
// scratch from torch's caching allocator, and the one host sync (reading P, the number of positives). The kernels
// are torch-free, in kernels/assign_grid_targets.cu.
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <cmath>

#include "assign_grid_targets.cuh"

namespace solo {
namespace {

at::Tensor assign_grid_targets_mass_cuda(const at::Tensor& masks) {
  TORCH_CHECK(masks.is_cuda(), "assign_grid_targets_mass: masks must be a CUDA tensor, got ", masks.device());
  TORCH_CHECK(masks.dim() == 3, "assign_grid_targets_mass: masks must be 3-D [M, H, W], got shape ", masks.sizes());
  TORCH_CHECK(masks.scalar_type() == at::kBool || masks.scalar_type() == at::kByte,
              "assign_grid_targets_mass: masks must be bool or uint8, got ", masks.scalar_type());
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

grid::GridConfig make_config(const char* fn, int64_t height, int64_t width, at::IntArrayRef num_grids,
                             at::ArrayRef<double> scale_ranges, double sigma) {
  const int64_t L = static_cast<int64_t>(num_grids.size());
  TORCH_CHECK(L >= 1 && L <= grid::kMaxLevels, fn, ": num_grids must have 1 to ", grid::kMaxLevels,
              " levels, got ", L);
  TORCH_CHECK(static_cast<int64_t>(scale_ranges.size()) == 2 * L, fn,
              ": scale_ranges must hold a (lower, upper) pair per level (", 2 * L, " values), got ",
              scale_ranges.size());
  TORCH_CHECK(height >= 0 && width >= 0, fn, ": height and width must be >= 0, got ", height, " x ", width);
  TORCH_CHECK(std::isfinite(sigma) && sigma > 0, fn, ": sigma must be a finite number > 0, got ", sigma);
  grid::GridConfig cfg{};
  cfg.num_levels = static_cast<int>(L);
  int64_t cells = 0;
  for (int64_t l = 0; l < L; ++l) {
    const int64_t S = num_grids[l];
    TORCH_CHECK(S >= 1 && S <= 46340, fn, ": num_grids[", l, "] must be in [1, 46340], got ", S);
    const double lo = scale_ranges[2 * l], hi = scale_ranges[2 * l + 1];
    TORCH_CHECK(lo >= 0 && lo <= hi, fn, ": scale_ranges[", l, "] must satisfy 0 <= lower <= upper, got (", lo,
                ", ", hi, ")");
    cfg.grids[l] = static_cast<int>(S);
    cfg.lower[l] = lo;
    cfg.upper[l] = hi;
    cfg.offsets[l] = cells;
    cells += S * S;
  }
  cfg.cells_per_image = cells;
  cfg.height = static_cast<double>(height);
  cfg.width = static_cast<double>(width);
  cfg.sigma = sigma;
  return cfg;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> assign_grid_targets_cells_cuda(
    const at::Tensor& mass, const at::Tensor& boxes, const at::Tensor& labels, const at::Tensor& image_ids,
    int64_t batch_size, int64_t height, int64_t width, at::IntArrayRef num_grids, at::ArrayRef<double> scale_ranges,
    double sigma, int64_t num_classes, int64_t mode) {
  constexpr const char* fn = "assign_grid_targets";
  TORCH_CHECK(mass.is_cuda(), fn, ": mass must be a CUDA tensor, got ", mass.device());
  TORCH_CHECK(mass.dim() == 2 && mass.size(1) == 3 && mass.scalar_type() == at::kLong, fn,
              ": mass must be int64 [M, 3], got ", mass.scalar_type(), " ", mass.sizes());
  const int64_t M = mass.size(0);
  TORCH_CHECK(boxes.dim() == 2 && boxes.size(0) == M && boxes.size(1) == 4, fn, ": boxes must have shape [", M,
              ", 4], got ", boxes.sizes());
  TORCH_CHECK(at::isFloatingType(boxes.scalar_type()), fn, ": boxes must be floating point, got ",
              boxes.scalar_type());
  TORCH_CHECK(labels.dim() == 1 && labels.size(0) == M && labels.scalar_type() == at::kLong, fn,
              ": labels must be int64 [", M, "], got ", labels.scalar_type(), " ", labels.sizes());
  TORCH_CHECK(image_ids.dim() == 1 && image_ids.size(0) == M && image_ids.scalar_type() == at::kLong, fn,
              ": image_ids must be int64 [", M, "], got ", image_ids.scalar_type(), " ", image_ids.sizes());
  for (const at::Tensor* t : {&boxes, &labels, &image_ids}) {
    TORCH_CHECK(t->device() == mass.device(), fn, ": every input must be on the device of mass (", mass.device(),
                "), got ", t->device());
  }
  TORCH_CHECK(batch_size >= 0, fn, ": batch_size must be >= 0, got ", batch_size);
  TORCH_CHECK(num_classes >= 1, fn, ": num_classes must be >= 1, got ", num_classes);
  TORCH_CHECK(mode == 0 || mode == 1, fn, ": mode must be 0 (solo) or 1 (solov2), got ", mode);
  const grid::GridConfig cfg = make_config(fn, height, width, num_grids, scale_ranges, sigma);
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
