// GPU test of the torch-free Matrix NMS launcher (kernels/matrix_nms.cu) against a host computation in long double
// of the full matrix form of SPEC §9.3 (naive byte-loop intersections, min over all rows). Exits 77 (ctest: skipped)
// without a CUDA device.
//
// Host C++ on purpose: it includes the launcher header with the host compiler, as the torch glue in csrc/cuda does.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "matrix_nms.cuh"
#include "matrix_nms_oracle.h"
#include "test_util_cuda.h"

namespace {

using namespace solo_test;
using LD = long double;

template <typename T>
struct DeviceBuffer {
  T* ptr = nullptr;
  explicit DeviceBuffer(size_t count) { CUDA_OK(cudaMalloc(&ptr, (count + 1) * sizeof(T))); }
  ~DeviceBuffer() { cudaFree(ptr); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  void upload(const std::vector<T>& h, size_t offset = 0) {
    if (!h.empty()) CUDA_OK(cudaMemcpy(ptr + offset, h.data(), h.size() * sizeof(T), cudaMemcpyHostToDevice));
  }
  std::vector<T> download(size_t count) {
    std::vector<T> h(count);
    if (count) CUDA_OK(cudaMemcpy(h.data(), ptr, count * sizeof(T), cudaMemcpyDeviceToHost));
    return h;
  }
};

struct Case {
  int64_t n, h, w;
  int64_t stride_pad;  // extra bytes between masks (mask_stride = hw + stride_pad)
  int64_t misalign;    // byte offset of the first mask from a 256-byte aligned allocation
  int labels;          // number of classes
  bool given_areas;
  int kernel;
  float sigma;
};

// Masks like SOLO's: ellipses and rectangles, duplicates, near-duplicates, nested parts, empty masks, single pixels.
std::vector<std::vector<uint8_t>> blob_masks(const Case& c, std::mt19937& rng) {
  const int64_t hw = c.h * c.w;
  std::uniform_real_distribution<double> unit(0.0, 1.0);
  std::uniform_int_distribution<int> kind(0, 8), value(1, 255);
  std::vector<std::vector<uint8_t>> m(c.n, std::vector<uint8_t>(hw, 0));
  for (int64_t i = 0; i < c.n; ++i) {
    int k = kind(rng);
    if (i == 0 && (k == 2 || k == 3 || k == 4)) k = 0;
    const double cy = unit(rng) * c.h, cx = unit(rng) * c.w;
    const double ry = 1 + unit(rng) * c.h / 3, rx = 1 + unit(rng) * c.w / 3;
    const int64_t src = i > 0 ? static_cast<int64_t>(unit(rng) * i) : 0;
    for (int64_t y = 0; y < c.h; ++y) {
      for (int64_t x = 0; x < c.w; ++x) {
        const double dy = (y - cy) / ry, dx = (x - cx) / rx;
        const bool rect = std::fabs(y - cy) <= ry && std::fabs(x - cx) <= rx;
        bool on = false;
        switch (k) {
          case 0: on = dy * dy + dx * dx <= 1; break;
          case 1: on = rect; break;
          case 2: on = m[src][y * c.w + x] != 0; break;
          case 3: on = m[src][y * c.w + x] != 0 && rect; break;
          case 4: on = m[src][y * c.w + x] != 0; break;
          case 5: on = y == static_cast<int64_t>(cy) && x == static_cast<int64_t>(cx); break;
          case 6: on = dy * dy + dx * dx <= 4; break;
          case 7: on = false; break;
          default: on = unit(rng) < 0.3; break;
        }
        m[i][y * c.w + x] = on ? static_cast<uint8_t>(i % 2 ? value(rng) : 1) : 0;  // any nonzero byte is inside
      }
    }
    if (k == 4) {  // near-duplicate: up to 3 pixels removed
      for (int r = 0, removed = 0; r < 1000 && removed < 3 && hw > 0; ++r) {
        const int64_t p = static_cast<int64_t>(unit(rng) * hw) % hw;
        if (m[i][p]) {
          m[i][p] = 0;
          ++removed;
        }
      }
    }
  }
  return m;
}

// SPEC §9.3 in matrix form: D (strict upper triangle, same label), comp = column max, decay = min over all rows.
std::vector<LD> host_matrix_nms(const std::vector<std::vector<uint8_t>>& m, const std::vector<int64_t>& labels,
                                const std::vector<float>& scores, const std::vector<float>& areas, int kernel,
                                float sigma) {
  const int64_t n = static_cast<int64_t>(m.size());
  const int64_t hw = n ? static_cast<int64_t>(m[0].size()) : 0;
  std::vector<LD> a(n);
  for (int64_t i = 0; i < n; ++i) {
    if (!areas.empty()) {
      a[i] = areas[i];
    } else {
      int64_t s = 0;
      for (uint8_t b : m[i]) s += b != 0;
      a[i] = s;
    }
  }
  std::vector<LD> D(n * n, 0), out(n);
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = i + 1; j < n; ++j) {
      if (labels[i] != labels[j]) continue;
      int64_t inter = 0;
      for (int64_t k = 0; k < hw; ++k) inter += (m[i][k] != 0) & (m[j][k] != 0);
      D[i * n + j] = iou_ld(inter, a[i], a[j]);
    }
  }
  const std::vector<LD> comp = column_max(D, n);
  for (int64_t j = 0; j < n; ++j) out[j] = scores[j] * matrix_decay(D, comp, n, j, kernel, sigma);
  return out;
}

