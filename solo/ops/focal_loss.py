"""Sigmoid focal loss (RetinaNet / SOLO category branch), fused: loss and gradient in one pass."""

from __future__ import annotations

import torch
from torch import Tensor

from solo.ops import _registry, _validate, reference
from solo.ops._backend import check_values, resolve_backend

__all__ = ["sigmoid_focal_loss"]

_FN = "sigmoid_focal_loss"


def sigmoid_focal_loss(
    logits: Tensor,
    labels: Tensor,
    alpha: float = 0.25,
    gamma: float = 2.0,
    reduction: str = "sum",
    backend: str | None = None,
) -> Tensor:
    """Sigmoid focal loss over C independent binary classifiers per row.

    For ``p = sigmoid(x)``: a positive element costs ``-alpha (1-p)^gamma log(p)``, a negative one
    ``-(1-alpha) p^gamma log(1-p)``; both are computed from the logit without overflow (log p = -softplus(-x)).

    Args:
        logits (Tensor[N, C], float16/bfloat16/float32/float64): class logits, any strides.
        labels (Tensor[N], int64): ``0..C-1`` the positive class of the row; ``C`` background (all C outputs
            negative); a negative value ignores the row (no loss, zero gradient).
        alpha, gamma: focal parameters (SOLO: 0.25, 2.0); ``gamma >= 0``.
        reduction: ``"none"`` (Tensor[N, C]), ``"sum"`` or ``"mean"`` (sum over the number of non-ignored
            elements, i.e. non-ignored rows x C; 0 when there are none).
        backend: ``None``/``"auto"``, ``"reference"``, ``"cpu"``, ``"cuda"`` or ``"triton"`` (see
            ``solo.ops.available_backends()``); ``$SOLO_BACKEND`` sets the default.

    Returns:
        Tensor (float32; float64 for float64 logits): [N, C] for ``"none"``, else a scalar. The gradient flows to
        ``logits`` in their own dtype. The fused backends compute it during the forward pass (when ``logits``
        requires grad), so the backward pass is one multiply.

    Labels greater than C are an error on the CPU. On the GPU they are not checked (a check would need a
    device-to-host sync) and such rows count as background; set ``SOLO_CHECK_VALUES=1`` to check them there too.
    """
    _validate.tensor(_FN, "logits", logits)
    _validate.tensor(_FN, "labels", labels)
    _validate.floating(_FN, "logits", logits)
    if logits.dim() != 2:
        raise ValueError(f"{_FN}: logits must be 2-D [N, C], got shape {tuple(logits.shape)}")
    if labels.dtype != torch.int64:
        raise ValueError(f"{_FN}: labels must be int64, got {labels.dtype}")
    if labels.shape != logits.shape[:1]:
        raise ValueError(
            f"{_FN}: labels must have shape [{logits.shape[0]}] to match logits {tuple(logits.shape)}, "
            f"got {tuple(labels.shape)}"
        )
    _validate.same_device(_FN, "logits", logits, labels=labels)
    _validate.reduction(_FN, reduction)
    alpha = _validate.finite_number(_FN, "alpha", alpha)
    gamma = _validate.finite_number(_FN, "gamma", gamma, minimum=0.0)
    num_classes = logits.shape[1]
    # Under torch.compile the check would be a data-dependent graph break; the CPU kernel checks labels itself.
    if labels.numel() and (labels.device.type == "cpu" or check_values()) and not torch.compiler.is_compiling():
        top = int(labels.max())
        if top > num_classes:
            raise ValueError(
                f"{_FN}: labels must be < 0 (ignored), 0..C-1 (class) or C (background) with C={num_classes}, "
                f"got a label {top}"
            )

    name = resolve_backend(backend, logits.device)
    if name == "reference":
        return reference.sigmoid_focal_loss(logits, labels, alpha, gamma, reduction)
    op = getattr(torch.ops, _registry.op_namespace(name)).sigmoid_focal_loss_fwd
    compute_grad = torch.is_grad_enabled() and logits.requires_grad
    loss, _ = op(logits, labels, alpha, gamma, 0 if reduction == "none" else 1, compute_grad)
    if reduction == "mean":
        # Divided on the device: no host sync.
        loss = loss / ((labels >= 0).sum() * num_classes).clamp(min=1)
    return loss


# --- fake kernels and autograd for solo:: and solo_triton:: -------------------------------------------------


def _fake(logits: Tensor, labels: Tensor, alpha: float, gamma: float, reduction: int, compute_grad: bool):
    torch._check(logits.dim() == 2, lambda: f"{_FN}: logits must be 2-D")
    torch._check(labels.shape == logits.shape[:1], lambda: f"{_FN}: labels must have shape [N]")
    acc = reference.acc_dtype(logits.dtype)
    loss = logits.new_empty(logits.shape if reduction == 0 else (), dtype=acc)
    grad = logits.new_empty(logits.shape) if compute_grad else logits.new_empty((0,))
    return loss, grad


def _setup_context(ctx, inputs, output):
    ctx.compute_grad = inputs[5]
    grad = output[1]
    ctx.mark_non_differentiable(grad)
    ctx.save_for_backward(grad)


def _backward(ctx, grad_loss, _grad_of_grad):
    if not ctx.compute_grad:
        raise RuntimeError(
            f"{_FN}: the op was called with compute_grad=False, so no gradient was computed; call "
            "solo.ops.sigmoid_focal_loss with logits that require grad"
        )
    (grad,) = ctx.saved_tensors
    # grad is d(elementwise loss)/d(logits); the chain rule is one multiply by the incoming gradient
    # (a scalar for "sum", [N, C] for "none").
    return (grad * grad_loss).to(grad.dtype), None, None, None, None, None


for _ns in _registry.namespaces():
    _name = f"{_ns}::sigmoid_focal_loss_fwd"
    torch.library.register_fake(_name)(_fake)
    torch.library.register_autograd(_name, _backward, setup_context=_setup_context)
