// Grid target assignment on CUDA (SOLO / SOLOv2 training targets), torch-free launcher API.
//
// Semantics are those of the `solo::assign_grid_targets_mass` / `solo::assign_grid_targets_cells` schemas
// (csrc/ops.cpp); the per-instance geometry is csrc/include/solo/grid_targets.h. The cells op runs in two launcher
// calls around one host read of P, the number of positives, which sizes the outputs:
//
//   launch_grid_targets_count   regions, winner and count per cell, exclusive offsets of the positives and P
//   (host: read P = *grid_targets_total(...), allocate pos_cells / pos_instances [P])
//   launch_grid_targets_write   labels [batch, cells_per_image] and the positives
//
// Both take the same scratch buffer (grid_targets_scratch_bytes), which carries the state from one to the other.
#pragma once

#include "common.cuh"
#include "solo/grid_targets.h"

namespace solo {
namespace cuda {

// Moments of m masks of h x w bytes, contiguous: out [m, 3] int64 = (sum b, sum x b, sum y b) with b = (byte != 0).
// `binary`: every byte is 0 or 1 (bool tensors), which skips the normalisation. Zeroes `out` itself, then adds with
// integer atomics: exact and deterministic. One read of the masks.
cudaError_t launch_mask_moments(const uint8_t* masks, int64_t m, int64_t h, int64_t w, bool binary, int64_t* out,
                                cudaStream_t stream);

// Bytes of scratch for `m` instances, `levels` levels and `cells` = batch * cells_per_image cells.
size_t grid_targets_scratch_bytes(int64_t m, int levels, int64_t cells);

// Device address of P (int64) inside the scratch, valid once launch_grid_targets_count has run.
const int64_t* grid_targets_total(const void* scratch, int64_t m, int levels, int64_t cells);

// Pass 1. mass [m, 3] int64, boxes [m, 4] float64, image_ids [m] int64 (instances whose id is outside
// [0, batch_size) are ignored). mode 0 = SOLO (one positive per positive cell), 1 = SOLOv2 (per (instance, cell)).
cudaError_t launch_grid_targets_count(const int64_t* mass, const double* boxes, const int64_t* image_ids, int64_t m,
                                      int64_t batch_size, const grid::GridConfig& cfg, int mode, void* scratch,
                                      size_t scratch_bytes, cudaStream_t stream);

// Pass 2, with the same arguments as pass 1 plus labels [m] int64, and the outputs: out_labels [batch_size,
// cfg.cells_per_image], pos_cells [P], pos_instances [P] (int64). Sorted by cell, then instance.
cudaError_t launch_grid_targets_write(const int64_t* labels, const int64_t* image_ids, int64_t m, int64_t batch_size,
                                      const grid::GridConfig& cfg, int64_t num_classes, int mode, void* scratch,
                                      size_t scratch_bytes, int64_t* out_labels, int64_t* pos_cells,
                                      int64_t* pos_instances, cudaStream_t stream);

}  // namespace cuda
}  // namespace solo
