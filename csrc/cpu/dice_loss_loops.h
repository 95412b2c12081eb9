// The loops of the CPU Dice loss kernels (csrc/cpu/dice_loss.cpp). No include guard and no includes: the kernel
// file includes this twice, once per instruction set (see csrc/cpu/isa.h), inside a namespace.

template <typename acc_t>
SOLO_HOST_DEVICE acc_t sigmoid_cpu(acc_t x) {
  if constexpr (std::is_same_v<acc_t, float>) {
    return math::sigmoid_from_exp(x, math::exp_nonpos(x < 0 ? x : -x));
  } else {
    return math::sigmoid(x);
  }
}


// Gradient of one span [k0, k1) of one instance row, given that row's coefficients cp and ct.
template <typename scalar_t, typename target_t, typename acc_t>
void dice_bwd_span(const scalar_t* __restrict xr, const scalar_t* __restrict yr, const target_t* __restrict tr,
                   scalar_t* __restrict gxr, scalar_t* __restrict gyr, int64_t k0, int64_t k1, acc_t cp, acc_t ct) {
  if (yr) {
    SOLO_SIMD
    for (int64_t k = k0; k < k1; ++k) {
      const acc_t sx = sigmoid_cpu<acc_t>(static_cast<acc_t>(xr[k]));
      const acc_t sy = sigmoid_cpu<acc_t>(static_cast<acc_t>(yr[k]));
      const acc_t g = cp * (sx * sy) + ct * static_cast<acc_t>(tr[k]);
      gxr[k] = static_cast<scalar_t>(g * sx * (acc_t(1) - sx) * sy);
      gyr[k] = static_cast<scalar_t>(g * sy * (acc_t(1) - sy) * sx);
    }
  } else {
    SOLO_SIMD
    for (int64_t k = k0; k < k1; ++k) {
      const acc_t p = sigmoid_cpu<acc_t>(static_cast<acc_t>(xr[k]));
      const acc_t g = cp * p + ct * static_cast<acc_t>(tr[k]);
      gxr[k] = static_cast<scalar_t>(g * p * (acc_t(1) - p));
    }
  }
}

// The three sums (sum p t, sum p^2, sum t^2) of one instance row of length L.
template <typename scalar_t, typename target_t, typename acc_t>
void dice_fwd_row(const scalar_t* __restrict xr, const scalar_t* __restrict yr, const target_t* __restrict tr,
                  int64_t L, acc_t* out) {
  acc_t a = 0, b = 0, c = 0;
  for (int64_t k0 = 0; k0 < L; k0 += kBlock) {
    const int64_t k1 = std::min(L, k0 + kBlock);
    acc_t ba = 0, bb = 0, bc = 0;
    if (yr) {
      SOLO_SIMD_SUM(ba, bb, bc)
      for (int64_t k = k0; k < k1; ++k) {
        const acc_t p = sigmoid_cpu<acc_t>(static_cast<acc_t>(xr[k])) * sigmoid_cpu<acc_t>(static_cast<acc_t>(yr[k]));
        const acc_t tv = static_cast<acc_t>(tr[k]);
        ba += p * tv;
        bb += p * p;
        bc += tv * tv;
      }
    } else {
      SOLO_SIMD_SUM(ba, bb, bc)
      for (int64_t k = k0; k < k1; ++k) {
        const acc_t p = sigmoid_cpu<acc_t>(static_cast<acc_t>(xr[k]));
        const acc_t tv = static_cast<acc_t>(tr[k]);
        ba += p * tv;
        bb += p * p;
        bc += tv * tv;
      }
    }
    a += ba;
    b += bb;
    c += bc;
  }
  out[0] = a;
  out[1] = b;
  out[2] = c;
}