void run_case(const Case& c, cudaStream_t stream, std::mt19937& rng) {
  const int64_t hw = c.h * c.w;
  const int64_t stride = hw + c.stride_pad;
  const std::string ctx = "[n=" + std::to_string(c.n) + " " + std::to_string(c.h) + "x" + std::to_string(c.w) +
                          " pad=" + std::to_string(c.stride_pad) + " misalign=" + std::to_string(c.misalign) +
                          " labels=" + std::to_string(c.labels) + " given=" + std::to_string(c.given_areas) +
                          " kernel=" + std::to_string(c.kernel) + " sigma=" + std::to_string(c.sigma) + "]";
  const auto masks = blob_masks(c, rng);
  std::uniform_int_distribution<int64_t> lab(0, c.labels - 1);
  std::uniform_real_distribution<float> unit(0.f, 1.f);
  std::vector<int64_t> labels(c.n);
  std::vector<float> scores(c.n), areas;
  for (auto& l : labels) l = lab(rng) * 100 - 3;
  for (auto& s : scores) s = std::floor(unit(rng) * 8) / 8 + 0.125f;  // exact ties
  std::sort(scores.begin(), scores.end(), [](float x, float y) { return x > y; });
  if (c.given_areas) {
    areas.resize(c.n);
    for (int64_t i = 0; i < c.n; ++i) {
      int64_t s = 0;
      for (uint8_t b : masks[i]) s += b != 0;
      areas[i] = static_cast<float>(s) * 1.25f + unit(rng);  // at least the pixel count
    }
  }
  const std::vector<LD> want = host_matrix_nms(masks, labels, scores, areas, c.kernel, c.sigma);

  std::vector<uint8_t> flat(c.n * stride + 1, 0xAB);  // padding bytes nonzero: must never be read as pixels
  for (int64_t i = 0; i < c.n; ++i) std::memcpy(flat.data() + i * stride, masks[i].data(), hw);
  DeviceBuffer<uint8_t> dmasks(flat.size() + c.misalign);
  dmasks.upload(flat, c.misalign);
  DeviceBuffer<int64_t> dlabels(c.n);
  DeviceBuffer<float> dscores(c.n), dareas(c.n), dout(c.n);
  dlabels.upload(labels);
  dscores.upload(scores);
  if (c.given_areas) dareas.upload(areas);
  const size_t scratch_bytes = solo::cuda::matrix_nms_scratch_bytes(c.n, hw);
  DeviceBuffer<unsigned char> scratch(scratch_bytes);
  std::vector<float> got[2];
  for (int run = 0; run < 2; ++run) {
    CUDA_OK(solo::cuda::launch_matrix_nms(dmasks.ptr + c.misalign, c.n, hw, stride, dlabels.ptr, dscores.ptr,
                                          c.given_areas ? dareas.ptr : nullptr, c.kernel, c.sigma, dout.ptr,
                                          scratch.ptr, scratch_bytes, stream));
    CUDA_OK(cudaStreamSynchronize(stream));
    got[run] = dout.download(c.n);
  }
  int bad = 0;
  for (int64_t j = 0; j < c.n; ++j) {
    const LD g = got[0][j], e = want[j];
    if (!(std::isfinite(g) && std::fabs(g - e) <= 1e-5L * std::fabs(e) + 1e-7L)) {
      if (++bad <= 3) std::fprintf(stderr, "  %s j=%lld: got %.9Lg want %.9Lg\n", ctx.c_str(), (long long)j, g, e);
    }
  }
  report(bad == 0, ctx + " " + std::to_string(bad) + " mismatches");
  report(got[0] == got[1], ctx + " deterministic");
  if (c.n > 0 && scratch_bytes > 0) {
    const cudaError_t err = solo::cuda::launch_matrix_nms(dmasks.ptr, c.n, hw, stride, dlabels.ptr, dscores.ptr,
                                                          nullptr, c.kernel, c.sigma, dout.ptr, scratch.ptr,
                                                          scratch_bytes - 1, stream);
    report(err == cudaErrorInvalidValue, ctx + " too small a scratch buffer is rejected");
  }
}

}  // namespace

