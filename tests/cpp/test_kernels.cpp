// GPU test of the torch-free CUDA launchers in kernels/: every launcher, every element type, against a host
// computation in double with the shared math of csrc/include/solo. Exits 77 (ctest: skipped) without a CUDA device.
//
// Host C++ on purpose: it includes the launcher headers with the host compiler, as the torch glue in csrc/cuda does.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <type_traits>
#include <vector>

#include "dice_loss.cuh"
#include "focal_loss.cuh"
#include "solo/dice_loss.h"
#include "solo/focal_loss.h"
#include "test_util_cuda.h"

namespace {

using namespace solo_test;

// Relative tolerance of a value stored in T (a few roundings of T).
template <typename T>
double tol_of() {
  if constexpr (std::is_same_v<T, double>) return 1e-12;
  if constexpr (std::is_same_v<T, float>) return 2e-5;
  if constexpr (std::is_same_v<T, __half>) return 2e-3;
  return 1.6e-2;  // bfloat16
}

// Device buffer with an optional element offset, so tests can hand the launchers misaligned pointers.
template <typename T>
struct DeviceBuffer {
  T* base = nullptr;
  size_t offset = 0;
  size_t n = 0;
  DeviceBuffer(size_t count, size_t off = 0) : offset(off), n(count) {
    CUDA_OK(cudaMalloc(&base, (count + off + 1) * sizeof(T)));
  }
  ~DeviceBuffer() { cudaFree(base); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  T* get() { return base + offset; }
  void upload(const std::vector<T>& h) {
    CUDA_OK(cudaMemcpy(get(), h.data(), h.size() * sizeof(T), cudaMemcpyHostToDevice));
  }
  std::vector<T> download() {
    std::vector<T> h(n);
    CUDA_OK(cudaMemcpy(h.data(), get(), n * sizeof(T), cudaMemcpyDeviceToHost));
    return h;
  }
};

bool close(double got, double want, double rtol, double atol) {
  return std::isfinite(got) && std::fabs(got - want) <= rtol * std::fabs(want) + atol;
}

// ---------------------------------------------------------------------------------------------------------------
// Focal loss

template <typename T>
void test_focal(int64_t N, int64_t C, double gamma, size_t misalign, cudaStream_t stream, std::mt19937& rng) {
  using A = solo::cuda::acc_t<T>;
  const double alpha = 0.25;
  const std::string ctx = std::string("[focal ") + type_name<T>() + " N=" + std::to_string(N) + " C=" +
                          std::to_string(C) + " gamma=" + std::to_string(gamma) + " misalign=" +
                          std::to_string(misalign) + "]";
  std::normal_distribution<double> logit(0.0, 4.0);
  std::uniform_int_distribution<int64_t> label(-1, C + 2);  // -1 ignored, C background, > C background too
  std::vector<T> x(N * C);
  std::vector<int64_t> y(N);
  for (auto& v : x) v = from_double<T>(logit(rng));
  for (auto& v : y) v = label(rng);

  // Host reference in double from the very inputs the device sees.
  std::vector<double> ref_loss(N * C), ref_grad(N * C);
  double ref_sum = 0, max_grad = 0;
  for (int64_t n = 0; n < N; ++n) {
    for (int64_t c = 0; c < C; ++c) {
      double l = 0, g = 0;
      if (y[n] >= 0) solo::math::focal_loss_element<double>(to_double(x[n * C + c]), y[n] == c, alpha, gamma, &l, &g);
      ref_loss[n * C + c] = l;
      ref_grad[n * C + c] = g;
      ref_sum += l;
      max_grad = std::max(max_grad, std::fabs(g));
    }
  }

  DeviceBuffer<T> dx(N * C, misalign), dgrad(N * C, misalign);
  DeviceBuffer<int64_t> dy(N);
  DeviceBuffer<A> dloss(N * C, misalign), dsum(1);
  dx.upload(x);
  dy.upload(y);

  // reduction 0 with gradient.
  CUDA_OK(solo::cuda::launch_sigmoid_focal_loss_fwd<T>(dx.get(), dy.get(), N, C, A(alpha), A(gamma), 0, dloss.get(),
                                                       dgrad.get(), nullptr, 0, stream));
  CUDA_OK(cudaStreamSynchronize(stream));
  const std::vector<A> loss = dloss.download();
  const std::vector<T> grad = dgrad.download();
  int bad_loss = 0, bad_grad = 0;
  for (int64_t i = 0; i < N * C; ++i) {
    bad_loss += !close(loss[i], ref_loss[i], tol_of<A>(), 1e-30);
    bad_grad += !close(to_double(grad[i]), ref_grad[i], tol_of<T>(), 1e-6 * max_grad + 1e-7);
  }
  report(bad_loss == 0, ctx + " elementwise loss: " + std::to_string(bad_loss) + " mismatches");
  report(bad_grad == 0, ctx + " grad: " + std::to_string(bad_grad) + " mismatches");

  // reduction 1, without gradient, twice: the sum must match and be bit-identical between runs.
  const size_t scratch_bytes = solo::cuda::focal_loss_scratch_bytes<T>(N, C, 1);
  DeviceBuffer<unsigned char> scratch(scratch_bytes);
  A sums[2];
  for (int run = 0; run < 2; ++run) {
    CUDA_OK(solo::cuda::launch_sigmoid_focal_loss_fwd<T>(dx.get(), dy.get(), N, C, A(alpha), A(gamma), 1, dsum.get(),
                                                         nullptr, scratch.get(), scratch_bytes, stream));
    CUDA_OK(cudaMemcpyAsync(&sums[run], dsum.get(), sizeof(A), cudaMemcpyDeviceToHost, stream));
    CUDA_OK(cudaStreamSynchronize(stream));
  }
  report(close(sums[0], ref_sum, 1e-5, 1e-30),
         ctx + " sum: got " + std::to_string(sums[0]) + ", want " + std::to_string(ref_sum));
  report(std::memcmp(&sums[0], &sums[1], sizeof(A)) == 0, ctx + " sum is deterministic");

  if (scratch_bytes > 0) {
    const cudaError_t err = solo::cuda::launch_sigmoid_focal_loss_fwd<T>(
        dx.get(), dy.get(), N, C, A(alpha), A(gamma), 1, dsum.get(), nullptr, scratch.get(), scratch_bytes - 1, stream);
    report(err == cudaErrorInvalidValue, ctx + " too small a scratch buffer is rejected");
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Dice loss

template <typename T, typename TT>
void test_dice(int64_t P, int64_t L, bool decoupled, size_t misalign, cudaStream_t stream, std::mt19937& rng) {
  using A = solo::cuda::acc_t<T>;
  const double eps = 1e-3;
  const std::string ctx = std::string("[dice ") + type_name<T>() + "/" + type_name<TT>() + " P=" + std::to_string(P) +
                          " L=" + std::to_string(L) + " decoupled=" + std::to_string(decoupled) +
                          " misalign=" + std::to_string(misalign) + "]";
  std::normal_distribution<double> logit(0.0, 3.0);
  std::uniform_real_distribution<double> unit(0.0, 1.0);
  std::vector<T> x(P * L), y(decoupled ? P * L : 0);
  std::vector<TT> t(P * L);
  std::vector<A> grad_loss(P);
  const bool binary = std::is_same_v<TT, uint8_t>;
  for (auto& v : x) v = from_double<T>(logit(rng));
  for (auto& v : y) v = from_double<T>(logit(rng));
  for (auto& v : t) v = from_double<TT>(binary ? (unit(rng) < 0.3 ? 1.0 : 0.0) : unit(rng));
  for (auto& v : grad_loss) v = A(0.5 + unit(rng));

  std::vector<double> ref_sums(3 * P), ref_loss(P), ref_gx(P * L), ref_gy(decoupled ? P * L : 0);
  double max_g = 0;
  for (int64_t r = 0; r < P; ++r) {
    double a = 0, b = 0, c = 0;
    for (int64_t k = 0; k < L; ++k) {
      double p = solo::math::sigmoid(to_double(x[r * L + k]));
      if (decoupled) p *= solo::math::sigmoid(to_double(y[r * L + k]));
      const double tv = to_double(t[r * L + k]);
      a += p * tv;
      b += p * p;
      c += tv * tv;
    }
    ref_sums[3 * r] = a;
    ref_sums[3 * r + 1] = b;
    ref_sums[3 * r + 2] = c;
    ref_loss[r] = solo::math::dice_loss_from_sums(a, b, c, eps);
    double cp, ct;
    solo::math::dice_grad_coeffs(a, b, c, eps, double(grad_loss[r]), &cp, &ct);
    for (int64_t k = 0; k < L; ++k) {
      const double sx = solo::math::sigmoid(to_double(x[r * L + k]));
      const double sy = decoupled ? solo::math::sigmoid(to_double(y[r * L + k])) : 1.0;
      const double gp = cp * sx * sy + ct * to_double(t[r * L + k]);
      ref_gx[r * L + k] = gp * sx * (1 - sx) * sy;
      max_g = std::max(max_g, std::fabs(ref_gx[r * L + k]));
      if (decoupled) {
        ref_gy[r * L + k] = gp * sy * (1 - sy) * sx;
        max_g = std::max(max_g, std::fabs(ref_gy[r * L + k]));
      }
    }
  }

  DeviceBuffer<T> dx(P * L, misalign), dy(decoupled ? P * L : 0, misalign), dgx(P * L, misalign),
      dgy(decoupled ? P * L : 0, misalign);
  DeviceBuffer<TT> dt(P * L, misalign);
  DeviceBuffer<A> dsums(3 * P), dloss(P), dgl(P);
  dx.upload(x);
  dt.upload(t);
  dgl.upload(grad_loss);
  if (decoupled) dy.upload(y);
  const T* yptr = decoupled ? dy.get() : nullptr;

  const size_t scratch_bytes = solo::cuda::dice_loss_scratch_bytes<T>(P, L);
  DeviceBuffer<unsigned char> scratch(scratch_bytes);
  std::vector<A> sums_runs[2];
  for (int run = 0; run < 2; ++run) {
    CUDA_OK((solo::cuda::launch_dice_loss_fwd<T, TT>(dx.get(), dt.get(), yptr, P, L, A(eps), dsums.get(), dloss.get(),
                                                      scratch.get(), scratch_bytes, stream)));
    CUDA_OK(cudaStreamSynchronize(stream));
    sums_runs[run] = dsums.download();
  }
  const std::vector<A> loss = dloss.download();
  report(std::memcmp(sums_runs[0].data(), sums_runs[1].data(), 3 * P * sizeof(A)) == 0,
         ctx + " sums are deterministic");
  int bad_sums = 0, bad_loss = 0;
  for (int64_t i = 0; i < 3 * P; ++i) bad_sums += !close(sums_runs[0][i], ref_sums[i], 1e-5, 1e-6);
  for (int64_t r = 0; r < P; ++r) bad_loss += !close(loss[r], ref_loss[r], 1e-5, 1e-6);
  report(bad_sums == 0, ctx + " sums: " + std::to_string(bad_sums) + " mismatches");
  report(bad_loss == 0, ctx + " loss: " + std::to_string(bad_loss) + " mismatches");

  CUDA_OK((solo::cuda::launch_dice_loss_bwd<T, TT>(dgl.get(), dx.get(), dt.get(), yptr, dsums.get(), P, L, A(eps),
                                                    dgx.get(), decoupled ? dgy.get() : nullptr, stream)));
  CUDA_OK(cudaStreamSynchronize(stream));
  const std::vector<T> gx = dgx.download();
  int bad_gx = 0, bad_gy = 0;
  const double atol = 1e-5 * max_g + (std::is_same_v<T, __half> ? 1e-7 : 0.0);
  for (int64_t i = 0; i < P * L; ++i) bad_gx += !close(to_double(gx[i]), ref_gx[i], tol_of<T>(), atol);
  report(bad_gx == 0, ctx + " grad_x: " + std::to_string(bad_gx) + " mismatches");
  if (decoupled) {
    const std::vector<T> gy = dgy.download();
    for (int64_t i = 0; i < P * L; ++i) bad_gy += !close(to_double(gy[i]), ref_gy[i], tol_of<T>(), atol);
    report(bad_gy == 0, ctx + " grad_y: " + std::to_string(bad_gy) + " mismatches");
  }
}

template <typename T, typename TT>
void dice_suite(cudaStream_t stream, std::mt19937& rng) {
  const int64_t shapes[][2] = {{0, 10}, {3, 0}, {1, 1}, {5, 67}, {4, 4096}, {2, 100000}, {300, 64}};
  for (const auto& s : shapes) {
    for (int decoupled = 0; decoupled < 2; ++decoupled) {
      test_dice<T, TT>(s[0], s[1], decoupled != 0, 0, stream, rng);
    }
  }
  test_dice<T, TT>(3, 1000, true, 1, stream, rng);  // misaligned: scalar path
}

template <typename T>
void dice_all_targets(cudaStream_t stream, std::mt19937& rng) {
  dice_suite<T, uint8_t>(stream, rng);
  dice_suite<T, __half>(stream, rng);
  dice_suite<T, __nv_bfloat16>(stream, rng);
  dice_suite<T, float>(stream, rng);
  dice_suite<T, double>(stream, rng);
}

template <typename T>
void focal_suite(cudaStream_t stream, std::mt19937& rng) {
  const int64_t shapes[][2] = {{0, 80}, {5, 0}, {1, 1}, {7, 3}, {37, 80}, {3872, 80}, {1000, 81}, {20000, 7}};
  for (const auto& s : shapes) {
    for (double gamma : {2.0, 1.5}) test_focal<T>(s[0], s[1], gamma, 0, stream, rng);
  }
  test_focal<T>(33, 80, 2.0, 1, stream, rng);  // misaligned: scalar path
}

}  // namespace

int main() {
  if (no_cuda_device("test_kernels")) return kSkipped;
  cudaStream_t stream;
  CUDA_OK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));  // not the legacy default stream
  std::mt19937 rng(1234);
  focal_suite<float>(stream, rng);
  focal_suite<double>(stream, rng);
  focal_suite<__half>(stream, rng);
  focal_suite<__nv_bfloat16>(stream, rng);
  dice_all_targets<float>(stream, rng);
  dice_all_targets<double>(stream, rng);
  dice_all_targets<__half>(stream, rng);
  dice_all_targets<__nv_bfloat16>(stream, rng);
  // More rows than gridDim.y can hold: the row loop of both dice kernels.
  test_dice<float, uint8_t>(70000, 5, true, 0, stream, rng);
  CUDA_OK(cudaStreamDestroy(stream));
  return finish("test_kernels");
}
