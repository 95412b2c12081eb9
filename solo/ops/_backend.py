"""Backend selection for the solo ops: explicit argument > ``SOLO_BACKEND`` environment variable > auto.

Backends:
  reference  pure PyTorch, written straight from the SOLO formulas; any device; the test oracle
  cpu        the C++ kernels of ``solo._C`` (CPU tensors)
  cuda       the CUDA kernels of ``solo._C`` (CUDA tensors; needs an extension built with CUDA)
  triton     the Triton kernels (CUDA tensors; CPU tensors only under ``TRITON_INTERPRET=1``, for tests)

``auto`` (or None) picks the fastest usable backend for the inputs' device: cpu on CPU, cuda then triton on
CUDA, else reference. A backend asked for explicitly that cannot run raises ``RuntimeError`` with the reason.
"""

from __future__ import annotations

import os

import torch

from solo.ops import _ext

BACKENDS = ("reference", "cpu", "cuda", "triton")
_AUTO_ORDER = {"cpu": ("cpu", "reference"), "cuda": ("cuda", "triton", "reference")}


def _triton_status() -> tuple[bool, str]:
    try:
        import triton
    except Exception as e:  # noqa: BLE001  ImportError, or a broken installation
        return False, f"triton is not installed ({type(e).__name__}: {e})"
    from solo._versions import SUPPORTED_TRITON, below_minimum

    too_old = below_minimum("triton", triton.__version__, SUPPORTED_TRITON)
    if too_old:  # the kernels use Triton language features of the supported releases (e.g. tl.gather)
        return False, f"{too_old}: pip install 'triton{SUPPORTED_TRITON}'"
    return True, f"triton {triton.__version__}"


def triton_interpret() -> bool:
    """Whether the Triton kernels were defined for the interpreter (TRITON_INTERPRET=1 when triton was imported)."""
    from solo.ops import _registry

    if _registry.TRITON_ERROR is None:
        from solo.ops import _triton_focal_loss

        return _triton_focal_loss._is_interpreted()
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def backend_status(name: str, device: torch.device | str | None = None) -> tuple[bool, str]:
    """(usable, reason) for backend ``name`` on ``device`` (None: any device this machine has)."""
    if name not in BACKENDS:
        raise ValueError(f"backend must be one of {('auto',) + BACKENDS}, got {name!r}")
    dev = None if device is None else torch.device(device).type
    if name == "reference":
        return True, "pure PyTorch"
    if name == "cpu":
        if not _ext.has_ext():
            return False, _ext.EXT_ERROR or "solo._C is missing"
        if dev not in (None, "cpu"):
            return False, f"the cpu backend runs on CPU tensors, not {dev}"
        return True, "solo._C CPU kernels"
    if name == "cuda":
        if not _ext.has_ext():
            return False, _ext.EXT_ERROR or "solo._C is missing"
        if not _ext.has_cuda_kernels():
            built = getattr(_ext.BUILD_INFO, "TORCH_VERSION", None)
            return False, (
                "solo._C was built without CUDA kernels"
                + (f" (against torch {built})" if built else "")
                + ": a CPU-only torch or no nvcc at build time; rebuild with a CUDA torch and nvcc: "
                + _ext.rebuild_command(getattr(_ext.BUILD_INFO, "SOURCE_DIR", None))
            )
        if dev not in (None, "cuda"):
            return False, f"the cuda backend runs on CUDA tensors, not {dev}"
        if not torch.cuda.is_available():
            return False, "no CUDA device is available"
        return True, "solo._C CUDA kernels"
    ok, why = _triton_status()
    if not ok:
        return False, why
    from solo.ops import _registry

    if _registry.TRITON_ERROR is not None:
        return False, f"solo's Triton kernels failed to load ({_registry.TRITON_ERROR})"
    if dev == "cpu" and not triton_interpret():
        return False, "triton runs on CPU tensors only with TRITON_INTERPRET=1 (slow; for tests)"
    if dev is None and not torch.cuda.is_available() and not triton_interpret():
        return False, "no CUDA device (set TRITON_INTERPRET=1 to run Triton kernels on the CPU)"
    if dev not in (None, "cpu", "cuda"):
        return False, f"triton runs on CUDA tensors, not {dev}"
    return True, why + (" (interpreter)" if dev != "cuda" and triton_interpret() else "")


def available_backends(device: torch.device | str | None = None) -> dict[str, tuple[bool, str]]:
    """Which backends can run (on ``device``, or anywhere on this machine when None), and why not.

    Example: ``{'reference': (True, 'pure PyTorch'), 'cpu': (True, 'solo._C CPU kernels'),
    'cuda': (False, 'no CUDA device is available'), ...}``
    """
    return {name: backend_status(name, device) for name in BACKENDS}


def resolve_backend(backend: str | None, device: torch.device) -> str:
    """The backend to run on ``device``: ``backend`` if given, else $SOLO_BACKEND, else the fastest usable."""
    if backend is None or backend == "auto":
        backend = os.environ.get("SOLO_BACKEND", "auto").strip().lower() or "auto"
        if backend == "auto":
            for name in _AUTO_ORDER.get(device.type, ("reference",)):
                if backend_status(name, device)[0]:
                    return name
            return "reference"
    if not isinstance(backend, str) or backend not in BACKENDS:
        raise ValueError(f"backend must be one of {('auto',) + BACKENDS} or None, got {backend!r}")
    ok, why = backend_status(backend, device)
    if not ok:
        raise RuntimeError(f"solo backend {backend!r} cannot run on {device.type} tensors: {why}")
    return backend


def check_values() -> bool:
    """SOLO_CHECK_VALUES=1 turns on value checks that need a host sync on the GPU (e.g. label ranges)."""
    return os.environ.get("SOLO_CHECK_VALUES", "0") == "1"
