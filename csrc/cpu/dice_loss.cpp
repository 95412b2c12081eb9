// CPU kernels of solo::dice_loss_fwd / solo::dice_loss_bwd (plain and decoupled Dice loss).
//
// Forward: one pass over each instance row for (sum p t, sum p^2, sum t^2). Backward: one pass writing the
// gradient. p = sigmoid(x) or sigmoid(x) sigmoid(y) is recomputed on the fly: never stored.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <type_traits>

#include "solo/dice_loss.h"
#include "solo/fast_math.h"
#include "../op_checks.h"
#include "isa.h"

namespace solo {
namespace {

// Elements per inner block: sums of a block are formed in registers, then added to the row total, which keeps
// the float rounding error at O(block + L / block) ulp instead of O(L).
constexpr int64_t kBlock = 512;

namespace baseline {
#include "dice_loss_loops.h"
}  // namespace baseline

#if SOLO_HAVE_AVX2_VARIANT
SOLO_BEGIN_AVX2
namespace avx2 {
#include "dice_loss_loops.h"
}  // namespace avx2
SOLO_END_AVX2
#endif

template <typename scalar_t, typename target_t, typename acc_t>
void dice_fwd_row_isa(bool avx2, const scalar_t* xr, const scalar_t* yr, const target_t* tr, int64_t L, acc_t* out) {
#if SOLO_HAVE_AVX2_VARIANT
  if (avx2) return avx2::dice_fwd_row(xr, yr, tr, L, out);
#endif
  baseline::dice_fwd_row(xr, yr, tr, L, out);
}

template <typename scalar_t, typename target_t, typename acc_t>
void dice_bwd_span_isa(bool avx2, const scalar_t* xr, const scalar_t* yr, const target_t* tr, scalar_t* gxr,
                       scalar_t* gyr, int64_t k0, int64_t k1, acc_t cp, acc_t ct) {
#if SOLO_HAVE_AVX2_VARIANT
  if (avx2) return avx2::dice_bwd_span(xr, yr, tr, gxr, gyr, k0, k1, cp, ct);
#endif
  baseline::dice_bwd_span(xr, yr, tr, gxr, gyr, k0, k1, cp, ct);
}

void check_dice_inputs(const char* fn, const at::Tensor& logits, const at::Tensor& targets,
                       const c10::optional<at::Tensor>& y_logits) {
  TORCH_CHECK(logits.device().is_cpu(), fn, ": logits must be a CPU tensor, got ", logits.device());
  checks::dice_loss_inputs(fn, logits, targets, y_logits);
}

// Calls f.template operator()<target_t>() with the C++ type of the targets' dtype (bool is read as uint8).
template <typename F>
void dispatch_target(at::ScalarType t, F&& f) {
  switch (t) {
    case at::kBool:
    case at::kByte:
      f(uint8_t{});
      break;
    case at::kHalf:
      f(at::Half{});
      break;
    case at::kBFloat16:
      f(at::BFloat16{});
      break;
    case at::kFloat:
      f(float{});
      break;
    case at::kDouble:
      f(double{});
      break;
    default:
      TORCH_CHECK(false, "dice_loss: unsupported targets dtype ", t);
  }
}

std::tuple<at::Tensor, at::Tensor> dice_loss_fwd_cpu(const at::Tensor& logits, const at::Tensor& targets,
                                                     const c10::optional<at::Tensor>& y_logits, double eps) {
  check_dice_inputs("dice_loss", logits, targets, y_logits);
  const at::Tensor x = logits.contiguous();
  const at::Tensor t = targets.contiguous();
  const at::Tensor y = y_logits.has_value() ? y_logits->contiguous() : at::Tensor();
  const int64_t P = x.size(0);
  const int64_t L = x.size(1);
  const auto acc_dtype = x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  at::Tensor sums = at::empty({P, 3}, x.options().dtype(acc_dtype));
  at::Tensor loss = at::empty({P}, x.options().dtype(acc_dtype));

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "dice_loss_fwd_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    dispatch_target(t.scalar_type(), [&](auto tag) {
      using target_t = decltype(tag);
      const scalar_t* xp = x.data_ptr<scalar_t>();
      const scalar_t* yp = y.defined() ? y.data_ptr<scalar_t>() : nullptr;
      const target_t* tp = static_cast<const target_t*>(t.data_ptr());
      acc_t* sp = sums.data_ptr<acc_t>();
      acc_t* lp = loss.data_ptr<acc_t>();
      const bool avx2 = cpu::use_avx2();
      // Grain 1: rows are large (tens of thousands of elements).
      at::parallel_for(0, P, 1, [&](int64_t begin, int64_t end) {
        for (int64_t i = begin; i < end; ++i) {
          acc_t* s3 = sp + 3 * i;
          dice_fwd_row_isa(avx2, xp + i * L, yp ? yp + i * L : nullptr, tp + i * L, L, s3);
          lp[i] = math::dice_loss_from_sums(s3[0], s3[1], s3[2], acc_t(eps));
        }
      });
    });
  });
  return {loss, sums};
}

