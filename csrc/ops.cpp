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
}
