// GPU test of the torch-free grid-target launchers in kernels/assign_grid_targets.cu against a host computation:
// moments by plain loops, cells by the sequential algorithm (instances in index order) with the shared geometry of
// csrc/include/solo/grid_targets.h. Exits 77 (ctest: skipped) without a CUDA device.
//
// Covers the 16-, 4- and 1-byte paths of the moment kernel (row lengths 1216, 36 and 37, and a misaligned base),
// bool-like (0/1) and arbitrary uint8 bytes, both modes, out-of-range image ids (ignored), M = 0 and no cells.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "assign_grid_targets.cuh"
#include "solo/grid_targets.h"
#include "test_util_cuda.h"

namespace {

using namespace solo_test;
using solo::grid::GridConfig;

template <typename T>
T* to_device(const std::vector<T>& v, size_t extra_bytes = 0) {
  void* p = nullptr;
  CUDA_OK(cudaMalloc(&p, v.size() * sizeof(T) + extra_bytes + 16));
  if (!v.empty()) CUDA_OK(cudaMemcpy(static_cast<char*>(p) + extra_bytes, v.data(), v.size() * sizeof(T),
                                     cudaMemcpyHostToDevice));
  return reinterpret_cast<T*>(static_cast<char*>(p) + extra_bytes);
}

template <typename T>
std::vector<T> to_host(const T* p, size_t n) {
  std::vector<T> v(n);
  if (n) CUDA_OK(cudaMemcpy(v.data(), p, n * sizeof(T), cudaMemcpyDeviceToHost));
  return v;
}

// Rectangles and ellipses, some empty, some a single pixel, some touching the canvas edge.
std::vector<uint8_t> make_masks(int64_t m, int64_t h, int64_t w, bool binary, std::mt19937& rng,
                                std::vector<double>* boxes) {
  std::vector<uint8_t> masks(static_cast<size_t>(m * h * w), 0);
  std::uniform_int_distribution<int> value(1, 255);
  boxes->assign(static_cast<size_t>(4 * m), 0.0);
  for (int64_t i = 0; i < m; ++i) {
    const int kind = static_cast<int>(i % 5);
    int64_t y0 = rng() % h, x0 = rng() % w;
    int64_t y1 = y0 + 1 + rng() % (h - y0), x1 = x0 + 1 + rng() % (w - x0);
    if (kind == 1) y1 = y0 + 1, x1 = x0 + 1;  // one pixel
    if (kind == 2) x1 = w, y1 = h;            // touches the bottom-right edge
    for (int64_t y = y0; y < y1; ++y) {
      for (int64_t x = x0; x < x1; ++x) {
        const bool in = kind == 3 ? false : (kind == 4 ? ((x - x0) * (x1 - 1 - x) + (y - y0) * (y1 - 1 - y)) % 3 != 0 : true);
        if (in) masks[(i * h + y) * w + x] = binary ? 1 : static_cast<uint8_t>(value(rng));
      }
    }
    (*boxes)[4 * i] = x0, (*boxes)[4 * i + 1] = y0, (*boxes)[4 * i + 2] = x1, (*boxes)[4 * i + 3] = y1;
  }
  return masks;
}

std::vector<int64_t> host_moments(const std::vector<uint8_t>& masks, int64_t m, int64_t h, int64_t w) {
  std::vector<int64_t> out(static_cast<size_t>(3 * m), 0);
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t y = 0; y < h; ++y) {
      for (int64_t x = 0; x < w; ++x) {
        if (masks[(i * h + y) * w + x] != 0) out[3 * i] += 1, out[3 * i + 1] += x, out[3 * i + 2] += y;
      }
    }
  }
  return out;
}

GridConfig make_config(int64_t h, int64_t w, std::vector<int> grids, std::vector<std::pair<double, double>> ranges) {
  GridConfig cfg{};
  cfg.num_levels = static_cast<int>(grids.size());
  int64_t off = 0;
  for (int l = 0; l < cfg.num_levels; ++l) {
    cfg.grids[l] = grids[l];
    cfg.lower[l] = ranges[l].first;
    cfg.upper[l] = ranges[l].second;
    cfg.offsets[l] = off;
    off += int64_t(grids[l]) * grids[l];
  }
  cfg.cells_per_image = off;
  cfg.height = static_cast<double>(h);
  cfg.width = static_cast<double>(w);
  cfg.sigma = 0.2;
  return cfg;
}

struct Targets {
  std::vector<int64_t> labels, pos_cells, pos_instances;
};

Targets host_targets(const std::vector<int64_t>& mass, const std::vector<double>& boxes,
                     const std::vector<int64_t>& labels, const std::vector<int64_t>& images, int64_t batch,
                     const GridConfig& cfg, int64_t num_classes, int mode) {
  const int64_t m = static_cast<int64_t>(labels.size());
  const int64_t cells = batch * cfg.cells_per_image;
  std::vector<int64_t> winner(cells, -1);
  std::vector<std::vector<int64_t>> covering(cells);
  for (int64_t i = 0; i < m; ++i) {
    if (images[i] < 0 || images[i] >= batch) continue;
    for (int l = 0; l < cfg.num_levels; ++l) {
      solo::grid::Rect r;
      if (!solo::grid::level_region(mass[3 * i], mass[3 * i + 1], mass[3 * i + 2], boxes[4 * i], boxes[4 * i + 1],
                                    boxes[4 * i + 2], boxes[4 * i + 3], cfg, l, &r)) {
        continue;
      }
      for (int y = r.top; y <= r.down; ++y) {
        for (int x = r.left; x <= r.right; ++x) {
          const int64_t c = solo::grid::flat_cell(cfg, images[i], l, y, x);
          winner[c] = i;
          covering[c].push_back(i);
        }
      }
    }
  }
  Targets t;
  for (int64_t c = 0; c < cells; ++c) {
    t.labels.push_back(winner[c] >= 0 ? labels[winner[c]] : num_classes);
    if (mode == 0 && winner[c] >= 0) t.pos_cells.push_back(c), t.pos_instances.push_back(winner[c]);
    if (mode == 1) {
      for (int64_t i : covering[c]) t.pos_cells.push_back(c), t.pos_instances.push_back(i);
    }
  }
  return t;
}

