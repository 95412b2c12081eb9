// CPU kernel of solo::matrix_nms (SOLOv2's Matrix NMS) with exact bit-packed intersections.
//
//   1. pack (parallel over masks): each mask's bytes are read once and packed into 64-bit words (bit k of word w =
//      pixel 64 w + k of the flattened mask); the same pass counts the area and finds the first and last nonzero
//      word. SOLO masks are local objects, so [first, last] is usually a small part of the image.
//   2. columns (parallel over masks j): for every better mask i < j of the same label, the exact intersection is
//      the popcount of the AND of the two bit rows over the overlap of their word ranges (0 without overlap). The
//      counts are stored in inter[j, i] (int32, column j contiguous) and folded into comp_j = max_i IoU_ij.
//   3. decay (parallel over masks j): decay_j = min(1, min over the same-label i < j of f(IoU_ij) / f(comp_i)),
//      out_j = scores_j * decay_j (math in solo/matrix_nms.h, shared with the CUDA kernels).
// Scratch: the bit rows (N * ceil(HW / 64) words, 1/8 of the mask bytes) and the N x N int32 intersections, never a
// float copy of the masks.
//
// Hardware popcount: the build targets baseline x86-64, which has no POPCNT instruction. The pair loop is compiled
// three times -- for AVX-512 VPOPCNTDQ (8 words per vpopcntq), for POPCNT, and for the baseline -- and the best one
// the CPU supports is chosen at run time (SOLO_CPU_ISA=default|popcnt|avx512 caps the choice, for tests).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <vector>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "../op_checks.h"
#include "solo/matrix_nms.h"

#if defined(__GNUC__)
#define SOLO_ALWAYS_INLINE inline __attribute__((always_inline))
#else
#define SOLO_ALWAYS_INLINE inline
#endif

#if defined(__x86_64__) && defined(__GNUC__)  // GCC and clang
#define SOLO_NMS_MULTIVERSION 1
#else
#define SOLO_NMS_MULTIVERSION 0
#endif

namespace solo {
namespace {

constexpr int64_t kWordBits = 64;

// --- the per-ISA parts --------------------------------------------------------------------------------------------
// Written in plain C++ and force-inlined into the three wrappers below, each compiled with its own target
// attribute: the compiler then vectorises the popcount loop with vpopcntq in the AVX-512 wrapper and emits the
// popcnt instruction in the POPCNT one.

SOLO_ALWAYS_INLINE int64_t and_popcount(const uint64_t* __restrict a, const uint64_t* __restrict b, int64_t n) {
  int64_t s = 0;
  for (int64_t k = 0; k < n; ++k) s += __builtin_popcountll(a[k] & b[k]);
  return s;
}

// 64 mask bytes -> one word (bit k = byte k != 0).
SOLO_ALWAYS_INLINE uint64_t pack_word(const uint8_t* p) {
#if defined(__SSE2__)
  const __m128i zero = _mm_setzero_si128();
  uint64_t zero_bits = 0;
  for (int q = 0; q < 4; ++q) {
    const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 16 * q));
    zero_bits |= static_cast<uint64_t>(static_cast<uint32_t>(_mm_movemask_epi8(_mm_cmpeq_epi8(v, zero))) & 0xffffu)
                 << (16 * q);
  }
  return ~zero_bits;
#else
  uint64_t bits = 0;
  for (int q = 0; q < 8; ++q) {
    uint64_t x;
    std::memcpy(&x, p + 8 * q, 8);
    bits |= static_cast<uint64_t>(math::nonzero_bytes_to_bits(x)) << (8 * q);
  }
  return bits;
#endif
}

struct PackArgs {
  const uint8_t* masks;
  int64_t mask_stride;  // bytes between consecutive masks (each mask's HW bytes are contiguous)
  int64_t hw;
  int64_t words;  // ceil(hw / 64)
  uint64_t* bits;  // [n, words]
  int64_t* area;  // [n]
  int32_t* first;  // [n] first nonzero word (words when empty)
  int32_t* last;  // [n] last nonzero word (-1 when empty)
};

SOLO_ALWAYS_INLINE void pack_masks_impl(const PackArgs& a, int64_t begin, int64_t end) {
  const int64_t full = a.hw / kWordBits;
  for (int64_t i = begin; i < end; ++i) {
    const uint8_t* m = a.masks + i * a.mask_stride;
    uint64_t* out = a.bits + i * a.words;
    int64_t area = 0;
    int32_t first = static_cast<int32_t>(a.words), last = -1;
    for (int64_t w = 0; w < a.words; ++w) {
      uint64_t word;
      if (w < full) {
        word = pack_word(m + w * kWordBits);
      } else {  // the partial last word; its high bits stay 0
        word = 0;
        const uint8_t* tail = m + w * kWordBits;
        for (int64_t k = 0; k < a.hw - w * kWordBits; ++k) word |= static_cast<uint64_t>(tail[k] != 0) << k;
      }
      out[w] = word;
      area += __builtin_popcountll(word);
      if (word != 0) {
        if (first > w) first = static_cast<int32_t>(w);
        last = static_cast<int32_t>(w);
      }
    }
    a.area[i] = area;
    a.first[i] = first;
    a.last[i] = last;
  }
}

