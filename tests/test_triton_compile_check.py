"""The Triton compile gate (solo/tools/triton_compile_check.py) and the recording path it relies on.

The gate compiles real kernels, so it runs in a subprocess without TRITON_INTERPRET (conftest switches the
interpreter on for this process). Each subprocess compiles only a handful of variants (--targets/--cases).
"""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

pytest.importorskip("triton")

from solo.ops import _triton_common

REPO = Path(__file__).resolve().parents[1]

PLANTED = '''
"""Test-only op: a kernel that cannot compile (non power-of-2 arange), a helper, and a kernel no case launches."""
import torch
import triton
import triton.language as tl

from solo.ops._triton_common import launch
from solo.tools.triton_compile_check import Case


@triton.jit
def _planted_helper(x):
    return x * 2


@triton.jit
def _planted_broken_kernel(x_ptr, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    tl.store(x_ptr + offs, _planted_helper(tl.load(x_ptr + offs, mask=offs < n)), mask=offs < n)


@triton.jit
def _planted_unlaunched_kernel(x_ptr):
    tl.store(x_ptr, 1.0)


def planted_op(x, block):
    launch(_planted_broken_kernel, (triton.cdiv(x.numel(), block),), x, x.numel(), BLOCK=block, num_warps=1)


CASES = [Case("planted", "x fp32[1000] block=3", lambda: planted_op(torch.empty(1000, device="meta"), 3))]
'''


