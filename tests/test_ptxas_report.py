"""The ptxas resource report of the CMake build (.ci/ptxas_report.py): parsing, the table, the spill warnings, and the
compiler launcher that keeps each object's ptxas output (it must pass a failing compile's status through)."""

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / ".ci" / "ptxas_report.py"
_spec = importlib.util.spec_from_file_location("ptxas_report", SCRIPT)
ptxas_report = importlib.util.module_from_spec(_spec)
sys.modules["ptxas_report"] = ptxas_report  # dataclasses look the module up by name
_spec.loader.exec_module(ptxas_report)

# Captured from `cmake -DSOLO_PTXAS_REPORT=ON` with nvcc 13.0 (build/cmake/ptxas/*.ptxas.log), lines unchanged:
# a hot kernel spilling on sm_90, a cold one, a kernel without shared memory, and the same hot kernel on sm_120.
DICE_LOG = """\
ptxas info    : 0 bytes gmem
ptxas info    : Compiling entry function '_ZN4solo4cuda50_GLOBAL__N__01185c5c_12_dice_loss_cu_6ac63b51_674315dice_bwd_kernelIffLi4EEEvPKNS0_7AccTypeIT_E4typeEPKS4_PKT0_SA_S8_lllS6_PS4_SE_' for 'sm_90'
ptxas info    : Function properties for _ZN4solo4cuda50_GLOBAL__N__01185c5c_12_dice_loss_cu_6ac63b51_674315dice_bwd_kernelIffLi4EEEvPKNS0_7AccTypeIT_E4typeEPKS4_PKT0_SA_S8_lllS6_PS4_SE_
    16 bytes stack frame, 12 bytes spill stores, 20 bytes spill loads
ptxas info    : Used 48 registers, used 1 barriers, 16 bytes cumulative stack size, 8 bytes smem
ptxas info    : Compile time = 129.652 ms
"""
FOCAL_LOG = """\
ptxas info    : 0 bytes gmem
ptxas info    : Compiling entry function '_ZN4solo4cuda51_GLOBAL__N__1284d3a3_13_focal_loss_cu_6ac63b51_731319sum_partials_kernelIfEEvPKT_lPS3_' for 'sm_90'
ptxas info    : Function properties for _ZN4solo4cuda51_GLOBAL__N__1284d3a3_13_focal_loss_cu_6ac63b51_731319sum_partials_kernelIfEEvPKT_lPS3_
    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 14 registers, used 1 barriers, 128 bytes smem
ptxas info    : Compile time = 25.156 ms
ptxas info    : Compiling entry function '_ZN4solo4cuda51_GLOBAL__N__1284d3a3_13_focal_loss_cu_c05c5602_501316focal_fwd_kernelI13__nv_bfloat16Li8ELi2EEEvPKT_PKlllNS0_7AccTypeIS4_E4typeESB_PSB_PS4_SC_' for 'sm_120'
ptxas info    : Function properties for _ZN4solo4cuda51_GLOBAL__N__1284d3a3_13_focal_loss_cu_c05c5602_501316focal_fwd_kernelI13__nv_bfloat16Li8ELi2EEEvPKT_PKlllNS0_7AccTypeIS4_E4typeESB_PSB_PS4_SC_
    8 bytes stack frame, 8 bytes spill stores, 16 bytes spill loads
ptxas info    : Used 48 registers, used 1 barriers, 8 bytes cumulative stack size, 128 bytes smem
"""
NMS_LOG = """\
ptxas info    : Compiling entry function '_ZN4solo4cuda46_GLOBAL__N__630b3f34_13_matrix_nms_cu_8ed60ab511comp_kernelEPKiPKlS3_PKfiP6float2' for 'sm_90'
ptxas info    : Function properties for _ZN4solo4cuda46_GLOBAL__N__630b3f34_13_matrix_nms_cu_8ed60ab511comp_kernelEPKiPKlS3_PKfiP6float2
    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 40 registers, used 0 barriers
ptxas info    : Compile time = 186.123 ms
"""

needs_cxxfilt = pytest.mark.skipif(shutil.which("c++filt") is None, reason="c++filt (binutils) is not installed")
needs_nvcc = pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc is not on the PATH")


def test_parse_reads_every_field():
    (k,) = ptxas_report.parse(DICE_LOG, "dice_loss.cu")
    assert (k.arch, k.source, k.registers) == ("sm_90", "dice_loss.cu", 48)
    assert (k.spill_stores, k.spill_loads, k.stack, k.smem) == (12, 20, 16, 8)
    assert k.spills
    cold, hot = ptxas_report.parse(FOCAL_LOG)
    assert (cold.registers, cold.smem, cold.spills) == (14, 128, False)
    assert (hot.arch, hot.spill_stores, hot.spill_loads) == ("sm_120", 8, 16)
    (nms,) = ptxas_report.parse(NMS_LOG)
    assert (nms.registers, nms.smem) == (40, 0)  # no "bytes smem" on the line: none used


def test_parse_keeps_registers_with_their_own_kernel():
    """A properties line naming another function (a separately compiled device function) is not this kernel's."""
    text = (
        "ptxas info    : Compiling entry function '_Z1kv' for 'sm_90'\n"
        "ptxas info    : Function properties for _Z6helperv\n"
        "    24 bytes stack frame, 4 bytes spill stores, 4 bytes spill loads\n"
        "ptxas info    : Function properties for _Z1kv\n"
        "    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads\n"
        "ptxas info    : Used 12 registers\n" + NMS_LOG
    )
    k, nms = ptxas_report.parse(text)
    assert (k.mangled, k.registers, k.spills, k.stack) == ("_Z1kv", 12, False, 0)
    assert nms.registers == 40


