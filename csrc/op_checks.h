// Argument checks shared by the CPU kernels (csrc/cpu) and the CUDA glue (csrc/cuda): one rule set and one error
// message per argument, whatever the device. Each kernel checks its own device first (is_cpu / is_cuda), then
// calls these. Needs ATen; the torch-free math lives in csrc/include/solo.
#pragma once

#include <ATen/ATen.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <optional>
#include <utility>

#include "solo/grid_targets.h"

namespace solo {
namespace checks {

inline void focal_loss_inputs(const at::Tensor& logits, const at::Tensor& labels, int64_t reduction, double gamma) {
  TORCH_CHECK(labels.device() == logits.device(), "sigmoid_focal_loss: labels must be on the same device as logits (",
              logits.device(), "), got ", labels.device());
  TORCH_CHECK(logits.dim() == 2, "sigmoid_focal_loss: logits must be 2-D [N, C], got shape ", logits.sizes());
  TORCH_CHECK(at::isFloatingType(logits.scalar_type()),
              "sigmoid_focal_loss: logits must be float16, bfloat16, float32 or float64, got ", logits.scalar_type());
  TORCH_CHECK(labels.scalar_type() == at::kLong, "sigmoid_focal_loss: labels must be int64, got ",
              labels.scalar_type());
  TORCH_CHECK(labels.dim() == 1 && labels.size(0) == logits.size(0), "sigmoid_focal_loss: labels must have shape [",
              logits.size(0), "] to match logits ", logits.sizes(), ", got ", labels.sizes());
  TORCH_CHECK(reduction == 0 || reduction == 1, "sigmoid_focal_loss: reduction must be 0 (none) or 1 (sum), got ",
              reduction);
  TORCH_CHECK(gamma >= 0, "sigmoid_focal_loss: gamma must be >= 0, got ", gamma);
  TORCH_CHECK(logits.size(1) < (int64_t(1) << 31), "sigmoid_focal_loss: logits must have fewer than 2^31 classes, got ",
              logits.size(1));
}

// fn: "dice_loss" (forward) or "dice_loss_backward".
inline void dice_loss_inputs(const char* fn, const at::Tensor& logits, const at::Tensor& targets,
                             const std::optional<at::Tensor>& y_logits) {
  TORCH_CHECK(logits.dim() == 2, fn, ": logits must be 2-D [P, L], got shape ", logits.sizes());
  TORCH_CHECK(at::isFloatingType(logits.scalar_type()), fn,
              ": logits must be float16, bfloat16, float32 or float64, got ", logits.scalar_type());
  TORCH_CHECK(targets.sizes() == logits.sizes(), fn, ": targets must have the shape of logits ", logits.sizes(),
              ", got ", targets.sizes());
  const auto tt = targets.scalar_type();
  TORCH_CHECK(tt == at::kBool || tt == at::kByte || at::isFloatingType(tt), fn,
              ": targets must be bool, uint8 or floating point, got ", tt);
  TORCH_CHECK(targets.device() == logits.device(), fn, ": targets must be on the device of logits (",
              logits.device(), "), got ", targets.device());
  if (y_logits.has_value()) {
    TORCH_CHECK(y_logits->sizes() == logits.sizes(), fn, ": y_logits must have the shape of logits ",
                logits.sizes(), ", got ", y_logits->sizes());
    TORCH_CHECK(y_logits->scalar_type() == logits.scalar_type(), fn, ": y_logits must have the dtype of logits (",
                logits.scalar_type(), "), got ", y_logits->scalar_type());
    TORCH_CHECK(y_logits->device() == logits.device(), fn, ": y_logits must be on the device of logits (",
                logits.device(), "), got ", y_logits->device());
  }
}

inline void dice_loss_bwd_inputs(const at::Tensor& grad_loss, const at::Tensor& logits, const at::Tensor& sums) {
  const int64_t P = logits.size(0);
  TORCH_CHECK(grad_loss.numel() == P, "dice_loss_backward: grad_loss must have ", P, " elements, got ",
              grad_loss.sizes());
  TORCH_CHECK(sums.dim() == 2 && sums.size(0) == P && sums.size(1) == 3, "dice_loss_backward: sums must have shape [",
              P, ", 3], got ", sums.sizes());
  TORCH_CHECK(grad_loss.device() == logits.device() && sums.device() == logits.device(),
              "dice_loss_backward: grad_loss and sums must be on the device of logits (", logits.device(), "), got ",
              grad_loss.device(), " and ", sums.device());
}

// --- assign_grid_targets ------------------------------------------------------------------------------------------

// masks of assign_grid_targets_mass (after the device check).
inline void grid_mass_inputs(const at::Tensor& masks) {
  TORCH_CHECK(masks.dim() == 3, "assign_grid_targets_mass: masks must be 3-D [M, H, W], got shape ", masks.sizes());
  TORCH_CHECK(masks.scalar_type() == at::kBool || masks.scalar_type() == at::kByte,
              "assign_grid_targets_mass: masks must be bool or uint8, got ", masks.scalar_type());
}

// The per-instance inputs of assign_grid_targets_cells: mass [M, 3], boxes [M, 4], labels [M], image_ids [M].
inline void grid_instances(const char* fn, const at::Tensor& mass, const at::Tensor& boxes, const at::Tensor& labels,
                           const at::Tensor& image_ids) {
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
}

// Builds the GridConfig of the cells op from its schema arguments (checked).
inline grid::GridConfig grid_config(const char* fn, int64_t height, int64_t width, at::IntArrayRef num_grids,
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

// Every argument of assign_grid_targets_cells (after the device check of mass); returns the grid.
inline grid::GridConfig grid_cells_inputs(const char* fn, const at::Tensor& mass, const at::Tensor& boxes,
                                          const at::Tensor& labels, const at::Tensor& image_ids, int64_t batch_size,
                                          int64_t height, int64_t width, at::IntArrayRef num_grids,
                                          at::ArrayRef<double> scale_ranges, double sigma, int64_t num_classes,
                                          int64_t mode) {
  grid_instances(fn, mass, boxes, labels, image_ids);
  TORCH_CHECK(batch_size >= 0, fn, ": batch_size must be >= 0, got ", batch_size);
  TORCH_CHECK(num_classes >= 1, fn, ": num_classes must be >= 1, got ", num_classes);
  TORCH_CHECK(mode == 0 || mode == 1, fn, ": mode must be 0 (solo) or 1 (solov2), got ", mode);
  return grid_config(fn, height, width, num_grids, scale_ranges, sigma);
}

// --- matrix_nms ---------------------------------------------------------------------------------------------------

// kernel: 0 (gaussian) or 1 (linear), the values of math::kMatrixNmsGaussian / kMatrixNmsLinear.
inline void matrix_nms_inputs(const at::Tensor& masks, const at::Tensor& labels, const at::Tensor& scores,
                              const std::optional<at::Tensor>& areas, int64_t kernel, double sigma) {
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
}

// The per-mask pixel count of matrix_nms (int32 indices in both kernels).
inline void matrix_nms_pixels(const at::Tensor& masks) {
  TORCH_CHECK(masks.size(1) * masks.size(2) <= std::numeric_limits<int32_t>::max(),
              "matrix_nms: masks must have at most 2^31 - 1 pixels each, got ", masks.size(1), " x ", masks.size(2));
}

// --- paste_masks --------------------------------------------------------------------------------------------------

inline void paste_masks_inputs(const at::Tensor& probs, at::IntArrayRef canvas_size, at::IntArrayRef valid_size,
                               at::IntArrayRef out_size, double threshold) {
  TORCH_CHECK(probs.dim() == 3, "paste_masks: probs must be 3-D [N, h, w], got shape ", probs.sizes());
  TORCH_CHECK(at::isFloatingType(probs.scalar_type()),
              "paste_masks: probs must be float16, bfloat16, float32 or float64, got ", probs.scalar_type());
  TORCH_CHECK(probs.size(1) > 0 && probs.size(2) > 0, "paste_masks: probs must have h, w > 0, got shape ",
              probs.sizes());
  TORCH_CHECK(probs.size(1) < (int64_t(1) << 31) && probs.size(2) < (int64_t(1) << 31),
              "paste_masks: probs h, w must be < 2^31, got shape ", probs.sizes());
  const std::pair<const char*, at::IntArrayRef> sizes[] = {
      {"canvas_size", canvas_size}, {"valid_size", valid_size}, {"out_size", out_size}};
  for (const auto& [name, s] : sizes) {
    TORCH_CHECK(s.size() == 2 && s[0] > 0 && s[1] > 0 && s[0] < (int64_t(1) << 31) && s[1] < (int64_t(1) << 31),
                "paste_masks: ", name, " must be two positive integers (h, w) below 2^31, got ", s);
  }
  TORCH_CHECK(valid_size[0] <= canvas_size[0] && valid_size[1] <= canvas_size[1],
              "paste_masks: valid_size ", valid_size, " must fit inside canvas_size ", canvas_size);
  TORCH_CHECK(std::isfinite(threshold), "paste_masks: threshold must be a finite number, got ", threshold);
}

// --- downsample_masks ---------------------------------------------------------------------------------------------

inline void downsample_masks_inputs(const at::Tensor& masks, int64_t stride) {
  TORCH_CHECK(masks.dim() == 3, "downsample_masks: masks must be 3-D [M, H, W], got shape ", masks.sizes());
  TORCH_CHECK(masks.scalar_type() == at::kBool || masks.scalar_type() == at::kByte,
              "downsample_masks: masks must be bool or uint8, got ", masks.scalar_type());
  TORCH_CHECK(stride > 0, "downsample_masks: stride must be a positive integer, got ", stride);
  TORCH_CHECK(masks.size(1) % stride == 0, "downsample_masks: stride ", stride, " must divide the mask height H = ",
              masks.size(1));
  TORCH_CHECK(masks.size(2) % stride == 0, "downsample_masks: stride ", stride, " must divide the mask width W = ",
              masks.size(2));
}

}  // namespace checks
}  // namespace solo
