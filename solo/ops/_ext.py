"""Loading of the compiled extension ``solo._C`` (optional: every op has a pure-PyTorch reference).

The library is C++ compiled against one torch release, and torch has no stable C++ ABI: loaded under another
release it fails with an undefined symbol at best, and can crash at worst. So before loading it, the torch it was
built for (recorded by setup.py in ``solo/_build_info.py``) is compared with the torch that is imported; on a
mismatch the library is not loaded, ``import solo`` warns once with both versions and the command that fixes it,
and every op falls back to the reference (``solo.ops.available_backends()`` gives the same reason).
"""

from __future__ import annotations

import importlib
import os
import warnings

import torch

__all__ = ["BUILD_INFO", "EXT_ERROR", "build_mismatch", "has_cuda_kernels", "has_ext", "rebuild_command"]


def _public(version: str) -> str:
    return version.split("+", 1)[0]


def rebuild_command(source_dir: str | None) -> str:
    """The one command that rebuilds solo._C against the torch installed now."""
    here = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # above solo/
    if os.path.exists(os.path.join(here, "setup.py")):  # imported from a source checkout (editable or run in place)
        return f"pip install --no-build-isolation --no-deps -e {here}"
    if source_dir and os.path.exists(os.path.join(source_dir, "setup.py")):
        return f"pip install --no-build-isolation --no-deps --force-reinstall {source_dir}"
    return "pip install --no-build-isolation --no-deps --force-reinstall <solo source folder>"


def build_mismatch(build_info, torch_version: str) -> str | None:
    """Why the extension described by ``build_info`` (the ``solo._build_info`` module, or None when absent) must
    not be loaded under torch ``torch_version``; None when it may.

    Only the release counts (``2.13.0``): the local label (``+cpu``, ``+cu130``) names the CPU or CUDA variant of
    the same release, which shares the C++ ABI (a CPU-only build just has no CUDA kernels, see backend_status).
    """
    if build_info is None:
        return None
    built = getattr(build_info, "TORCH_VERSION", None)
    if not built or _public(built) == _public(torch_version):
        return None
    return (
        f"solo._C was built for torch {built} but torch {torch_version} is installed, so it is not loaded and "
        f"the ops use the reference backend (correct, slower). Rebuild it for this torch with: "
        f"{rebuild_command(getattr(build_info, 'SOURCE_DIR', None))}"
        f"  (or reinstall the torch it was built for: pip install torch=={_public(built)})"
    )


def _load() -> tuple[object | None, str | None]:
    """(build info module or None, error or None); loads the library when it is safe to."""
    try:
        from solo import _build_info as info
    except ImportError:  # a build from before the build record existed, or a pure-Python install
        info = None
    mismatch = build_mismatch(info, torch.__version__)
    if mismatch is not None:
        return info, mismatch
    try:
        # import_module, not `from solo import _C`: a missing file then raises ModuleNotFoundError naming solo._C, where
        # the from-import of a module of a package still being imported raises a plain ImportError that blames a
        # "circular import" (loading the library runs its TORCH_LIBRARY registrations).
        importlib.import_module("solo._C")
    except ModuleNotFoundError as e:
        if e.name != "solo._C":
            return info, f"solo._C could not be loaded ({type(e).__name__}: {e})"
        return info, (
            "solo._C is not built (pure-Python install, or a source folder that was never built); build it with: "
            f"{rebuild_command(getattr(info, 'SOURCE_DIR', None))}"
        )
    except Exception as e:  # noqa: BLE001  an undefined symbol (a build from before the record, for another torch), bad file
        return info, (
            f"solo._C could not be loaded ({type(e).__name__}: {e}); rebuild it against the installed torch "
            f"{torch.__version__} with: {rebuild_command(getattr(info, 'SOURCE_DIR', None))}"
        )
    return info, None


BUILD_INFO, EXT_ERROR = _load()
if EXT_ERROR is not None and BUILD_INFO is not None:
    # A build exists but cannot be used: say so once, loudly (a missing build is the normal pure-Python case and is
    # reported by available_backends / an explicit backend request instead).
    warnings.warn(EXT_ERROR, RuntimeWarning, stacklevel=2)


def has_ext() -> bool:
    """True when the compiled extension is loaded (its CPU kernels are then always present)."""
    return EXT_ERROR is None


def has_cuda_kernels() -> bool:
    """True when the extension was built with its CUDA kernels."""
    return has_ext() and torch._C._dispatch_has_kernel_for_dispatch_key("solo::dice_loss_fwd", "CUDA")