int main() {
  if (no_cuda_device("test_kernels_matrix_nms")) return kSkipped;
  cudaStream_t stream;
  CUDA_OK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  std::mt19937 rng(4321);
  const Case cases[] = {
      {1, 7, 9, 0, 0, 3, false, 0, 2.f},
      {2, 11, 13, 0, 0, 1, false, 1, 2.f},
      {37, 24, 21, 0, 0, 3, false, 0, 2.f},
      {37, 24, 21, 0, 0, 1, false, 1, 2.f},
      {64, 16, 32, 0, 0, 1, false, 0, 0.5f},   // exactly one tile, vector pack path
      {65, 16, 32, 0, 0, 2, true, 1, 2.f},     // a second tile row with one mask
      {130, 13, 17, 5, 3, 3, false, 0, 7.5f},  // misaligned + padded masks: byte pack path
      {130, 32, 48, 16, 0, 1, true, 0, 2.f},   // padded stride, still 16-byte aligned
      {200, 40, 50, 0, 1, 4, false, 1, 2.f},
      {500, 40, 50, 0, 0, 3, false, 0, 2.f},
      {500, 40, 50, 0, 0, 1, false, 1, 2.f},
      {70, 200, 304, 0, 0, 1, false, 0, 2.f},  // SOLO's stride-4 mask size: many word splits
      {70, 200, 304, 0, 0, 2, false, 1, 2.f},
      {5, 0, 7, 0, 0, 1, false, 0, 2.f},       // no pixels at all
      {3, 1, 1, 0, 0, 1, false, 1, 2.f},
  };
  for (const Case& c : cases) run_case(c, stream, rng);

  // n = 0 is a no-op; bad arguments are rejected.
  report(solo::cuda::launch_matrix_nms(nullptr, 0, 10, 10, nullptr, nullptr, nullptr, 0, 2.f, nullptr, nullptr, 0,
                                       stream) == cudaSuccess,
         "n = 0 is a no-op");
  DeviceBuffer<unsigned char> tiny(1024);
  report(solo::cuda::launch_matrix_nms(tiny.ptr, 2, 4, 4, nullptr, nullptr, nullptr, 2, 2.f, nullptr, tiny.ptr, 1024,
                                       stream) == cudaErrorInvalidValue,
         "kernel 2 is rejected");
  report(solo::cuda::launch_matrix_nms(tiny.ptr, -1, 4, 4, nullptr, nullptr, nullptr, 0, 2.f, nullptr, tiny.ptr, 1024,
                                       stream) == cudaErrorInvalidValue,
         "negative n is rejected");
  CUDA_OK(cudaStreamDestroy(stream));
  return finish("test_kernels_matrix_nms");
}
