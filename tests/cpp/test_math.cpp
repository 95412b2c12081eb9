// Unit tests of the shared per-element math in csrc/include/solo/*.h: the very functions the CPU and CUDA kernels
// call. Plain C++17 with a tiny check harness (no test framework); the process exits non-zero on any failure.
// Registered with ctest by CMakeLists.txt.
//
// Oracles are independent of the code under test: naive textbook formulas evaluated in long double (80-bit on
// x86-64, ~19 significant digits), and central finite differences of those formulas, also in long double.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "solo/dice_loss.h"
#include "solo/fast_math.h"
#include "solo/focal_loss.h"
#include "test_util.h"

namespace {

using namespace solo_test;
using LD = long double;

// |got - ref| <= rtol |ref| + atol, and both finite.
void check_close(const char* what, LD got, LD ref, LD rtol, LD atol, const std::string& ctx) {
  const bool ok = std::isfinite(got) && std::isfinite(ref) && std::fabs(got - ref) <= rtol * std::fabs(ref) + atol;
  report(ok, fmt("%s: got %.12Lg, want %.12Lg (rtol %.1Lg, atol %.1Lg) %s", what, got, ref, rtol, atol, ctx.c_str()));
}

// ---------------------------------------------------------------------------------------------------------------
// Naive long-double references.

LD sigmoid_ld(LD x) { return 1.0L / (1.0L + std::exp(-x)); }

// log(sigmoid(x)) to full relative precision: directly where sigmoid(x) is small, as log1p(-(1 - sigmoid(x)))
// where it is close to 1 (plain log would cancel there, and finite differences below would amplify that).
LD log_sigmoid_ld(LD x) { return x < 0 ? std::log(sigmoid_ld(x)) : std::log1p(-sigmoid_ld(-x)); }

// Focal loss straight from its definition: -alpha (1-p)^g log p, or -(1-alpha) p^g log(1-p), with 1 - p taken
// as sigmoid(-x) and log(1 - p) = log(sigmoid(-x)).
LD focal_ref(LD x, bool positive, LD alpha, LD gamma) {
  if (positive) return -alpha * std::pow(sigmoid_ld(-x), gamma) * log_sigmoid_ld(x);
  return -(1.0L - alpha) * std::pow(sigmoid_ld(x), gamma) * log_sigmoid_ld(-x);
}

LD focal_ref_grad_fd(LD x, bool positive, LD alpha, LD gamma) {
  const LD h = 1e-6L;
  return (focal_ref(x + h, positive, alpha, gamma) - focal_ref(x - h, positive, alpha, gamma)) / (2.0L * h);
}

// ---------------------------------------------------------------------------------------------------------------
// Focal loss

template <typename T>
void test_focal_vs_reference(T rtol_loss, T rtol_grad_fd, T atol) {
  const char* tname = sizeof(T) == 4 ? "float" : "double";
  const T gammas[] = {T(0), T(0.5), T(1), T(2), T(3.5)};
  const T alphas[] = {T(0.25), T(0.5)};
  for (T gamma : gammas) {
    for (T alpha : alphas) {
      for (int i = -600; i <= 600; ++i) {
        const T x = T(i) * T(0.05);  // [-30, 30]
        for (int positive = 0; positive < 2; ++positive) {
          T loss, grad;
          solo::math::focal_loss_element<T>(x, positive != 0, alpha, gamma, &loss, &grad);
          const std::string ctx =
              fmt("[%s x=%g positive=%d alpha=%g gamma=%g]", tname, double(x), positive, double(alpha), double(gamma));
          check_close("focal loss vs naive formula", loss, focal_ref(LD(x), positive, alpha, gamma), rtol_loss, atol,
                      ctx);
          // The finite difference has truncation + round-off error ~1e-12 relative: fine for both types.
          check_close("focal grad vs finite difference", grad, focal_ref_grad_fd(LD(x), positive, alpha, gamma),
                      rtol_grad_fd, atol, ctx);
          // Sign: the loss of a positive falls as x grows, that of a negative rises.
          report(positive ? grad <= T(0) : grad >= T(0), "focal grad sign " + ctx);

          // The gamma == 2 specialisation (a square instead of pow) must agree bit for bit with the generic path.
          if (gamma == T(2)) {
            const T e = solo::math::exp_(x < T(0) ? x : -x);
            const T l1p = solo::math::log1p_(e);
            const auto a = solo::math::focal_loss_from_exp<2>(x, positive != 0, e, l1p, alpha, gamma);
            const auto b = solo::math::focal_loss_from_exp<-1>(x, positive != 0, e, l1p, alpha, gamma);
            report(a.loss == b.loss && a.grad == b.grad, "focal kGamma=2 == generic " + ctx);
          }
        }
      }
    }
  }
}

template <typename T>
void test_focal_extremes() {
  const char* tname = sizeof(T) == 4 ? "float" : "double";
  const T xs[] = {T(-1e4), T(-100), T(-89), T(-88), T(88), T(89), T(100), T(1e4)};
  const T gammas[] = {T(0), T(0.5), T(2), T(3.5)};
  const T alpha = T(0.25);
  for (T x : xs) {
    for (T gamma : gammas) {
      for (int positive = 0; positive < 2; ++positive) {
        T loss, grad;
        solo::math::focal_loss_element<T>(x, positive != 0, alpha, gamma, &loss, &grad);
        const std::string ctx = fmt("[%s x=%g positive=%d gamma=%g]", tname, double(x), positive, double(gamma));
        report(std::isfinite(loss) && std::isfinite(grad) && loss >= T(0), "focal finite at extreme x " + ctx);
        // Confidently wrong: the loss grows like a_t |x| and the gradient tends to -+a_t (softplus is linear).
        const bool wrong = positive ? x < T(0) : x > T(0);
        if (wrong) {
          const T a_t = positive ? alpha : T(1) - alpha;
          check_close("focal loss, confidently wrong", loss, LD(a_t) * std::fabs(LD(x)), 1e-6L, 0, ctx);
          check_close("focal grad, confidently wrong", grad, positive ? -LD(a_t) : LD(a_t), 1e-6L, 0, ctx);
        } else {
          // Confidently right: loss and gradient vanish (exponentially small, possibly 0 after underflow).
          report(loss < T(1e-30) && std::fabs(grad) < T(1e-30), "focal vanishes when confidently right " + ctx);
        }
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Sigmoid and the fast CPU transcendental functions

template <typename T>
void test_sigmoid() {
  const char* tname = sizeof(T) == 4 ? "float" : "double";
  const T inf = std::numeric_limits<T>::infinity();
  report(solo::math::sigmoid(T(0)) == T(0.5), fmt("sigmoid(0) == 0.5 [%s]", tname));
  report(solo::math::sigmoid(T(1e4)) == T(1), fmt("sigmoid(1e4) == 1 [%s]", tname));
  report(solo::math::sigmoid(T(-1e4)) == T(0), fmt("sigmoid(-1e4) == 0 [%s]", tname));
  report(solo::math::sigmoid(inf) == T(1), fmt("sigmoid(+inf) == 1 [%s]", tname));
  report(solo::math::sigmoid(-inf) == T(0), fmt("sigmoid(-inf) == 0 [%s]", tname));
  // Large negative inputs keep their relative precision instead of collapsing to 0 (as 1 - sigmoid(-x) would).
  const T x_small = sizeof(T) == 4 ? T(-80) : T(-700);
  check_close("sigmoid tail", solo::math::sigmoid(x_small), sigmoid_ld(LD(x_small)), sizeof(T) == 4 ? 1e-5L : 1e-12L, 0,
              fmt("[%s x=%g]", tname, double(x_small)));
  for (int i = -400; i <= 400; ++i) {
    const T x = T(i) * T(0.1);
    const T e = solo::math::exp_(x < T(0) ? x : -x);
    const std::string ctx = fmt("[%s x=%g]", tname, double(x));
    const LD rtol = sizeof(T) == 4 ? 1e-6L : 1e-14L;
    check_close("sigmoid", solo::math::sigmoid(x), sigmoid_ld(LD(x)), rtol, 0, ctx);
    check_close("sigmoid_from_exp", solo::math::sigmoid_from_exp(x, e), sigmoid_ld(LD(x)), rtol, 0, ctx);
  }
}

void test_fast_math() {
  // exp_nonpos: a few ulp (float ulp = 1.2e-7 relative) on (-87, 0], exactly 0 below (the result would be a
  // float denormal there).
  for (int i = 0; i < 87000; ++i) {
    const float x = -0.001f * float(i);
    check_close("exp_nonpos", solo::math::exp_nonpos(x), std::exp(LD(x)), 6e-7L, 0, fmt("[x=%g]", double(x)));
  }
  report(solo::math::exp_nonpos(0.0f) == 1.0f, "exp_nonpos(0) == 1");
  report(solo::math::exp_nonpos(-100.0f) == 0.0f, "exp_nonpos(-100) == 0");
  report(solo::math::exp_nonpos(-1e30f) == 0.0f, "exp_nonpos(-1e30) == 0");
  // log1p_unit on [0, 1], including tiny arguments where log(1 + e) would lose everything.
  for (int i = 0; i <= 10000; ++i) {
    const float e = 1e-4f * float(i);
    check_close("log1p_unit", solo::math::log1p_unit(e), std::log1p(LD(e)), 6e-7L, 1e-30L, fmt("[e=%g]", double(e)));
  }
  for (float e : {1e-30f, 1e-20f, 1e-10f, 1e-7f}) {
    check_close("log1p_unit tiny", solo::math::log1p_unit(e), std::log1p(LD(e)), 6e-7L, 0, fmt("[e=%g]", double(e)));
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Dice loss

struct DiceCase {
  std::vector<LD> x, y, t;  // y empty: plain SOLO
};

// Naive loss in long double: p = sigmoid(x) [* sigmoid(y)], L = 1 - 2 sum(p t) / (sum p^2 + eps + sum t^2 + eps).
LD dice_ref(const DiceCase& c, LD eps) {
  LD a = 0, b = 0, d = 0;
  for (size_t k = 0; k < c.x.size(); ++k) {
    const LD p = sigmoid_ld(c.x[k]) * (c.y.empty() ? 1.0L : sigmoid_ld(c.y[k]));
    a += p * c.t[k];
    b += p * p;
    d += c.t[k] * c.t[k];
  }
  return 1.0L - 2.0L * a / ((b + eps) + (d + eps));
}

// Loss and analytic gradients with the shared functions in type T: sums, dice_loss_from_sums, dice_grad_coeffs,
// then the chain rule of the kernels (dp/dx = p (1 - p), or sx (1 - sx) sy and sy (1 - sy) sx when decoupled).
template <typename T>
void dice_analytic(const DiceCase& c, T eps, T g, T* loss, std::vector<T>* gx, std::vector<T>* gy) {
  const size_t n = c.x.size();
  std::vector<T> sx(n), sy(n, T(1)), p(n);
  T a = 0, b = 0, d = 0;
  for (size_t k = 0; k < n; ++k) {
    sx[k] = solo::math::sigmoid(T(c.x[k]));
    if (!c.y.empty()) sy[k] = solo::math::sigmoid(T(c.y[k]));
    p[k] = sx[k] * sy[k];
    const T t = T(c.t[k]);
    a += p[k] * t;
    b += p[k] * p[k];
    d += t * t;
  }
  *loss = solo::math::dice_loss_from_sums(a, b, d, eps);
  T cp, ct;
  solo::math::dice_grad_coeffs(a, b, d, eps, g, &cp, &ct);
  gx->assign(n, T(0));
  gy->assign(n, T(0));
  for (size_t k = 0; k < n; ++k) {
    const T gp = cp * p[k] + ct * T(c.t[k]);
    (*gx)[k] = gp * sx[k] * (T(1) - sx[k]) * sy[k];
    if (!c.y.empty()) (*gy)[k] = gp * sy[k] * (T(1) - sy[k]) * sx[k];
  }
}

template <typename T>
void test_dice(T rtol_loss, T tol_grad) {
  const char* tname = sizeof(T) == 4 ? "float" : "double";
  std::mt19937_64 rng(20240601);
  std::uniform_real_distribution<double> logit(-4.0, 4.0);
  std::uniform_real_distribution<double> unit(0.0, 1.0);
  const LD eps = 1e-3L;
  for (int trial = 0; trial < 200; ++trial) {
    const size_t n = 1 + trial % 9;
    const bool decoupled = trial % 2 == 1;
    const bool soft_targets = trial % 4 >= 2;  // binary masks, or soft targets in [0, 1]
    DiceCase c;
    for (size_t k = 0; k < n; ++k) {
      c.x.push_back(LD(T(logit(rng))));  // representable in T: the oracle sees the inputs the code sees
      if (decoupled) c.y.push_back(LD(T(logit(rng))));
      c.t.push_back(soft_targets ? LD(T(unit(rng))) : LD(unit(rng) < 0.5 ? 0 : 1));
    }
    if (trial == 0) c.t.assign(n, 0.0L);  // empty target: the eps terms keep the loss finite
    const T g = T(0.5 + unit(rng));        // incoming gradient of this instance's loss
    T loss;
    std::vector<T> gx, gy;
    dice_analytic<T>(c, T(eps), g, &loss, &gx, &gy);
    const std::string ctx = fmt("[%s trial=%d n=%zu decoupled=%d soft=%d]", tname, trial, n, int(decoupled),
                                int(soft_targets));
    check_close("dice_loss_from_sums vs naive formula", loss, dice_ref(c, eps), rtol_loss, 1e-7L, ctx);

    // Central differences of g * L in long double, per coordinate.
    const LD h = 1e-7L;
    LD scale = 0;
    std::vector<LD> fdx(n), fdy(n);
    for (size_t k = 0; k < n; ++k) {
      DiceCase cp = c, cm = c;
      cp.x[k] += h;
      cm.x[k] -= h;
      fdx[k] = LD(g) * (dice_ref(cp, eps) - dice_ref(cm, eps)) / (2 * h);
      scale = std::fmax(scale, std::fabs(fdx[k]));
      if (decoupled) {
        cp = c;
        cm = c;
        cp.y[k] += h;
        cm.y[k] -= h;
        fdy[k] = LD(g) * (dice_ref(cp, eps) - dice_ref(cm, eps)) / (2 * h);
        scale = std::fmax(scale, std::fabs(fdy[k]));
      }
    }
    // Gradient entries are compared relative to the largest one (small entries carry absolute error only).
    for (size_t k = 0; k < n; ++k) {
      check_close("dice grad_x vs finite difference", gx[k], fdx[k], tol_grad, tol_grad * scale,
                  ctx + fmt(" k=%zu", k));
      if (decoupled) {
        check_close("dice grad_y vs finite difference", gy[k], fdy[k], tol_grad, tol_grad * scale,
                    ctx + fmt(" k=%zu", k));
      }
    }
  }
  // No prediction mass and no target: 1 - 0 / (2 eps) = 1.
  report(solo::math::dice_loss_from_sums(T(0), T(0), T(0), T(eps)) == T(1), fmt("dice of empty sums is 1 [%s]", tname));
  // A perfect prediction of a large mask: loss -> 0 (a = b = c = n). 1 - (a number close to 1) cancels, so the
  // error is absolute, a few ulp of 1.
  check_close("dice of a perfect prediction", solo::math::dice_loss_from_sums(T(1000), T(1000), T(1000), T(eps)),
              LD(eps) / (1000.0L + LD(eps)), 0, 4 * std::numeric_limits<T>::epsilon(), fmt("[%s]", tname));
}

}  // namespace

int main() {
  test_focal_vs_reference<float>(2e-5f, 1e-4f, 1e-35f);
  test_focal_vs_reference<double>(1e-12, 1e-8, 1e-300);
  test_focal_extremes<float>();
  test_focal_extremes<double>();
  test_sigmoid<float>();
  test_sigmoid<double>();
  test_fast_math();
  test_dice<float>(1e-5f, 1e-4f);
  test_dice<double>(1e-12, 1e-7);
  return finish("test_math");
}