def test_short_name():
    assert (
        ptxas_report.short_name(
            "void solo::cuda::(anonymous namespace)::dice_bwd_kernel<float, float, 4>(solo::cuda::AccType<float>::type"
            " const*, float const*, long)"
        )
        == "dice_bwd_kernel<float, float, 4>"
    )
    assert ptxas_report.short_name("_Z1kv") == "_Z1kv"  # c++filt missing: the mangled name stays


@needs_cxxfilt
def test_table_and_warnings():
    kernels = ptxas_report.parse(DICE_LOG, "dice_loss.cu") + ptxas_report.parse(FOCAL_LOG, "focal_loss.cu")
    ptxas_report.demangle(kernels)
    names = [k.name for k in kernels]
    assert names == [
        "dice_bwd_kernel<float, float, 4>",
        "sum_partials_kernel<float>",
        "focal_fwd_kernel<__nv_bfloat16, 8, 2>",
    ]
    table = ptxas_report.table(kernels)
    lines = table.splitlines()
    assert lines[0].split()[:3] == ["arch", "source", "kernel"] and lines[0].split()[-4:] == [
        "ld",
        "smem",
        "stack",
        "hot",
    ]
    row = next(line for line in lines if "dice_bwd_kernel" in line)
    assert row.split()[0] == "sm_90" and row.split()[-6:] == ["48", "12", "20", "8", "16", "yes"]
    assert next(line for line in lines if "sum_partials" in line).split()[-1] == "no"  # a cold kernel
    assert table.index("sm_90") < table.index("sm_120")  # architectures in order, oldest first
    messages = ptxas_report.spill_messages(kernels)
    warning = (
        "WARNING: hot kernel dice_bwd_kernel<float, float, 4> (dice_loss.cu) spills on sm_90: 12 bytes spill stores, "
        "20 bytes spill loads (48 registers, 16 bytes stack frame)"
    )
    note = (
        "note: focal_fwd_kernel<__nv_bfloat16, 8, 2> (focal_loss.cu) spills on sm_120: 8 bytes spill stores, "
        "16 bytes spill loads (48 registers, 8 bytes stack frame)"
    )
    assert messages == [warning, note]


def test_cold_kernels_do_not_warn():
    k = ptxas_report.Kernel("_Z1kv", "sm_90", "x.cu", registers=32, spill_stores=4, name="scan_kernel")
    note = (
        "note: scan_kernel (x.cu) spills on sm_90: 4 bytes spill stores, 0 bytes spill loads (32 registers, "
        "0 bytes stack frame)"
    )
    assert ptxas_report.spill_messages([k]) == [note]
    assert all(name.endswith("_kernel") for name in ptxas_report.COLD_KERNELS)


def test_main_on_captured_logs(tmp_path, capsys):
    (tmp_path / "dice_loss.cu.o.ptxas.log").write_text(DICE_LOG)
    (tmp_path / "matrix_nms.cu.o.ptxas.log").write_text(NMS_LOG)
    assert ptxas_report.main([str(tmp_path)]) == 0  # a spill warns but does not fail
    out = capsys.readouterr().out
    assert "dice_loss.cu" in out and "matrix_nms.cu" in out
    assert out.count("WARNING:") == 1 and "2 kernel builds over sm_90" in out
    empty = tmp_path / "empty"
    empty.mkdir()
    assert ptxas_report.main([str(empty)]) == 1  # asked for a report but ptxas printed nothing: the flags are lost
    assert ptxas_report.main([str(tmp_path / "nope")]) == 2
    assert "no such log file or folder" in capsys.readouterr().err


@needs_nvcc
def test_capture_launcher_keeps_the_log_and_fails_a_broken_compile(tmp_path):
    """The launcher CMake puts in front of nvcc: a good kernel's ptxas output lands in its log; a compile error
    comes out on stderr with nvcc's non-zero status (so `cmake --build` and CI fail)."""
    logs = tmp_path / "ptxas"
    good = tmp_path / "good.cu"
    good.write_text(
        "__global__ void scale_kernel(float* x, float a, int n) {\n  int i = threadIdx.x;\n  if (i < n) x[i] *= a;\n}\n"
    )
    broken = tmp_path / "broken.cu"
    broken.write_text("__global__ void broken_kernel(float* x) { x[0] = undeclared_name; }\n")

    def compile_(src):
        cmd = [sys.executable, str(SCRIPT), "capture", str(logs), "--", "nvcc", "-c", "-arch=sm_90", "-Xptxas=-v"]
        cmd += [str(src), "-o", str(tmp_path / (src.name + ".o"))]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)

    ok = compile_(good)
    assert ok.returncode == 0, ok.stderr
    assert "Compiling entry function" in ok.stderr  # still shown in the build log
    (k,) = ptxas_report.read_logs([str(logs)])
    assert (k.source, k.arch, k.spills) == ("good.cu", "sm_90", False) and k.registers > 0
    bad = compile_(broken)
    assert bad.returncode != 0
    assert "undeclared_name" in bad.stderr
    assert os.listdir(logs) == ["good.cu.o.ptxas.log"]


def test_capture_usage_errors(capsys):
    assert ptxas_report.main(["capture", "dir"]) == 2
    assert "usage: ptxas_report.py capture LOG_DIR -- COMPILER ARGS" in capsys.readouterr().err
    assert ptxas_report.main(["capture", "dir", "--"]) == 2
    assert "no compiler command after '--'" in capsys.readouterr().err