std::tuple<at::Tensor, at::Tensor> dice_loss_bwd_cpu(const at::Tensor& grad_loss, const at::Tensor& logits,
                                                     const at::Tensor& targets,
                                                     const c10::optional<at::Tensor>& y_logits, const at::Tensor& sums,
                                                     double eps) {
  check_dice_inputs("dice_loss_backward", logits, targets, y_logits);
  const int64_t P = logits.size(0);
  const int64_t L = logits.size(1);
  const auto acc_dtype = logits.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  checks::dice_loss_bwd_inputs(grad_loss, logits, sums);
  const at::Tensor g = grad_loss.reshape({P}).to(acc_dtype).contiguous();
  const at::Tensor s = sums.to(acc_dtype).contiguous();
  const at::Tensor x = logits.contiguous();
  const at::Tensor t = targets.contiguous();
  const at::Tensor y = y_logits.has_value() ? y_logits->contiguous() : at::Tensor();
  at::Tensor gx = at::empty({P, L}, x.options());
  at::Tensor gy = y.defined() ? at::empty({P, L}, x.options()) : at::empty({0}, x.options());

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "dice_loss_bwd_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    dispatch_target(t.scalar_type(), [&](auto tag) {
      using target_t = decltype(tag);
      const scalar_t* xp = x.data_ptr<scalar_t>();
      const scalar_t* yp = y.defined() ? y.data_ptr<scalar_t>() : nullptr;
      const target_t* tp = static_cast<const target_t*>(t.data_ptr());
      const acc_t* gp = g.data_ptr<acc_t>();
      const acc_t* sp = s.data_ptr<acc_t>();
      scalar_t* gxp = gx.data_ptr<scalar_t>();
      scalar_t* gyp = y.defined() ? gy.data_ptr<scalar_t>() : nullptr;
      const bool avx2 = cpu::use_avx2();
      // Parallel over (row, block) pairs so a few large rows still use every core.
      const int64_t blocks_per_row = std::max<int64_t>(1, (L + 8191) / 8192);
      const int64_t span = (L + blocks_per_row - 1) / blocks_per_row;
      at::parallel_for(0, P * blocks_per_row, 1, [&](int64_t begin, int64_t end) {
        for (int64_t w = begin; w < end; ++w) {
          const int64_t i = w / blocks_per_row;
          const int64_t k0 = (w % blocks_per_row) * span;
          const int64_t k1 = std::min(L, k0 + span);
          acc_t cp, ct;
          math::dice_grad_coeffs(sp[3 * i], sp[3 * i + 1], sp[3 * i + 2], acc_t(eps), gp[i], &cp, &ct);
          dice_bwd_span_isa(avx2, xp + i * L, yp ? yp + i * L : nullptr, tp + i * L, gxp + i * L, gyp ? gyp + i * L : nullptr,
                        k0, k1, cp, ct);
        }
      });
    });
  });
  return {gx, gy};
}

}  // namespace

TORCH_LIBRARY_IMPL(solo, CPU, m) {
  m.impl("dice_loss_fwd", &dice_loss_fwd_cpu);
  m.impl("dice_loss_bwd", &dice_loss_bwd_cpu);
}

}  // namespace solo
