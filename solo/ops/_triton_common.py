"""Helpers shared by the Triton kernels (solo/ops/_triton_*.py): math helpers, and the one launch path.

Every Triton launch of the package goes through :func:`launch`. Normally it launches; inside :func:`recording` it
records the launch (kernel, grid, arguments, constexprs, options) instead, so the compile gate
(``python -m solo.tools.triton_compile_check``) compiles exactly the launches the ops' own host code chooses, for
real GPU targets, without a GPU. The launch-parameter choices that depend on the device read it through
:func:`device_capability` / :func:`sm_count`: from the tensor's CUDA device at run time, from the recorded target
in the gate. Host reads of a kernel's result (data-dependent sizes) go through :func:`host_value`, which returns a
documented stand-in while recording (the kernels did not run).
"""

import contextlib
import contextvars
import dataclasses
import functools
import operator
import os
import struct
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import triton
import triton.language as tl


def _interpreter_scalar_index_is_broken(patch_lang_tensor=None) -> bool:
    """Whether the Triton interpreter fails to turn a scalar argument into a Python int (``range(0, n, BLOCK)`` over a
    runtime ``n`` in a kernel). Triton 3.6's interpreter calls ``int()`` on the scalar's 1-element array, which NumPy
    2.4 refuses ("only 0-dimensional arrays can be converted to Python scalars"); Triton 3.8 squeezes the array
    first. Probed on the interpreter itself, so any other release is judged by what it does. ``patch_lang_tensor``:
    the interpreter function to probe (default: Triton's own, without solo's fix)."""
    from triton.runtime import interpreter as interp

    if patch_lang_tensor is None:
        patch_lang_tensor = getattr(interp._patch_lang_tensor, "_solo_original", interp._patch_lang_tensor)
    scope = interp._LangPatchScope()
    try:
        patch_lang_tensor(tl.tensor, scope)
        scalar = tl.tensor(interp.TensorHandle(np.array([3], dtype=np.int32), tl.int32), tl.int32)
        try:
            return operator.index(scalar) != 3
        except TypeError:
            return True
    finally:
        scope.restore()


def _fix_interpreter_scalar_index() -> bool:
    """Under TRITON_INTERPRET=1 with a Triton whose interpreter has the bug above, make its per-launch patch of
    ``tl.tensor.__index__`` squeeze the array first (what Triton 3.8+ does). Nothing changes elsewhere: compiled
    kernels never take this path, and a fixed interpreter is left as it is. True when the fix was installed."""
    if os.environ.get("TRITON_INTERPRET", "0") != "1":
        return False
    try:
        from triton.runtime import interpreter as interp

        if getattr(interp._patch_lang_tensor, "_solo_index_fix", False):
            return True
        if not _interpreter_scalar_index_is_broken():
            return False
        original = interp._patch_lang_tensor

        def _patch_lang_tensor(tensor, scope):
            original(tensor, scope)
            scope.set_attr(tensor, "__index__", lambda self: int(self.handle.data.squeeze()))

        _patch_lang_tensor._solo_index_fix = True
        _patch_lang_tensor._solo_original = original
        interp._patch_lang_tensor = _patch_lang_tensor
        return True
    except (AttributeError, ImportError):  # an interpreter laid out otherwise: nothing to fix that we know of
        return False


INTERPRETER_INDEX_FIX = _fix_interpreter_scalar_index()


@triton.jit
def to_acc(x, FP64: tl.constexpr):
    # Accumulation dtype: float64 for float64 inputs, float32 otherwise (fp16/bf16/uint8 are upcast on load).
    if FP64:
        r = x.to(tl.float64)
    else:
        r = x.to(tl.float32)
    return r


def split_f32(v: float) -> tuple[float, float]:
    """Triton passes Python floats as fp32; float64 kernels rebuild the value as hi + lo."""
    hi = struct.unpack("f", struct.pack("f", v))[0]
    return hi, float(v - hi)


