// CPU kernel of solo::sigmoid_focal_loss_fwd: loss and gradient in one pass over the logits.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <type_traits>
#include <vector>

#include "solo/fast_math.h"
#include "solo/focal_loss.h"
#include "../op_checks.h"
#include "isa.h"

namespace solo {
namespace {

// Rows are processed in chunks of a fixed element count, whatever the number of threads, and the chunk sums are
// added in chunk order: the summed loss is bit-identical from run to run and across thread counts.
constexpr int64_t kChunkElements = 8192;

namespace baseline {
#include "focal_loss_loops.h"
}  // namespace baseline

#if SOLO_HAVE_AVX2_VARIANT
SOLO_BEGIN_AVX2
namespace avx2 {
#include "focal_loss_loops.h"
}  // namespace avx2
SOLO_END_AVX2
#endif

template <int kGamma, typename scalar_t, typename acc_t>
acc_t focal_rows_isa(bool avx2, const scalar_t* x, const int64_t* labels, int64_t r0, int64_t r1, int64_t C,
                     acc_t alpha, acc_t gamma, acc_t* loss_out, scalar_t* grad_out) {
#if SOLO_HAVE_AVX2_VARIANT
  if (avx2) return avx2::focal_rows_any<kGamma>(x, labels, r0, r1, C, alpha, gamma, loss_out, grad_out);
#endif
  return baseline::focal_rows_any<kGamma>(x, labels, r0, r1, C, alpha, gamma, loss_out, grad_out);
}

std::tuple<at::Tensor, at::Tensor> sigmoid_focal_loss_fwd_cpu(const at::Tensor& logits, const at::Tensor& labels,
                                                               double alpha, double gamma, int64_t reduction,
                                                               bool compute_grad) {
  TORCH_CHECK(logits.device().is_cpu(), "sigmoid_focal_loss: logits must be a CPU tensor, got ", logits.device());
  checks::focal_loss_inputs(logits, labels, reduction, gamma);

  const at::Tensor x = logits.contiguous();
  const at::Tensor y = labels.contiguous();
  const int64_t N = x.size(0);
  const int64_t C = x.size(1);
  const int64_t* lab = y.data_ptr<int64_t>();
  for (int64_t n = 0; n < N; ++n) {
    TORCH_CHECK(lab[n] <= C, "sigmoid_focal_loss: labels must be < 0 (ignored), 0..C-1 (class) or C (background) with C=",
                C, ", but labels[", n, "] = ", lab[n]);
  }

  const auto acc_dtype = x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  at::Tensor loss = reduction == 0 ? at::empty({N, C}, x.options().dtype(acc_dtype))
                                   : at::empty({}, x.options().dtype(acc_dtype));
  at::Tensor grad = compute_grad ? at::empty({N, C}, x.options()) : at::empty({0}, x.options());

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "sigmoid_focal_loss_fwd_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* xp = x.data_ptr<scalar_t>();
    acc_t* loss_p = reduction == 0 ? loss.data_ptr<acc_t>() : nullptr;
    scalar_t* grad_p = compute_grad ? grad.data_ptr<scalar_t>() : nullptr;
    const int64_t rows_per_chunk = std::max<int64_t>(1, kChunkElements / std::max<int64_t>(C, 1));
    const int64_t num_chunks = (N + rows_per_chunk - 1) / rows_per_chunk;
    std::vector<acc_t> partial(num_chunks, acc_t(0));
    const bool gamma2 = gamma == 2.0;
    const bool avx2 = cpu::use_avx2();
    at::parallel_for(0, num_chunks, 1, [&](int64_t begin, int64_t end) {
      for (int64_t k = begin; k < end; ++k) {
        const int64_t r0 = k * rows_per_chunk;
        const int64_t r1 = std::min(N, r0 + rows_per_chunk);
        partial[k] =
            gamma2 ? focal_rows_isa<2>(avx2, xp, lab, r0, r1, C, acc_t(alpha), acc_t(gamma), loss_p, grad_p)
                   : focal_rows_isa<-1>(avx2, xp, lab, r0, r1, C, acc_t(alpha), acc_t(gamma), loss_p, grad_p);
      }
    });
    if (reduction == 1) {
      acc_t total = 0;
      for (acc_t v : partial) total += v;
      *loss.data_ptr<acc_t>() = total;
    }
  });
  return {loss, grad};
}

}  // namespace

TORCH_LIBRARY_IMPL(solo, CPU, m) { m.impl("sigmoid_focal_loss_fwd", &sigmoid_focal_loss_fwd_cpu); }

}  // namespace solo
