// Schemas of every solo operator. Kernels register themselves per dispatch key in csrc/cpu/*.cpp and
// csrc/cuda/*.cpp (TORCH_LIBRARY_IMPL); fake (meta) kernels and autograd are registered from Python
// (solo/ops/*.py) so torch.compile and torch.library.opcheck see every op.
//
// Conventions shared by all ops:
//  * "acc dtype" = float64 when the floating input is float64, else float32. Losses and saved sums come
//    back in the acc dtype; gradients come back in the dtype of the input they belong to.
//  * Inputs may be non-contiguous; kernels make them contiguous themselves.
#include <Python.h>
#include <torch/library.h>

// `import solo._C` loads this shared object, which runs the static registrations below. No pybind11:
// the module itself is empty.
PyMODINIT_FUNC PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module_def);
}

TORCH_LIBRARY(solo, m) {
  // Sigmoid focal loss, forward fused with the gradient (apex pattern).
  //   logits [N, C] float16/bfloat16/float32/float64; labels [N] int64: 0..C-1 positive class,
  //   C background (all C outputs negative), < 0 ignored row (loss 0, grad 0).
  //   reduction: 0 = none -> loss [N, C]; 1 = sum -> loss [] (acc dtype).
  //   grad: d(elementwise loss)/d(logits), [N, C] in the logits dtype when compute_grad, else an empty [0].
  m.def(
      "sigmoid_focal_loss_fwd(Tensor logits, Tensor labels, float alpha, float gamma, int reduction, "
      "bool compute_grad) -> (Tensor, Tensor)");
  // Dice loss, forward: one pass for the three per-instance sums.
  //   logits [P, L]; targets [P, L] bool/uint8/float; y_logits: None, or [P, L] like logits (Decoupled SOLO:
  //   p = sigmoid(logits) * sigmoid(y_logits)). Returns loss [P] and sums [P, 3] = (sum p t, sum p^2, sum t^2).
  m.def("dice_loss_fwd(Tensor logits, Tensor targets, Tensor? y_logits, float eps) -> (Tensor, Tensor)");
  // Dice loss, backward: one pass. grad_loss [P] (acc dtype). Returns grad_logits [P, L] (logits dtype) and
  // grad_y_logits [P, L] (or an empty [0] when y_logits is None).
  m.def(
      "dice_loss_bwd(Tensor grad_loss, Tensor logits, Tensor targets, Tensor? y_logits, Tensor sums, "
      "float eps) -> (Tensor, Tensor)");

  // Mask downsampling = OpenCV INTER_LINEAR resize of 0/1 masks by 1/stride (SOLO's mask targets).
  //   masks [M, H, W] bool/uint8 (nonzero = 1), stride > 0 dividing H and W -> uint8 [M, H/stride, W/stride].
  //   Even stride s: out(i, j) = 1 iff >= 2 of the pixels at rows {s*i + s/2 - 1, s*i + s/2} x columns
  //   {s*j + s/2 - 1, s*j + s/2} are 1. Odd stride: out(i, j) = in(s*i + (s-1)/2, s*j + (s-1)/2).
  m.def("downsample_masks(Tensor masks, int stride) -> Tensor");
  // Mask pasting (SOLO inference, last step): bilinear (align_corners=False) resize of probs [N, h, w] to
  //   canvas_size, crop to [:valid_h, :valid_w], bilinear resize to out_size, > threshold, in one pass with no
  //   canvas-sized intermediate. probs float16/bfloat16/float32/float64 -> bool [N, out_h, out_w].
  m.def(
      "paste_masks(Tensor probs, int[2] canvas_size, int[2] valid_size, int[2] out_size, float threshold) "
      "-> Tensor");
  // Matrix NMS (SOLOv2): masks [N, H, W] bool/uint8 (nonzero = 1), labels [N] int64, scores [N] float sorted
  //   descending, areas: None (counted from the masks) or [N] int/float. kernel: 0 = gaussian
  //   exp(-sigma (D^2 - comp^2)), 1 = linear (1 - D) / (1 - comp). Returns the decayed scores, float32 [N].
  //   Intersections are exact integer counts; an empty mask has IoU 0 with everything.
  m.def("matrix_nms(Tensor masks, Tensor labels, Tensor scores, Tensor? areas, int kernel, float sigma) -> Tensor");

  // Grid target assignment (SOLO / SOLOv2 training targets, SOLO_SPEC.md §7) in two ops: one pass over the masks,
  // then one small pass over instances and cells. Geometry in csrc/include/solo/grid_targets.h.
  //   mass: masks [M, H, W] bool/uint8 (nonzero = 1) -> int64 [M, 3] = (sum m, sum x m, sum y m) with x, y the
  //   0-based column and row: the exact moments of each mask (its centre of mass is (sum x m, sum y m) / sum m).
  m.def("assign_grid_targets_mass(Tensor masks) -> Tensor");
  //   cells: mass [M, 3] int64 (from the op above), boxes [M, 4] float (x1, y1, x2, y2, canvas pixels), labels [M]
  //   int64 in [0, num_classes), image_ids [M] int64 in [0, batch_size), height / width = the canvas (the masks'
  //   H, W), num_grids [L] (S of each level, 1 <= L <= 16), scale_ranges [2L] = (lower_0, upper_0, lower_1, ...)
  //   inclusive, sigma > 0, mode 0 = SOLO (one positive per positive cell: the last instance covering it), 1 =
  //   SOLOv2 (one positive per (instance, cell) pair). Returns
  //     labels [batch_size, sum S^2] int64: each cell's class, num_classes for background; cells level by level,
  //       row-major; where instances of an image overlap, the one with the larger index (annotation order) wins;
  //     pos_cells [P] int64: flat indices into labels (image * sum S^2 + level offset + i * S + j);
  //     pos_instances [P] int64: the instance of each positive; sorted by pos_cells, then by instance.
  //   P is data-dependent (one host sync on the GPU; the fake kernel gives it an unbacked size). Labels and image
  //   ids are checked on the CPU; the CUDA kernel skips instances whose image id is out of range.
  m.def(
      "assign_grid_targets_cells(Tensor mass, Tensor boxes, Tensor labels, Tensor image_ids, int batch_size, "
      "int height, int width, int[] num_grids, float[] scale_ranges, float sigma, int num_classes, int mode) "
      "-> (Tensor, Tensor, Tensor)");
}
