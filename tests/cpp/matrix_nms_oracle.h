// The Matrix NMS oracle of the C++ tests (test_math_matrix_nms.cpp, test_kernels_matrix_nms.cpp): SPEC §9.3 in its
// full matrix form, in long double, independent of csrc/include/solo/matrix_nms.h. D is the n x n IoU matrix, set on
// the strict upper triangle for pairs of one label (0 elsewhere); comp[i] is the max of column i of D; the decay of
// mask j is the min over *all* rows i of decay(D[i, j]) / decay(comp[i]), as in the original code.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

namespace solo_test {

inline long double iou_ld(long double inter, long double ai, long double aj) {
  const long double u = ai + aj - inter;
  return u > 0 ? inter / u : 0;
}

// comp: the column maxima of the n x n matrix D (row-major).
inline std::vector<long double> column_max(const std::vector<long double>& D, int64_t n) {
  std::vector<long double> comp(static_cast<size_t>(n), 0);
  for (int64_t j = 0; j < n; ++j)
    for (int64_t k = 0; k < n; ++k) comp[j] = std::max(comp[j], D[k * n + j]);
  return comp;
}

// The decay factor of mask j (kernel 0: gaussian, 1: linear).
inline long double matrix_decay(const std::vector<long double>& D, const std::vector<long double>& comp, int64_t n,
                                int64_t j, int kernel, long double sigma) {
  long double decay = std::numeric_limits<long double>::infinity();
  for (int64_t i = 0; i < n; ++i) {
    const long double d = D[i * n + j], c = comp[i];
    long double r;
    if (kernel == 0) {
      r = std::exp(-sigma * d * d) / std::exp(-sigma * c * c);
    } else {
      r = (1 - c) == 0 ? ((1 - d) == 0 ? 0 : std::numeric_limits<long double>::infinity()) : (1 - d) / (1 - c);
    }
    decay = std::min(decay, r);
  }
  return decay;
}

}  // namespace solo_test