struct ColumnArgs {
  const uint64_t* bits;
  int64_t words;
  int64_t n;
  const int64_t* labels;
  const int32_t* first;
  const int32_t* last;
  const int64_t* area;  // counted areas, or nullptr when `given` is set
  const float* given;  // given areas (float), or nullptr
  int32_t* inter;  // [n, n]: inter[j * n + i] for the same-label i < j
  math::MaskIoU<float>* comp;  // [n]
};

// IoU of the pair (i, j) from its intersection: exact integer union for counted areas, float for given ones.
SOLO_ALWAYS_INLINE math::MaskIoU<float> pair_iou(const ColumnArgs& a, int64_t inter, int64_t i, int64_t j) {
  if (a.given) return math::mask_iou<float, float>(static_cast<float>(inter), a.given[i], a.given[j]);
  return math::mask_iou<float, int64_t>(inter, a.area[i], a.area[j]);
}

// Column j: intersections with every better same-label mask, and comp_j.
SOLO_ALWAYS_INLINE void column_impl(const ColumnArgs& a, int64_t j) {
  const int64_t lj = a.labels[j];
  const int32_t fj = a.first[j], tj = a.last[j];
  const uint64_t* bj = a.bits + j * a.words;
  int32_t* col = a.inter + j * a.n;
  math::MaskIoU<float> comp = math::comp_init<float>();
  for (int64_t i = 0; i < j; ++i) {
    if (a.labels[i] != lj) continue;
    const int32_t lo = std::max(fj, a.first[i]);
    const int32_t hi = std::min(tj, a.last[i]);
    const int64_t inter = hi >= lo ? and_popcount(a.bits + i * a.words + lo, bj + lo, hi - lo + 1) : 0;
    col[i] = static_cast<int32_t>(inter);
    math::comp_update(&comp, pair_iou(a, inter, i, j));
  }
  a.comp[j] = comp;
}

// Each parallel work unit takes columns u and n - 1 - u: column j has j pairs, so every unit has n - 1.
SOLO_ALWAYS_INLINE void columns_impl(const ColumnArgs& a, int64_t ubegin, int64_t uend) {
  for (int64_t u = ubegin; u < uend; ++u) {
    column_impl(a, u);
    if (a.n - 1 - u != u) column_impl(a, a.n - 1 - u);
  }
}

void pack_default(const PackArgs& a, int64_t b, int64_t e) { pack_masks_impl(a, b, e); }
void columns_default(const ColumnArgs& a, int64_t b, int64_t e) { columns_impl(a, b, e); }
#if SOLO_NMS_MULTIVERSION
__attribute__((target("popcnt"))) void pack_popcnt(const PackArgs& a, int64_t b, int64_t e) {
  pack_masks_impl(a, b, e);
}
__attribute__((target("popcnt"))) void columns_popcnt(const ColumnArgs& a, int64_t b, int64_t e) {
  columns_impl(a, b, e);
}
__attribute__((target("popcnt,avx2,avx512f,avx512vpopcntdq"))) void pack_avx512(const PackArgs& a, int64_t b,
                                                                              int64_t e) {
  pack_masks_impl(a, b, e);
}
__attribute__((target("popcnt,avx2,avx512f,avx512vpopcntdq"))) void columns_avx512(const ColumnArgs& a, int64_t b,
                                                                                 int64_t e) {
  columns_impl(a, b, e);
}
#endif

enum class Isa { kDefault = 0, kPopcnt = 1, kAvx512 = 2 };

Isa detect_isa() {
  static const Isa hw = [] {
#if SOLO_NMS_MULTIVERSION
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vpopcntdq")) return Isa::kAvx512;
    if (__builtin_cpu_supports("popcnt")) return Isa::kPopcnt;
#endif
    return Isa::kDefault;
  }();
  // SOLO_CPU_ISA caps the choice (tests run every version on one machine).
  const char* cap = std::getenv("SOLO_CPU_ISA");
  if (cap != nullptr) {
    if (std::strcmp(cap, "default") == 0) return Isa::kDefault;
    if (std::strcmp(cap, "popcnt") == 0) return std::min(hw, Isa::kPopcnt);
  }
  return hw;
}

void pack_masks(Isa isa, const PackArgs& a, int64_t b, int64_t e) {
#if SOLO_NMS_MULTIVERSION
  if (isa == Isa::kAvx512) return pack_avx512(a, b, e);
  if (isa == Isa::kPopcnt) return pack_popcnt(a, b, e);
#endif
  (void)isa;
  pack_default(a, b, e);
}