def run_gate(*args: str, tmp_path: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), str(tmp_path)])
    cmd = [sys.executable, "-m", "solo.tools.triton_compile_check", "--workers", "2", *args]
    return subprocess.run(cmd, check=False, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def test_gate_fails_on_planted_compile_error_and_uncovered_kernel(tmp_path):
    (tmp_path / "planted_triton_op.py").write_text(textwrap.dedent(PLANTED))
    r = run_gate("--targets", "80", "--ops", "planted", "--plugin", "planted_triton_op", tmp_path=tmp_path)
    out = r.stdout + r.stderr
    assert r.returncode == 1, out
    # The compile failure names kernel, target, the case's parameters, constexprs and Triton's message.
    assert "kernel _planted_broken_kernel, target sm_80" in out
    assert "case: planted: x fp32[1000] block=3" in out
    assert "BLOCK=3" in out and "num_warps=1" in out
    assert "power of 2" in out
    # The kernel no case launches is reported; the helper called from a kernel is not an entry kernel.
    assert "planted_triton_op._planted_unlaunched_kernel, target sm_80" in out
    assert "never compiled" in out
    assert "_planted_helper" not in out


def test_gate_compiles_the_three_fixed_kernels(tmp_path):
    """The three launches that failed before issue 13's fixes (each fails on the old kernels, see
    benchmarks/results/triton_compile_check_before_fix.txt): paste_masks' separable path, matrix_nms' intersections
    on sm_75 (the fp16 MMA variant now), the cells kernel with a canvas of height 1. sm_75 only: the paste and cells
    defects failed on every target, the matrix_nms one only there."""
    cases = (
        r"^paste_masks: probs fp32\[100, 200, 336\] .* out \[800, 1333\]"
        r"|^matrix_nms: masks u8\[500, 200, 336\] kernel=0 areas=counted"
        r"|^assign_grid_targets: cells: boxes fp32\[16, 4\] batch=2 canvas \[1, 1344\] .* mode=1"
    )
    r = run_gate("--targets", "75", "--cases", cases, tmp_path=tmp_path)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    for kernel in ("_paste_kernel", "_inter_kernel", "_cells_count_kernel"):
        line = next(ln for ln in out.splitlines() if ln.startswith(kernel + " "))
        assert "NOT COMPILED" not in line and "/" not in line, line  # "k ok", not "j/k ok"


def test_recording_chooses_the_mma_variant_from_the_target():
    """matrix_nms picks fp16 MMA below sm_80 and int8 from sm_80 on, and caps a K split at 2^24 for fp16."""
    from solo.ops import _triton_matrix_nms as m
    from solo.tools.triton_compile_check import _entry

    f = _entry(m.matrix_nms)
    n = 3
    args = (torch.empty((n, 8192, 8192), dtype=torch.uint8, device="meta"), torch.empty(n, dtype=torch.int64))
    args = (args[0], args[1].to("meta"), torch.empty(n, device="meta"), None, 0, 2.0)
    for cc, fp16 in ((75, True), (80, False), (90, False)):
        with _triton_common.recording(cc) as launches:
            f(*args)
        inter = [ln for ln in launches if ln.kernel is m._inter_kernel]
        assert len(inter) == 1 and inter[0].kwargs["FP16_MMA"] is fp16
        k_per_split = inter[0].args[5]
        assert k_per_split % m._BLOCK_K == 0
        if fp16:
            assert k_per_split <= 2**24 and inter[0].grid[1] * k_per_split >= 8192 * 8192
    assert not _triton_common.is_recording()


def test_recording_stand_in_for_host_reads():
    """assign_grid_targets reads a count back from the device; while recording the stand-in keeps the later
    launches (the SOLOv2 pairs kernel) coming."""
    from solo.ops import _triton_assign_grid_targets as m
    from solo.tools.triton_compile_check import _entry

    f = _entry(m.assign_grid_targets_cells)
    M = 4
    meta = {"device": "meta"}
    args = (
        torch.empty((M, 3), dtype=torch.int64, **meta),
        torch.empty((M, 4), **meta),
        torch.empty(M, dtype=torch.int64, **meta),
        torch.empty(M, dtype=torch.int64, **meta),
    )
    with _triton_common.recording(80) as launches:
        f(*args, 2, 800, 1344, [40, 36], [1.0, 96.0, 48.0, 192.0], 0.2, 80, 1)
    names = [ln.kernel.fn.__name__ for ln in launches]
    assert names == ["_cells_count_kernel", "_cells_label_kernel", "_cells_pairs_kernel"]


def test_every_entry_kernel_has_a_case():
    """The coverage rule without compiling: each entry kernel is launched by some default case on every target
    (the gate's own recording, on meta tensors)."""
    from solo.tools import triton_compile_check as g

    entries = g.entry_kernels(g.kernel_modules())
    assert entries, "no entry kernels found"
    assert not any(k.endswith((".to_acc", "._linear_taps")) for k in entries)  # helpers
    cases = g.default_cases()
    for cc in (75, 90):
        launched = set()
        for case in cases:
            with _triton_common.recording(cc) as launches:
                case.run()
            launched |= {f"{ln.kernel.fn.__module__}.{ln.kernel.fn.__name__}" for ln in launches}
        assert set(entries) <= launched, set(entries) - launched


def test_backend_minimum_capability(monkeypatch):
    """A CUDA device older than the triton backend's minimum: auto never picks triton, asking for it raises."""
    from solo.ops import _backend

    cuda = torch.device("cuda", 0)
    monkeypatch.setattr(_backend, "_device_capability", lambda device: (7, 0))
    ok, why = _backend.capability_status("triton", cuda)
    assert not ok and "compute capability 7.5" in why and "has 7.0" in why
    assert _backend.capability_status("reference", cuda) == (True, "")
    monkeypatch.setattr(_backend, "_device_capability", lambda device: None if device.type != "cuda" else (7, 0))
    assert _backend.capability_status("triton", torch.device("cpu")) == (True, "")
    # backend_status of triton on this device reports the reason (when triton itself is usable here).
    if _backend._triton_status()[0] and _backend.backend_status("triton", "cpu")[0]:
        ok, why = _backend.backend_status("triton", cuda)
        assert not ok and "compute capability" in why
        monkeypatch.delenv("SOLO_BACKEND", raising=False)
        monkeypatch.setattr(_backend, "backend_status", _wrap_cuda_unavailable(_backend.backend_status))
        assert _backend.resolve_backend(None, cuda) == "reference"
        with pytest.raises(RuntimeError, match="'triton' cannot run on cuda tensors: .*compute capability 7.5"):
            _backend.resolve_backend("triton", cuda)
    # A device new enough passes.
    monkeypatch.setattr(_backend, "_device_capability", lambda device: (7, 5))
    assert _backend.capability_status("triton", cuda) == (True, "")


def _wrap_cuda_unavailable(status):
    # The cuda backend is not built here; keep it out of auto's choice explicitly so the test does not depend on it.
    def wrapped(name, device=None):
        if name == "cuda":
            return False, "not under test"
        return status(name, device)

    return wrapped


def test_no_launch_bypasses_the_recording_helper():
    """Every launch goes through _triton_common.launch (else the gate could not see it): no `kernel[grid](` left."""
    import re

    for path in sorted((REPO / "solo" / "ops").glob("_triton_*.py")):
        direct = re.findall(
            r"^.*\b\w+\[[^\]\n]*\]\s*\(\s*$|^.*\b_\w+_kernel\[.*\]\(.*$", path.read_text(), re.MULTILINE
        )
        assert not direct, f"{path.name}: launch without _triton_common.launch: {direct}"
