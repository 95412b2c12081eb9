"""Backend selection and the pure-Python fallback."""

import os
import subprocess
import sys

import pytest
import torch

import solo.ops
from solo.ops import _backend


def test_available_backends_reports_every_backend_with_a_reason():
    status = solo.ops.available_backends()
    assert set(status) == {"reference", "cpu", "cuda", "triton"}
    for ok, why in status.values():
        assert isinstance(ok, bool) and isinstance(why, str) and why
    assert status["reference"][0]
    if not torch.cuda.is_available():
        assert not solo.ops.available_backends("cpu")["cuda"][0]


def test_unavailable_backend_raises_with_reason(monkeypatch):
    x, lab = torch.randn(3, 2), torch.tensor([0, 1, 2])
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="'cuda' cannot run on cpu tensors"):
            solo.ops.sigmoid_focal_loss(x, lab, backend="cuda")
    monkeypatch.setattr(_backend._ext, "EXT_ERROR", "simulated: solo._C missing")
    with pytest.raises(RuntimeError, match="simulated: solo._C missing"):
        solo.ops.sigmoid_focal_loss(x, lab, backend="cpu")


def test_auto_and_env(monkeypatch):
    dev = torch.device("cpu")
    monkeypatch.delenv("SOLO_BACKEND", raising=False)
    expected = "cpu" if solo.ops.available_backends("cpu")["cpu"][0] else "reference"
    assert _backend.resolve_backend(None, dev) == expected
    assert _backend.resolve_backend("auto", dev) == expected
    monkeypatch.setenv("SOLO_BACKEND", "reference")
    assert _backend.resolve_backend(None, dev) == "reference"
    assert _backend.resolve_backend("auto", dev) == "reference"
    monkeypatch.setenv("SOLO_BACKEND", "nonsense")
    with pytest.raises(ValueError, match="backend must be one of"):
        _backend.resolve_backend(None, dev)


def test_env_backend_is_used_by_ops(monkeypatch):
    """SOLO_BACKEND=reference routes through the reference: the fused forward computes no saved gradient."""
    x = torch.randn(4, 3, requires_grad=True)
    lab = torch.tensor([0, 3, -1, 2])
    monkeypatch.setenv("SOLO_BACKEND", "reference")
    loss = solo.ops.sigmoid_focal_loss(x, lab)
    assert "Ops" not in type(loss.grad_fn).__name__  # plain autograd of the reference graph
    torch.testing.assert_close(loss, solo.ops.sigmoid_focal_loss(x, lab, backend="reference"))


def test_import_without_extension_or_triton():
    """`import solo` works with neither solo._C nor triton, and the ops fall back to the reference."""
    code = (
        "import sys; sys.modules['solo._C'] = None; sys.modules['triton'] = None\n"
        "import torch, solo\n"
        "s = solo.ops.available_backends()\n"
        "assert s['reference'][0] and not s['cpu'][0] and not s['triton'][0], s\n"
        "print(s['cpu'][1]); print(s['triton'][1])\n"
        "x = torch.randn(5, 4, requires_grad=True)\n"
        "solo.ops.sigmoid_focal_loss(x, torch.tensor([0, 1, 4, -1, 3])).backward()\n"
        "assert x.grad is not None\n"
        "print(float(solo.ops.dice_loss(torch.randn(2, 3, 3), torch.ones(2, 3, 3)).sum()))\n"
    )
    env = dict(os.environ, SOLO_BACKEND="")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "solo._C is not built" in out.stdout and "pip install --no-build-isolation" in out.stdout
    assert "triton is not installed" in out.stdout
