// GPU test of the torch-free mask downsampling launcher (kernels/downsample_masks.cu) against a host computation of
// the rule, straight from its definition (not through the shared header): strides 1..32, output widths that are and
// are not multiples of 4, contiguous, padded-row, transposed and misaligned layouts, bytes other than 0/1, and more
// output rows than one grid covers. Exits 77 (ctest: skipped) without a CUDA device.
//
// Host C++ on purpose: it includes the launcher header with the host compiler, as the torch glue in csrc/cuda does.
#include <cuda_runtime.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "downsample_masks.cuh"
#include "test_util_cuda.h"

namespace {

using namespace solo_test;

enum class Layout { kContiguous, kPaddedRows, kAlignedRows, kTransposed, kMisaligned };

const char* layout_name(Layout l) {
  switch (l) {
    case Layout::kContiguous:
      return "contiguous";
    case Layout::kPaddedRows:
      return "padded-rows";
    case Layout::kAlignedRows:
      return "aligned-rows";
    case Layout::kTransposed:
      return "transposed";
    default:
      return "misaligned";
  }
}

// One case: m masks h x w, stride s, stored with `layout`; compares every output byte with the rule.
void run_case(int64_t m, int64_t h, int64_t w, int64_t s, Layout layout, cudaStream_t stream, std::mt19937& rng) {
  // Element strides and storage size of the chosen layout.
  int64_t sm, sh, sw, offset = 0;
  switch (layout) {
    case Layout::kPaddedRows:  // each row padded by 3 bytes, each mask by one extra row: odd strides everywhere
      sh = w + 3;
      sw = 1;
      sm = (h + 1) * sh;
      break;
    case Layout::kAlignedRows:  // rows padded to a multiple of 64 bytes: vector loads even when wo % 4 != 0
      sh = (w + 63) / 64 * 64 + 64;
      sw = 1;
      sm = h * sh;
      break;
    case Layout::kTransposed:  // stored as [m, w, h]: columns are contiguous
      sh = 1;
      sw = h;
      sm = h * w;
      break;
    case Layout::kMisaligned:  // contiguous, but starting one byte past an aligned address
      sh = w;
      sw = 1;
      sm = h * w;
      offset = 1;
      break;
    default:
      sh = w;
      sw = 1;
      sm = h * w;
  }
  const int64_t storage = offset + (m > 0 ? (m - 1) * sm + (h - 1) * sh + (w - 1) * sw + 1 : 0);
  std::vector<uint8_t> host(static_cast<size_t>(storage));
  std::uniform_int_distribution<int> pick(0, 9);
  for (auto& v : host) {
    const int r = pick(rng);
    v = static_cast<uint8_t>(r < 5 ? 0 : r < 8 ? 1 : r == 8 ? 2 : 255);  // nonzero bytes other than 1 count as 1
  }
  const int64_t ho = h / s, wo = w / s;
  const size_t out_n = static_cast<size_t>(m * ho * wo);

  uint8_t* d_in = nullptr;
  uint8_t* d_out = nullptr;
  CUDA_OK(cudaMalloc(&d_in, host.size() + 16));
  CUDA_OK(cudaMalloc(&d_out, out_n + 16));
  CUDA_OK(cudaMemcpy(d_in, host.data(), host.size(), cudaMemcpyHostToDevice));
  CUDA_OK(cudaMemset(d_out, 0xAB, out_n + 16));  // poison: every output byte must be written, nothing past the end
  const cudaError_t err =
      solo::cuda::launch_downsample_masks(d_in + offset, m, h, w, sm, sh, sw, s, d_out, stream);
  const std::string ctx = "[m=" + std::to_string(m) + " h=" + std::to_string(h) + " w=" + std::to_string(w) +
                          " s=" + std::to_string(s) + " " + layout_name(layout) + "]";
  report(err == cudaSuccess, "launch " + ctx + ": " + cudaGetErrorString(err));
  CUDA_OK(cudaStreamSynchronize(stream));
  std::vector<uint8_t> got(out_n + 16);
  CUDA_OK(cudaMemcpy(got.data(), d_out, got.size(), cudaMemcpyDeviceToHost));
  CUDA_OK(cudaFree(d_in));
  CUDA_OK(cudaFree(d_out));

  const uint8_t* base = host.data() + offset;
  auto px = [&](int64_t k, int64_t y, int64_t x) { return base[k * sm + y * sh + x * sw] != 0 ? 1 : 0; };
  int64_t bad = 0;
  for (int64_t k = 0; k < m; ++k)
    for (int64_t i = 0; i < ho; ++i)
      for (int64_t j = 0; j < wo; ++j) {
        int want;
        if (s % 2 == 1) {
          want = px(k, s * i + (s - 1) / 2, s * j + (s - 1) / 2);
        } else {
          const int64_t y = s * i + s / 2 - 1, x = s * j + s / 2 - 1;
          want = px(k, y, x) + px(k, y, x + 1) + px(k, y + 1, x) + px(k, y + 1, x + 1) >= 2 ? 1 : 0;
        }
        const uint8_t g = got[static_cast<size_t>((k * ho + i) * wo + j)];
        if (g != want && ++bad <= 3) {
          report(false, "output (" + std::to_string(k) + ", " + std::to_string(i) + ", " + std::to_string(j) +
                            ") = " + std::to_string(g) + ", want " + std::to_string(want) + " " + ctx);
        }
      }
  report(bad == 0, "all outputs " + ctx + " (" + std::to_string(bad) + " wrong)");
  bool tail_ok = true;
  for (size_t k = out_n; k < got.size(); ++k) tail_ok = tail_ok && got[k] == 0xAB;
  report(tail_ok, "nothing written past the output " + ctx);
}

}  // namespace

