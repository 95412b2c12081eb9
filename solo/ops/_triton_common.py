"""Helpers shared by the Triton loss kernels (solo/ops/_triton_*.py)."""

import contextlib
import operator
import os
import struct

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
