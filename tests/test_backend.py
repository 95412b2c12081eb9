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
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120, check=False
    )
    assert out.returncode == 0, out.stderr
    assert "solo._C is not built" in out.stdout and "pip install --no-build-isolation" in out.stdout
    assert "triton is not installed" in out.stdout


@pytest.mark.parametrize(
    ("arch_list", "capability", "runs"),
    [
        ("7.5;8.0;8.6;8.9;9.0+PTX", (9, 0), True),  # machine code for the device itself
        ("7.5;8.0;8.6;8.9;9.0+PTX", (8, 7), True),  # sm_86 machine code runs on 8.7 (same major, lower minor)
        ("7.5;8.0;8.6;8.9;9.0+PTX", (10, 0), True),  # compute_90 PTX, JIT-compiled by the driver
        ("7.5;8.0;8.6;8.9;9.0+PTX", (12, 0), True),
        ("7.5;8.0;8.6;8.9;9.0", (10, 0), False),  # no PTX: nothing runs on Blackwell
        ("8.0 9.0", (7, 5), False),  # machine code never runs on an older device
        ("9.0+PTX", (8, 9), False),  # nor PTX of a newer version
        ("10.0;12.0", (12, 1), True),
        ("9.0a", (9, 0), True),
    ],
)
def test_arch_runs_on(arch_list, capability, runs):
    assert _backend.arch_runs_on(arch_list, capability) is runs


def test_parse_arch_list():
    assert _backend.parse_arch_list("7.5;9.0+PTX") == [(7, 5, False), (9, 0, False), (9, 0, True)]
    assert _backend.parse_arch_list(" 8.0  8.6 ") == [(8, 0, False), (8, 6, False)]
    with pytest.raises(ValueError, match="Hopper"):
        _backend.parse_arch_list("Hopper")


def _fake_cuda_device(monkeypatch, capability, arch_list, name="NVIDIA Fake GPU"):
    """The cuda backend's view of a machine with one GPU of ``capability`` and an extension built for
    ``arch_list``: everything but the capability check is made to pass."""
    import types

    monkeypatch.setattr(_backend._ext, "has_ext", lambda: True)
    monkeypatch.setattr(_backend._ext, "has_cuda_kernels", lambda: True)
    info = types.SimpleNamespace(TORCH_VERSION=torch.__version__, CUDA_ARCH_LIST=arch_list, SOURCE_DIR=None)
    monkeypatch.setattr(_backend._ext, "BUILD_INFO", info)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda index=None: capability)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=None: name)


def test_cuda_backend_refuses_a_device_the_build_has_no_code_for(monkeypatch):
    _fake_cuda_device(monkeypatch, (12, 0), "7.5;8.0;8.6;8.9;9.0", name="NVIDIA GeForce RTX 5090")
    ok, why = _backend.backend_status("cuda", "cuda")
    assert not ok
    for part in ("NVIDIA GeForce RTX 5090", "sm_120", "7.5;8.0;8.6;8.9;9.0", 'TORCH_CUDA_ARCH_LIST="12.0"', "pip"):
        assert part in why, (part, why)
    # auto skips it (triton or the reference runs instead); an explicit request raises with the reason
    monkeypatch.delenv("SOLO_BACKEND", raising=False)
    assert _backend.resolve_backend(None, torch.device("cuda")) != "cuda"
    with pytest.raises(RuntimeError, match="sm_120"):
        _backend.resolve_backend("cuda", torch.device("cuda"))


def test_cuda_backend_accepts_a_device_the_build_covers(monkeypatch):
    _fake_cuda_device(monkeypatch, (10, 0), "7.5;8.0;8.6;8.9;9.0+PTX")  # through compute_90 PTX
    ok, why = _backend.backend_status("cuda", "cuda:0")
    assert ok and "9.0+PTX" in why
    monkeypatch.delenv("SOLO_BACKEND", raising=False)
    assert _backend.resolve_backend(None, torch.device("cuda")) == "cuda"
    _fake_cuda_device(monkeypatch, (9, 0), None)  # a build that did not record its list is not refused
    assert _backend.backend_status("cuda", "cuda")[0]
    _fake_cuda_device(monkeypatch, (9, 0), "Hopper")  # nor one whose list names architectures
    assert _backend.backend_status("cuda", "cuda")[0]