int main() {
  if (no_cuda_device("test_kernels_downsample_masks")) return kSkipped;
  cudaStream_t stream;
  CUDA_OK(cudaStreamCreate(&stream));
  std::mt19937 rng(7);

  const Layout layouts[] = {Layout::kContiguous, Layout::kPaddedRows, Layout::kAlignedRows, Layout::kTransposed,
                            Layout::kMisaligned};
  const int64_t strides[] = {1, 2, 3, 4, 5, 6, 8, 16, 32};
  // Output sizes: wo a multiple of 4 or not, one-pixel outputs, a long row.
  const int64_t sizes[][3] = {{3, 5, 8}, {2, 1, 1}, {4, 3, 7}, {1, 2, 33}, {5, 4, 76}, {2, 3, 304}};
  for (Layout l : layouts)
    for (int64_t s : strides)
      for (const auto& sz : sizes) run_case(sz[0], sz[1] * s, sz[2] * s, s, l, stream, rng);
  // SOLO's size: 800 x 1216 masks at the target strides.
  for (int64_t s : {4, 8, 16}) run_case(3, 800, 1216, s, Layout::kContiguous, stream, rng);
  // More output rows than one grid covers (gridDim.y <= 65535): the row loop must wrap.
  run_case(1, 600000, 4, 1, Layout::kContiguous, stream, rng);
  run_case(2, 300002 * 2, 8, 2, Layout::kContiguous, stream, rng);
  // Empty cases and invalid arguments.
  report(solo::cuda::launch_downsample_masks(nullptr, 0, 8, 8, 64, 8, 1, 4, nullptr, stream) == cudaSuccess,
         "m = 0 is a no-op");
  report(solo::cuda::launch_downsample_masks(nullptr, 2, 0, 8, 0, 8, 1, 4, nullptr, stream) == cudaSuccess,
         "h = 0 is a no-op");
  report(solo::cuda::launch_downsample_masks(nullptr, 1, 8, 8, 64, 8, 1, 3, nullptr, stream) ==
             cudaErrorInvalidValue,
         "a stride that does not divide h is refused");
  report(solo::cuda::launch_downsample_masks(nullptr, 1, 8, 8, 64, 8, 1, 0, nullptr, stream) ==
             cudaErrorInvalidValue,
         "stride 0 is refused");
  CUDA_OK(cudaStreamDestroy(stream));
  return finish("test_kernels_downsample_masks");
}