void columns(Isa isa, const ColumnArgs& a, int64_t b, int64_t e) {
#if SOLO_NMS_MULTIVERSION
  if (isa == Isa::kAvx512) return columns_avx512(a, b, e);
  if (isa == Isa::kPopcnt) return columns_popcnt(a, b, e);
#endif
  (void)isa;
  columns_default(a, b, e);
}

// --- the op -------------------------------------------------------------------------------------------------------

at::Tensor matrix_nms_cpu(const at::Tensor& masks, const at::Tensor& labels, const at::Tensor& scores,
                          const c10::optional<at::Tensor>& areas, int64_t kernel, double sigma) {
  static_assert(math::kMatrixNmsGaussian == 0 && math::kMatrixNmsLinear == 1, "checks::matrix_nms_inputs");
  checks::matrix_nms_inputs(masks, labels, scores, areas, kernel, sigma);
  checks::matrix_nms_pixels(masks);
  const int64_t n = masks.size(0);
  const int64_t hw = masks.size(1) * masks.size(2);
  at::Tensor out = at::empty({n}, scores.options().dtype(at::kFloat));
  if (n == 0) return out;

  const at::Tensor s = scores.to(at::kFloat).contiguous();
  const float* sp = s.const_data_ptr<float>();
  for (int64_t i = 0; i + 1 < n; ++i) {
    TORCH_CHECK(!(sp[i + 1] > sp[i]), "matrix_nms: scores must be sorted in descending order, got scores[", i + 1,
                "] = ", sp[i + 1], " > scores[", i, "] = ", sp[i]);
  }
  const at::Tensor lab = labels.contiguous();
  // Each mask's H x W block must be contiguous; the stride between masks may be anything (a slice of a batch).
  const bool block_contiguous = (masks.size(2) <= 1 || masks.stride(2) == 1) &&
                                (masks.size(1) <= 1 || masks.stride(1) == masks.size(2));
  const at::Tensor m = block_contiguous ? masks : masks.contiguous();
  const at::Tensor given = areas.has_value() ? areas->to(at::kFloat).contiguous() : at::Tensor();

  const int64_t words = (hw + kWordBits - 1) / kWordBits;
  at::Tensor bits = at::empty({n, std::max<int64_t>(words, 1)}, masks.options().dtype(at::kLong));
  at::Tensor meta = at::empty({n, 2}, masks.options().dtype(at::kLong));  // area, first/last (int32 pair)
  at::Tensor inter = at::empty({n, n}, masks.options().dtype(at::kInt));
  std::vector<math::MaskIoU<float>> comp(n);

  const Isa isa = detect_isa();
  PackArgs pa;
  pa.masks = static_cast<const uint8_t*>(m.const_data_ptr());
  pa.mask_stride = n > 1 ? m.stride(0) : hw;
  pa.hw = hw;
  pa.words = words;
  pa.bits = reinterpret_cast<uint64_t*>(bits.mutable_data_ptr<int64_t>());
  int64_t* meta_p = meta.mutable_data_ptr<int64_t>();
  pa.area = meta_p;
  pa.first = reinterpret_cast<int32_t*>(meta_p + n);
  pa.last = pa.first + n;
  // Masks are ~10^4-10^5 bytes each: a few per task.
  at::parallel_for(0, n, 4, [&](int64_t b, int64_t e) { pack_masks(isa, pa, b, e); });

  ColumnArgs ca;
  ca.bits = pa.bits;
  ca.words = words;
  ca.n = n;
  ca.labels = lab.const_data_ptr<int64_t>();
  ca.first = pa.first;
  ca.last = pa.last;
  ca.given = given.defined() ? given.const_data_ptr<float>() : nullptr;
  ca.area = ca.given ? nullptr : pa.area;
  ca.inter = inter.mutable_data_ptr<int32_t>();
  ca.comp = comp.data();
  const int64_t units = (n + 1) / 2;
  at::parallel_for(0, units, 1, [&](int64_t b, int64_t e) { columns(isa, ca, b, e); });

  float* op = out.mutable_data_ptr<float>();
  const float sig = static_cast<float>(sigma);
  const int k = static_cast<int>(kernel);
  auto decay_column = [&](int64_t j) {
    const int64_t lj = ca.labels[j];
    const int32_t* col = ca.inter + j * n;
    float decay = 1.0f;
    for (int64_t i = 0; i < j; ++i) {
      if (ca.labels[i] != lj) continue;
      decay = math::decay_update(decay, math::decay_ratio(k, pair_iou(ca, col[i], i, j), comp[i], sig));
    }
    op[j] = sp[j] * decay;
  };
  at::parallel_for(0, units, 16, [&](int64_t b, int64_t e) {
    for (int64_t u = b; u < e; ++u) {
      decay_column(u);
      if (n - 1 - u != u) decay_column(n - 1 - u);
    }
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(solo, CPU, m) { m.impl("matrix_nms", &matrix_nms_cpu); }

}  // namespace solo
