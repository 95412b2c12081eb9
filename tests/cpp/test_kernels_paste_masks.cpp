// GPU test of the torch-free paste_masks launcher (kernels/paste_masks.cu) against a host computation in double with
// the shared tap math of csrc/include/solo/bilinear.h. Every element type, aligned (uchar4 stores) and unaligned
// output widths, the separable and the direct path, partial tiles, more masks than gridDim.z. A pixel may differ from
// the host result only when the host value lies within 1e-5 of the threshold (the contract of the op).
// Exits 77 (ctest: skipped) without a CUDA device.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <type_traits>
#include <vector>

#include "paste_masks.cuh"
#include "solo/bilinear.h"
#include "test_util_cuda.h"

namespace {

using namespace solo_test;

struct Shape {
  int64_t n, h, w, canvas_h, canvas_w, valid_h, valid_w, out_h, out_w;
};

// Smooth blobs with sharp-ish edges plus noise, like SOLO's mask probabilities.
std::vector<double> blob_probs(const Shape& s, std::mt19937& rng) {
  std::uniform_real_distribution<double> u(0.0, 1.0);
  std::normal_distribution<double> noise(0.0, 0.3);
  std::vector<double> p(static_cast<size_t>(s.n * s.h * s.w));
  for (int64_t m = 0; m < s.n; ++m) {
    const double cy = u(rng) * s.h, cx = u(rng) * s.w;
    const double ry = 0.5 + u(rng) * s.h / 3, rx = 0.5 + u(rng) * s.w / 3, sharp = 2 + 10 * u(rng);
    for (int64_t y = 0; y < s.h; ++y) {
      for (int64_t x = 0; x < s.w; ++x) {
        const double r = std::sqrt(((y + 0.5 - cy) / ry) * ((y + 0.5 - cy) / ry) + ((x + 0.5 - cx) / rx) * ((x + 0.5 - cx) / rx));
        p[(m * s.h + y) * s.w + x] = 1.0 / (1.0 + std::exp(-(sharp * (1.0 - r) + noise(rng))));
      }
    }
  }
  return p;
}

template <typename T>
void test_paste(const Shape& s, double thr, cudaStream_t stream, std::mt19937& rng) {
  const std::string ctx = std::string("[paste ") + type_name<T>() + " n=" + std::to_string(s.n) + " " +
                          std::to_string(s.h) + "x" + std::to_string(s.w) + " -> " + std::to_string(s.canvas_h) +
                          "x" + std::to_string(s.canvas_w) + " [:" + std::to_string(s.valid_h) + ", :" +
                          std::to_string(s.valid_w) + "] -> " + std::to_string(s.out_h) + "x" +
                          std::to_string(s.out_w) + " thr=" + std::to_string(thr) + "]";
  const std::vector<double> p64 = blob_probs(s, rng);
  std::vector<T> p(p64.size());
  for (size_t i = 0; i < p.size(); ++i) p[i] = from_double<T>(p64[i]);

  // Host values in double from the very (rounded) inputs the device sees.
  std::vector<int32_t> ry(4 * s.out_h), rx(4 * s.out_w);
  std::vector<double> wy(4 * s.out_h), wx(4 * s.out_w);
  for (int64_t y = 0; y < s.out_h; ++y) solo::math::paste_taps(y, s.h, s.canvas_h, s.valid_h, s.out_h, &ry[4 * y], &wy[4 * y]);
  for (int64_t x = 0; x < s.out_w; ++x) solo::math::paste_taps(x, s.w, s.canvas_w, s.valid_w, s.out_w, &rx[4 * x], &wx[4 * x]);

  const size_t out_count = static_cast<size_t>(s.n * s.out_h * s.out_w);
  T* dp = nullptr;
  uint8_t* dout = nullptr;
  CUDA_OK(cudaMalloc(&dp, std::max<size_t>(p.size(), 1) * sizeof(T)));
  CUDA_OK(cudaMalloc(&dout, std::max<size_t>(out_count, 1)));
  CUDA_OK(cudaMemcpy(dp, p.data(), p.size() * sizeof(T), cudaMemcpyHostToDevice));
  CUDA_OK(cudaMemset(dout, 0xAB, std::max<size_t>(out_count, 1)));  // garbage: every byte must be written
  CUDA_OK(solo::cuda::launch_paste_masks<T>(dp, s.n, s.h, s.w, s.canvas_h, s.canvas_w, s.valid_h, s.valid_w, s.out_h,
                                            s.out_w, thr, dout, stream));
  CUDA_OK(cudaStreamSynchronize(stream));
  std::vector<uint8_t> out(out_count);
  CUDA_OK(cudaMemcpy(out.data(), dout, out_count, cudaMemcpyDeviceToHost));
  CUDA_OK(cudaFree(dp));
  CUDA_OK(cudaFree(dout));

  int64_t bad = 0, in_band = 0, positives = 0, not_bool = 0;
  for (int64_t m = 0; m < s.n; ++m) {
    for (int64_t y = 0; y < s.out_h; ++y) {
      for (int64_t x = 0; x < s.out_w; ++x) {
        double v = 0;
        for (int a = 0; a < 4; ++a) {
          for (int b = 0; b < 4; ++b) {
            v += wy[4 * y + a] * wx[4 * x + b] * to_double(p[(m * s.h + ry[4 * y + a]) * s.w + rx[4 * x + b]]);
          }
        }
        const uint8_t got = out[(m * s.out_h + y) * s.out_w + x];
        not_bool += got > 1;
        positives += got == 1;
        if ((got == 1) != (v > thr)) {
          if (std::fabs(v - thr) <= 1e-5) {
            ++in_band;
          } else {
            ++bad;
          }
        }
      }
    }
  }
  report(not_bool == 0, std::to_string(not_bool) + " output bytes not 0/1 (unwritten?) " + ctx);
  report(bad == 0, std::to_string(bad) + " pixels differ from the host values outside the 1e-5 band " + ctx);
  report(in_band <= 4 + static_cast<int64_t>(out_count / 1000), std::to_string(in_band) + " in-band differences " + ctx);
  (void)positives;
}

template <typename T>
void suite(cudaStream_t stream, std::mt19937& rng) {
  // SOLO's shape (stride-4 map of an 800 x 1216 canvas, 1333 x 800 image): unaligned output rows.
  test_paste<T>({5, 200, 304, 800, 1216, 800, 1199, 800, 1333}, 0.5, stream, rng);
  // Aligned output rows (uchar4 stores), second stage downscaling.
  test_paste<T>({7, 200, 304, 800, 1216, 800, 1199, 427, 640}, 0.5, stream, rng);
  // Canvas not 4x, odd sizes, partial tiles in both directions, other thresholds.
  test_paste<T>({3, 37, 53, 150, 190, 141, 187, 77, 261}, 0.3, stream, rng);
  test_paste<T>({2, 13, 11, 29, 31, 27, 30, 53, 71}, 0.8, stream, rng);
  // valid == canvas, out == 1 x 1, out == valid (a copy in stage 2), canvas == src (a copy in stage 1).
  test_paste<T>({3, 20, 30, 80, 120, 80, 120, 50, 72}, 0.5, stream, rng);
  test_paste<T>({2, 9, 7, 36, 28, 30, 25, 1, 1}, 0.5, stream, rng);
  test_paste<T>({2, 10, 12, 40, 48, 37, 45, 37, 45}, 0.5, stream, rng);
  test_paste<T>({2, 16, 20, 16, 20, 12, 18, 30, 41}, 0.5, stream, rng);
  // Strong downscaling: the source span of a tile exceeds the buffer, the direct path runs.
  test_paste<T>({2, 300, 1200, 150, 600, 150, 600, 40, 36}, 0.5, stream, rng);
  // Many small masks: more masks than gridDim.z, each block loops over several.
  test_paste<T>({300, 12, 16, 48, 64, 47, 60, 33, 44}, 0.5, stream, rng);
}

}  // namespace

