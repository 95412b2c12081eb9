// Argument checks shared by the CPU kernels (csrc/cpu) and the CUDA glue (csrc/cuda): one rule set and one error
// message per argument, whatever the device. Each kernel checks its own device first (is_cpu / is_cuda), then
// calls these. Needs ATen; the torch-free math lives in csrc/include/solo.
#pragma once

#include <ATen/ATen.h>

#include <optional>

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

}  // namespace checks
}  // namespace solo