void test_case(int64_t m, int64_t h, int64_t w, int64_t batch, bool binary, size_t misalign, int mode,
               cudaStream_t stream, std::mt19937& rng) {
  const std::string name = "m=" + std::to_string(m) + " " + std::to_string(h) + "x" + std::to_string(w) +
                           (binary ? " binary" : " uint8") + " misalign=" + std::to_string(misalign) +
                           " mode=" + std::to_string(mode);
  std::vector<double> boxes;
  const std::vector<uint8_t> masks = make_masks(m, h, w, binary, rng, &boxes);
  const std::vector<int64_t> want_mass = host_moments(masks, m, h, w);
  uint8_t* d_masks = to_device(masks, misalign);
  int64_t* d_mass = to_device(std::vector<int64_t>(static_cast<size_t>(3 * m), -7));
  CUDA_OK(solo::cuda::launch_mask_moments(d_masks, m, h, w, binary, d_mass, stream));
  CUDA_OK(cudaStreamSynchronize(stream));
  report(to_host(d_mass, 3 * m) == want_mass, "moments " + name);

  std::vector<int64_t> labels(m), images(m);
  for (int64_t i = 0; i < m; ++i) {
    labels[i] = rng() % 80;
    // Some ids out of range (all of them without images).
    images[i] = i % 7 == 6 || batch == 0 ? batch + 3 : static_cast<int64_t>(rng() % batch);
  }
  const double s = static_cast<double>(std::min(h, w));
  const GridConfig cfg = make_config(h, w, {12, 9, 5}, {{1, s / 4}, {s / 8, s / 2}, {s / 4, 4 * s}});
  const int64_t cells = batch * cfg.cells_per_image;
  const Targets want = host_targets(want_mass, boxes, labels, images, batch, cfg, 80, mode);
  double* d_boxes = to_device(boxes);
  int64_t* d_labels = to_device(labels);
  int64_t* d_images = to_device(images);
  const size_t bytes = solo::cuda::grid_targets_scratch_bytes(m, cfg.num_levels, cells);
  void* scratch = nullptr;
  CUDA_OK(cudaMalloc(&scratch, bytes));
  CUDA_OK(solo::cuda::launch_grid_targets_count(d_mass, d_boxes, d_images, m, batch, cfg, mode, scratch, bytes,
                                                stream));
  int64_t P = -1;
  CUDA_OK(cudaMemcpyAsync(&P, solo::cuda::grid_targets_total(scratch, m, cfg.num_levels, cells), sizeof(int64_t),
                          cudaMemcpyDeviceToHost, stream));
  CUDA_OK(cudaStreamSynchronize(stream));
  report(P == static_cast<int64_t>(want.pos_cells.size()), "P " + name);
  if (P != static_cast<int64_t>(want.pos_cells.size())) return;
  int64_t* d_out = to_device(std::vector<int64_t>(static_cast<size_t>(cells), -5));
  int64_t* d_pc = to_device(std::vector<int64_t>(static_cast<size_t>(P), -5));
  int64_t* d_pi = to_device(std::vector<int64_t>(static_cast<size_t>(P), -5));
  CUDA_OK(solo::cuda::launch_grid_targets_write(d_labels, d_images, m, batch, cfg, 80, mode, scratch, bytes, d_out,
                                                d_pc, d_pi, stream));
  CUDA_OK(cudaStreamSynchronize(stream));
  report(to_host(d_out, cells) == want.labels, "labels " + name);
  report(to_host(d_pc, P) == want.pos_cells, "pos_cells " + name);
  report(to_host(d_pi, P) == want.pos_instances, "pos_instances " + name);
  for (void* p : {static_cast<void*>(d_masks - misalign), static_cast<void*>(d_mass), static_cast<void*>(d_boxes),
                  static_cast<void*>(d_labels), static_cast<void*>(d_images), scratch, static_cast<void*>(d_out),
                  static_cast<void*>(d_pc), static_cast<void*>(d_pi)}) {
    CUDA_OK(cudaFree(p));
  }
}

}  // namespace

int main() {
  if (no_cuda_device("test_kernels_assign_grid_targets")) return kSkipped;
  cudaStream_t stream;
  CUDA_OK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  std::mt19937 rng(4321);
  for (int mode : {0, 1}) {
    for (bool binary : {true, false}) {
      test_case(40, 200, 1216, 4, binary, 0, mode, stream, rng);  // 16-byte vectors
      test_case(25, 31, 36, 3, binary, 0, mode, stream, rng);     // 4-byte words
      test_case(25, 30, 37, 3, binary, 0, mode, stream, rng);     // bytes
      test_case(9, 64, 128, 2, binary, 3, mode, stream, rng);     // misaligned base: bytes
      test_case(3, 800, 1216, 2, binary, 0, mode, stream, rng);   // few, large masks: many bands per mask
    }
    test_case(0, 16, 16, 2, true, 0, mode, stream, rng);  // no instances
    test_case(5, 16, 16, 0, true, 0, mode, stream, rng);  // no images: every id out of range, no cells
  }
  CUDA_OK(cudaStreamDestroy(stream));
  return finish("test_kernels_assign_grid_targets");
}