int main() {
  if (no_cuda_device("test_kernels_paste_masks")) return kSkipped;
  cudaStream_t stream;
  CUDA_OK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  std::mt19937 rng(4321);
  suite<float>(stream, rng);
  suite<double>(stream, rng);
  suite<__half>(stream, rng);
  suite<__nv_bfloat16>(stream, rng);
  // Zero masks: nothing launched, success. Bad sizes: cudaErrorInvalidValue.
  report(solo::cuda::launch_paste_masks<float>(nullptr, 0, 4, 4, 16, 16, 16, 16, 8, 8, 0.5, nullptr, stream) ==
             cudaSuccess,
         "n = 0 must succeed without launching");
  report(solo::cuda::launch_paste_masks<float>(nullptr, 1, 4, 4, 16, 16, 17, 16, 8, 8, 0.5, nullptr, stream) ==
             cudaErrorInvalidValue,
         "valid > canvas must be rejected");
  report(solo::cuda::launch_paste_masks<float>(nullptr, 1, 0, 4, 16, 16, 16, 16, 8, 8, 0.5, nullptr, stream) ==
             cudaErrorInvalidValue,
         "h = 0 must be rejected");
  CUDA_OK(cudaStreamDestroy(stream));
  return finish("test_kernels_paste_masks");
}
