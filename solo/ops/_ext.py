"""Loading of the compiled extension ``solo._C`` (optional: every op has a pure-PyTorch reference)."""

from __future__ import annotations

import torch

try:
    from solo import _C  # noqa: F401  (loading the library runs its TORCH_LIBRARY registrations)

    EXT_ERROR: str | None = None
except Exception as e:  # ImportError, or an undefined symbol from a torch version mismatch
    EXT_ERROR = (
        f"solo._C could not be loaded ({type(e).__name__}: {e}); rebuild with "
        "`pip install --no-build-isolation -e .` against the installed torch"
    )


def has_ext() -> bool:
    """True when the compiled extension is loaded (its CPU kernels are then always present)."""
    return EXT_ERROR is None


def has_cuda_kernels() -> bool:
    """True when the extension was built with its CUDA kernels."""
    return has_ext() and torch._C._dispatch_has_kernel_for_dispatch_key("solo::dice_loss_fwd", "CUDA")
