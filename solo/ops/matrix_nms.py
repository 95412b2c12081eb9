"""Matrix NMS (SOLOv2, SPEC §9.3): decays the scores of masks that overlap better masks of their class, in parallel
for all masks. Intersections are exact integer counts (bit-packed popcount on CPU and CUDA, int8 tensor-core dot
products in Triton); no backend but the reference makes a float copy of the masks."""

from __future__ import annotations

import torch
from torch import Tensor

from solo.ops import _registry, _validate, reference
from solo.ops._backend import check_values, resolve_backend

__all__ = ["matrix_nms"]

_FN = "matrix_nms"
KERNELS = {"gaussian": 0, "linear": 1}
_AREA_DTYPES = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64) + _validate.FLOAT_DTYPES


def matrix_nms(
    masks: Tensor,
    labels: Tensor,
    scores: Tensor,
    kernel: str = "gaussian",
    sigma: float = 2.0,
    areas: Tensor | None = None,
    backend: str | None = None,
) -> Tensor:
    """SOLOv2's Matrix NMS: the decayed scores of N masks sorted by score.

    With ``D_ij`` the IoU of masks i < j of the same label (0 for other pairs), ``comp_i = max_k D_ki`` and
    ``decay_j = min_i f(D_ij) / f(comp_i)``, the result is ``scores * decay``, where ``f(d) = exp(-sigma d^2)``
    (``"gaussian"``: the ratio is ``exp(-sigma (D^2 - comp^2))``) or ``f(d) = 1 - d`` (``"linear"``). An empty mask
    has IoU 0 with everything; in the linear kernel a 0/0 ratio (a duplicate of a duplicate) counts as 0. No mask is
    removed here: SOLO then keeps the scores >= 0.05.

    Args:
        masks (Tensor[N, H, W], bool/uint8): binary masks (a nonzero byte is inside), any strides.
        labels (Tensor[N], int64): class of each mask; only masks of one class decay each other.
        scores (Tensor[N], float16/bfloat16/float32/float64): scores sorted in descending order (index order is the
            priority order: mask i can only decay masks j > i).
        kernel: ``"gaussian"`` (SOLOv2's default) or ``"linear"``.
        sigma: gaussian parameter, finite and >= 0 (SOLO: 2.0; the paper's ``sigma`` is 1 / this). Unused by the
            linear kernel.
        areas (Tensor[N], integer or floating, optional): mask areas, used as given (as float32 in the fused
            backends); counted from the masks when None. Given areas smaller than a mask's pixel count can take an
            IoU outside [0, 1], where the result is unspecified.
        backend: see ``solo.ops.available_backends()``.

    Returns:
        Tensor[N], float32: the decayed scores (N = 0 gives an empty tensor).

    Unsorted scores are a ValueError on the CPU. On the GPU they are only checked with ``SOLO_CHECK_VALUES=1``
    (a check needs a device-to-host sync); otherwise the index order is taken as the priority order.
    """
    _validate.tensor(_FN, "masks", masks)
    _validate.tensor(_FN, "labels", labels)
    _validate.tensor(_FN, "scores", scores)
    if masks.dim() != 3:
        raise ValueError(f"{_FN}: masks must be 3-D [N, H, W], got shape {tuple(masks.shape)}")
    if masks.dtype not in (torch.bool, torch.uint8):
        raise ValueError(f"{_FN}: masks must be bool or uint8, got {masks.dtype}")
    n = masks.shape[0]
    if labels.dtype != torch.int64:
        raise ValueError(f"{_FN}: labels must be int64, got {labels.dtype}")
    if labels.shape != (n,):
        raise ValueError(f"{_FN}: labels must have shape [{n}] to match masks, got {tuple(labels.shape)}")
    _validate.floating(_FN, "scores", scores)
    if scores.shape != (n,):
        raise ValueError(f"{_FN}: scores must have shape [{n}] to match masks, got {tuple(scores.shape)}")
    _validate.same_device(_FN, "masks", masks, labels=labels, scores=scores)
    if areas is not None:
        _validate.tensor(_FN, "areas", areas)
        if areas.dtype not in _AREA_DTYPES:
            raise ValueError(f"{_FN}: areas must be an integer or floating point tensor, got {areas.dtype}")
        if areas.shape != (n,):
            raise ValueError(f"{_FN}: areas must have shape [{n}] to match masks, got {tuple(areas.shape)}")
        _validate.same_device(_FN, "masks", masks, areas=areas)
    if not isinstance(kernel, str) or kernel not in KERNELS:
        raise ValueError(f"{_FN}: kernel must be 'gaussian' or 'linear', got {kernel!r}")
    sigma = _validate.finite_number(_FN, "sigma", sigma, minimum=0.0)
    # A data-dependent check: a graph break under torch.compile, a host sync on the GPU (opt-in there).
    check_order = n > 1 and (scores.device.type == "cpu" or check_values()) and not torch.compiler.is_compiling()
    if check_order and bool((scores[1:] > scores[:-1]).any()):
        i = int((scores[1:] > scores[:-1]).nonzero()[0, 0])
        raise ValueError(
            f"{_FN}: scores must be sorted in descending order, got scores[{i + 1}] = {float(scores[i + 1])} > "
            f"scores[{i}] = {float(scores[i])}"
        )

    name = resolve_backend(backend, masks.device)
    if name == "reference":
        return reference.matrix_nms(masks, labels, scores, kernel, sigma, areas)
    op = getattr(torch.ops, _registry.op_namespace(name)).matrix_nms
    return op(masks, labels, scores, areas, KERNELS[kernel], sigma)


# --- fake kernels for solo:: and solo_triton:: -------------------------------------------------------------------


def _fake(masks: Tensor, labels: Tensor, scores: Tensor, areas: Tensor | None, kernel: int, sigma: float) -> Tensor:
    torch._check(masks.dim() == 3, lambda: f"{_FN}: masks must be 3-D [N, H, W]")
    torch._check(labels.shape == masks.shape[:1], lambda: f"{_FN}: labels must have shape [N]")
    torch._check(scores.shape == masks.shape[:1], lambda: f"{_FN}: scores must have shape [N]")
    return scores.new_empty(masks.shape[:1], dtype=torch.float32)


for _ns in _registry.namespaces():
    torch.library.register_fake(f"{_ns}::matrix_nms")(_fake)
