// The loops of the CPU focal loss kernel (csrc/cpu/focal_loss.cpp). No include guard and no includes: the
// kernel file includes this twice, once per instruction set (see csrc/cpu/isa.h), inside a namespace.

template <int kGamma, typename acc_t>
SOLO_HOST_DEVICE math::FocalTerm<acc_t> focal_term(acc_t x, bool positive, acc_t alpha, acc_t gamma) {
  if constexpr (std::is_same_v<acc_t, float>) {
    const float e = math::exp_nonpos(x < 0 ? x : -x);
    return math::focal_loss_from_exp<kGamma>(x, positive, e, math::log1p_unit(e), alpha, gamma);
  } else {
    const acc_t e = math::exp_(x < 0 ? x : -x);
    return math::focal_loss_from_exp<kGamma>(x, positive, e, math::log1p_(e), alpha, gamma);
  }
}

// One chunk of rows. kLoss / kGrad select at compile time which outputs are written, so the class loop is
// straight-line code that the compiler vectorises (fast_math.h has no libm calls).
template <int kGamma, bool kLoss, bool kGrad, typename scalar_t, typename acc_t>
acc_t focal_rows(const scalar_t* x, const int64_t* labels, int64_t row_begin, int64_t row_end, int64_t C, acc_t alpha,
                 acc_t gamma, acc_t* loss_out, scalar_t* grad_out) {
  acc_t total = 0;
  for (int64_t n = row_begin; n < row_end; ++n) {
    const int64_t label = labels[n];
    const scalar_t* xr = x + n * C;
    if (label < 0) {  // ignored row: no loss, no gradient
      if constexpr (kLoss) std::fill(loss_out + n * C, loss_out + (n + 1) * C, acc_t(0));
      if constexpr (kGrad) std::fill(grad_out + n * C, grad_out + (n + 1) * C, scalar_t(0));
      continue;
    }
    acc_t row_sum = 0;
    // 32-bit class index: comparing a 64-bit index with the label inside a float loop has no vector type in
    // GCC's vectoriser and silently keeps the loop scalar (C < 2^31 is checked by the caller).
    const int32_t label32 = static_cast<int32_t>(label);
    const int32_t C32 = static_cast<int32_t>(C);
    acc_t* lrow = kLoss ? loss_out + n * C : nullptr;
    scalar_t* grow = kGrad ? grad_out + n * C : nullptr;
    SOLO_SIMD_SUM(row_sum)
    for (int32_t c = 0; c < C32; ++c) {
      const math::FocalTerm<acc_t> r = focal_term<kGamma>(static_cast<acc_t>(xr[c]), c == label32, alpha, gamma);
      row_sum += r.loss;
      if constexpr (kLoss) lrow[c] = r.loss;
      if constexpr (kGrad) grow[c] = static_cast<scalar_t>(r.grad);
    }
    total += row_sum;
  }
  return total;
}

template <int kGamma, typename scalar_t, typename acc_t>
acc_t focal_rows_any(const scalar_t* x, const int64_t* labels, int64_t r0, int64_t r1, int64_t C, acc_t alpha,
                     acc_t gamma, acc_t* loss_out, scalar_t* grad_out) {
  if (loss_out && grad_out) return focal_rows<kGamma, true, true>(x, labels, r0, r1, C, alpha, gamma, loss_out, grad_out);
  if (loss_out) return focal_rows<kGamma, true, false>(x, labels, r0, r1, C, alpha, gamma, loss_out, grad_out);
  if (grad_out) return focal_rows<kGamma, false, true>(x, labels, r0, r1, C, alpha, gamma, loss_out, grad_out);
  return focal_rows<kGamma, false, false>(x, labels, r0, r1, C, alpha, gamma, loss_out, grad_out);
}