def device_ctx(t: torch.Tensor):
    """Triton launches on the current CUDA device: make it the tensor's device."""
    return torch.cuda.device(t.device) if t.is_cuda else contextlib.nullcontext()


# ---------------------------------------------------------------------------------------------------------------
# Launch recording (the compile gate)
# ---------------------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Launch:
    """One recorded launch: ``kernel[grid](*args, **kwargs)``; kwargs hold constexprs and launch options."""

    kernel: Any  # the @triton.jit JITFunction
    grid: tuple[int, ...]
    args: tuple
    kwargs: dict


@dataclasses.dataclass
class _Recorder:
    capability: int  # e.g. 80 for sm_80
    sms: int
    launches: list[Launch]


_RECORDER: contextvars.ContextVar[_Recorder | None] = contextvars.ContextVar("solo_triton_recorder", default=None)

# Streaming-multiprocessor counts of a typical GPU of each compute capability: the stand-in for
# ``multi_processor_count`` while recording (T4, A100, A10, L4, H100, B200, RTX 5090).
TYPICAL_SMS = {75: 40, 80: 108, 86: 84, 89: 58, 90: 132, 100: 148, 103: 148, 110: 148, 120: 170, 121: 48}


@contextlib.contextmanager
def recording(capability: int, sms: int | None = None):
    """Record the Triton launches of the code inside instead of running them, as if on a GPU of compute capability
    ``capability`` (int, 10 * major + minor) with ``sms`` multiprocessors. Yields the list of :class:`Launch`.

    The ops accept CPU or meta tensors while recording (their "CPU needs the interpreter" check is skipped); nothing
    is read from or written to the tensors by the kernels."""
    if not isinstance(capability, int) or capability <= 0:
        raise ValueError(f"recording: capability must be a positive int such as 80, got {capability!r}")
    rec = _Recorder(capability, sms if sms is not None else TYPICAL_SMS.get(capability, 100), [])
    token = _RECORDER.set(rec)
    try:
        yield rec.launches
    finally:
        _RECORDER.reset(token)


def is_recording() -> bool:
    return _RECORDER.get() is not None


def launch(kernel, grid: tuple[int, ...], *args, **kwargs) -> None:
    """``kernel[grid](*args, **kwargs)``, or, inside :func:`recording`, append the launch to the record."""
    rec = _RECORDER.get()
    if rec is None:
        kernel[grid](*args, **kwargs)
        return
    grid = tuple(int(g) for g in grid)
    rec.launches.append(Launch(kernel, grid, args, dict(kwargs)))


def host_value(compute: Callable[[], Any], stand_in: Callable[[], Any]) -> Any:
    """A value the host reads back from a kernel's result (``compute()``, a sync); while recording the kernels did not
    run, so ``stand_in()`` (a realistic value documented at the call site) is returned instead."""
    return stand_in() if is_recording() else compute()


def device_capability(t: torch.Tensor) -> int | None:
    """Compute capability (10 * major + minor) the kernels will run on: the tensor's CUDA device, the recorded target
    while recording, None for CPU tensors (interpreter)."""
    rec = _RECORDER.get()
    if rec is not None:
        return rec.capability
    if not t.is_cuda:
        return None
    major, minor = torch.cuda.get_device_capability(t.device)
    return 10 * major + minor


@functools.cache
def _cuda_sm_count(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def sm_count(t: torch.Tensor) -> int | None:
    """Multiprocessors of the device the kernels will run on (the recorded stand-in while recording; None on CPU)."""
    rec = _RECORDER.get()
    if rec is not None:
        return rec.sms
    if not t.is_cuda:
        return None
    return _cuda_sm_count(t.device.index if t.device.index is not None else torch.cuda.current_device())


def cpu_allowed(interpreted: bool) -> bool:
    """Whether an op may take CPU (or meta) tensors: under the interpreter, or while recording launches."""
    return interpreted or is_recording()
