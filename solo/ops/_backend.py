"""Backend selection for the solo ops: explicit argument > ``SOLO_BACKEND`` environment variable > auto.

Backends:
  reference  pure PyTorch, written straight from the SOLO formulas; any device; the test oracle
  cpu        the C++ kernels of ``solo._C`` (CPU tensors)
  cuda       the CUDA kernels of ``solo._C`` (CUDA tensors; needs an extension built with CUDA)
  triton     the Triton kernels (CUDA tensors; CPU tensors only under ``TRITON_INTERPRET=1``, for tests)

``auto`` (or None) picks the fastest usable backend for the inputs' device: cpu on CPU, cuda then triton on
CUDA, else reference. A backend asked for explicitly that cannot run raises ``RuntimeError`` with the reason. A backend
with a minimum compute capability (``MIN_CAPABILITY``) cannot run on an older CUDA device: auto skips it there.
"""

from __future__ import annotations

import functools
import os

import torch

from solo.ops import _ext

BACKENDS = ("reference", "cpu", "cuda", "triton")
_AUTO_ORDER = {"cpu": ("cpu", "reference"), "cuda": ("cuda", "triton", "reference")}
# Oldest compute capability each backend runs on, where it has one. Triton: solo's kernels are compiled for sm_75
# and newer by the compile gate (python -m solo.tools.triton_compile_check; matrix_nms switches to fp16 MMA below
# sm_80), and Triton's NVIDIA backend does not target older GPUs.
MIN_CAPABILITY = {"triton": (7, 5)}


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


def _device_capability(device: torch.device) -> tuple[int, int] | None:
    """(major, minor) of a CUDA device (the current one when it has no index); None when no CUDA device exists."""
    if device.type != "cuda" or not torch.cuda.is_available():
        return None
    return torch.cuda.get_device_capability(device if device.index is not None else torch.cuda.current_device())


def capability_status(name: str, device: torch.device | str | None) -> tuple[bool, str]:
    """(ok, reason): whether backend ``name`` supports the compute capability of CUDA ``device`` (MIN_CAPABILITY).
    True for other devices, for None (any device) and for backends without a minimum."""
    need = MIN_CAPABILITY.get(name)
    if need is None or device is None:
        return True, ""
    cap = _device_capability(torch.device(device))
    if cap is None or tuple(cap) >= need:
        return True, ""
    return False, (
        f"the {name} backend needs compute capability {need[0]}.{need[1]} or newer, "
        f"{torch.device(device)} has {cap[0]}.{cap[1]}"
    )


def triton_interpret() -> bool:
    """Whether the Triton kernels were defined for the interpreter (TRITON_INTERPRET=1 when triton was imported)."""
    from solo.ops import _registry

    if _registry.TRITON_ERROR is None:
        from solo.ops import _triton_focal_loss

        return _triton_focal_loss._is_interpreted()
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def parse_arch_list(arch_list: str) -> list[tuple[int, int, bool]]:
    """``"7.5;8.0;9.0+PTX"`` (TORCH_CUDA_ARCH_LIST syntax: ';' or spaces, optional ``+PTX``) ->
    ``[(7, 5, False), (8, 0, False), (9, 0, False), (9, 0, True)]``: (major, minor, is_ptx) for each code the
    extension carries; ``X.Y+PTX`` carries both sm_XY machine code and compute_XY PTX. Suffixed architectures
    (``9.0a``) count as their base. Raises ValueError on other entries (torch also takes names like ``Hopper``)."""
    codes = []
    for entry in arch_list.replace(";", " ").replace(",", " ").split():
        base, _, suffix = entry.partition("+")
        digits = base.rstrip("af").split(".")
        if len(digits) != 2 or not all(d.isdigit() for d in digits) or suffix.upper() not in ("", "PTX"):
            raise ValueError(f"unrecognised CUDA architecture {entry!r} in {arch_list!r}")
        major, minor = int(digits[0]), int(digits[1])
        codes.append((major, minor, False))
        if suffix.upper() == "PTX":
            codes.append((major, minor, True))
    return codes


@functools.lru_cache(maxsize=64)  # a pure function of its arguments, asked on every op call on a CUDA tensor
def arch_runs_on(arch_list: str, capability: tuple[int, int]) -> bool:
    """Whether an extension built for ``arch_list`` has code a device of ``capability`` can run: machine code of
    the same major version and a minor version <= the device's (sm_80 runs on 8.6), or PTX of a version <= the
    device's, which the driver compiles at the first launch (compute_90 runs on 10.0, slowly the first time)."""
    major, minor = capability
    for code_major, code_minor, ptx in parse_arch_list(arch_list):
        if ptx and (code_major, code_minor) <= (major, minor):
            return True
        if not ptx and code_major == major and code_minor <= minor:
            return True
    return False


def _cuda_arch_status(device: torch.device | None) -> tuple[bool, str]:
    """(usable, reason) of the cuda backend on ``device`` (None: the current device) given the architectures
    solo._C was compiled for. Without the check, a kernel launch on a GPU the build has no code for fails with
    'no kernel image is available for execution on the device' in the middle of a training step."""
    arch_list = getattr(_ext.BUILD_INFO, "CUDA_ARCH_LIST", None)
    if not arch_list:  # a build from before the record held the list: nothing to compare with
        return True, "solo._C CUDA kernels"
    index = device.index if device is not None and device.index is not None else torch.cuda.current_device()
    capability = tuple(torch.cuda.get_device_capability(index))
    try:
        runs = arch_runs_on(arch_list, capability)
    except ValueError:  # e.g. a named architecture: let the launch decide rather than refuse a working build
        return True, f"solo._C CUDA kernels (built for {arch_list}; not checked against this device)"
    if runs:
        return True, f"solo._C CUDA kernels (built for {arch_list})"
    name = torch.cuda.get_device_name(index)
    sm = f"sm_{capability[0]}{capability[1]}"
    return False, (
        f"solo._C's CUDA kernels were built for the architectures {arch_list}, none of which runs on cuda:{index} "
        f"({name}, compute capability {capability[0]}.{capability[1]}, {sm}); rebuild for it with: "
        f'TORCH_CUDA_ARCH_LIST="{capability[0]}.{capability[1]}" '
        + _ext.rebuild_command(getattr(_ext.BUILD_INFO, "SOURCE_DIR", None))
    )


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
        return _cuda_arch_status(torch.device(device) if dev == "cuda" else None)
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
    if dev == "cuda":
        ok, why_not = capability_status(name, device)
        if not ok:
            return False, why_not
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
