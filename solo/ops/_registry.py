"""Where the compiled and Triton implementations of an op live: ``torch.ops.solo`` (the C++ extension, cpu and
cuda backends) and ``torch.ops.solo_triton`` (Python custom ops launching Triton kernels). Both namespaces have
the same schemas; fake kernels and autograd are registered once for each by the op modules."""

from __future__ import annotations

from solo.ops import _ext

TRITON_ERROR: str | None = None
try:
    from solo.ops import (  # noqa: F401  (register solo_triton::*)
        _triton_assign_grid_targets,
        _triton_dice_loss,
        _triton_downsample_masks,
        _triton_focal_loss,
        _triton_matrix_nms,
        _triton_paste_masks,
    )
except Exception as e:  # noqa: BLE001  triton missing or unusable (any error): the other backends still work
    TRITON_ERROR = f"{type(e).__name__}: {e}"


def namespaces() -> list[str]:
    """The op namespaces whose schemas exist in this process."""
    out = []
    if _ext.has_ext():
        out.append("solo")
    if TRITON_ERROR is None:
        out.append("solo_triton")
    return out


def op_namespace(backend: str) -> str:
    return "solo_triton" if backend == "triton" else "solo"
