"""benchmarks/gpu_check.sh, the prepared GPU run: its arguments, the results folder, and the wheel check, through
--dry-run (no build, no GPU) and its helper benchmarks/_gpu_check.py."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"
HELPER = ROOT / "benchmarks" / "_gpu_check.py"

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


def _env(**extra):
    env = dict(os.environ, PYTHON=sys.executable, **extra)
    env.pop("SOLO_GPU_CHECK_FAKE_MISSING", None)
    env.update(extra)
    return env


def run_check(*args, **env):
    return subprocess.run(
        ["bash", str(SCRIPT), *args], capture_output=True, text=True, env=_env(**env), timeout=120, check=False
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--frobnicate"], "unknown argument '--frobnicate'"),
        (["--out"], "--out needs a folder, got '--dry-run'"),  # the next option is not taken as the folder
        (["--wheels"], "--wheels needs a folder of .whl files, got '--dry-run'"),
        (["--dry-run", "--out"], "--out needs a folder"),
        (["--wheels", "/no/such/wheels"], "--wheels: no such folder '/no/such/wheels'"),
        (["--budget", "soon"], "--budget must be a positive whole number of seconds, got 'soon'"),
    ],
)
def test_bad_arguments_name_the_argument(args, message):
    out = run_check(*args, "--dry-run")
    assert out.returncode == 2
    assert message in out.stderr


def test_help():
    out = run_check("--help")
    assert out.returncode == 0
    assert "--dry-run" in out.stdout and "--wheels DIR" in out.stdout and "pycocotools" in out.stdout


def test_dry_run_writes_env_and_summary_and_checks_wheels(tmp_path):
    """One dry run (it imports torch a few times: ~10-20 s) with a faked missing module, one missing module a wheel
    in --wheels provides, and one nobody provides."""
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    (wheels / "pycocotools-2.0.11-cp312-abi3-manylinux2014_x86_64.whl").write_bytes(b"not installed in a dry run")
    out_dir = tmp_path / "results"
    out = run_check(
        "--dry-run", "--out", str(out_dir), "--wheels", str(wheels), SOLO_GPU_CHECK_FAKE_MISSING="pycocotools,tqdm"
    )
    assert out.returncode == 0, out.stdout + out.stderr
    # the wheel check: provided by the folder, or named with the wheel to bring
    assert f"missing required module pycocotools: provided by {wheels}/pycocotools-2.0.11-cp312" in out.stdout
    assert "missing required module tqdm: carry a wheel of tqdm for CPython 3.12, manylinux x86_64" in out.stdout
    assert "WARNING: required modules are missing" in out.stdout
    # every stage's command is printed, in order of value, and none is run
    order = ["=== build", "=== selftest", "=== cpp_build", "=== cpp_tests", "=== pytest_cuda", "=== bench:", "=== e2e:"]
    positions = [out.stdout.index(stage) for stage in order]
    assert positions == sorted(positions)
    assert "TORCH_CUDA_ARCH_LIST=9.0" in out.stdout and "-DCMAKE_CUDA_ARCHITECTURES=90" in out.stdout
    assert "python" in out.stdout and "-m solo.selftest --device cuda --json" in out.stdout
    assert "-m pytest -m needs_cuda" in out.stdout and "--e2e --device cuda" in out.stdout
    # the results folder: at most 8 files (what the device tool returns), no subfolders
    files = sorted(os.listdir(out_dir))
    assert {"env.json", "summary.md"} <= set(files) and len(files) <= 8
    assert all((out_dir / f).is_file() for f in files)
    env = json.loads((out_dir / "env.json").read_text())
    assert env["dry_run"] is True and env["missing_required"] == ["pycocotools", "tqdm"]
    for key in ("gpu", "compute_capability", "driver", "torch", "torch_cuda", "triton", "nvcc", "date_utc"):
        assert key in env
    summary = (out_dir / "summary.md").read_text()
    assert summary.startswith("# gpu_check ") and "DRY RUN" in summary.splitlines()[0]
    assert "| build | dry-run |" in summary and "| pytest_cuda | dry-run |" in summary
    for log in ("build.log", "tests.log", "bench.log"):  # every log starts with the environment
        assert (out_dir / log).read_text().startswith("# gpu_check ")


def test_helper_missing_exit_status(tmp_path):
    def missing(*args, fake=""):
        return subprocess.run(
            [sys.executable, str(HELPER), "missing", *args],
            capture_output=True,
            text=True,
            env=_env(SOLO_GPU_CHECK_FAKE_MISSING=fake),
            timeout=60,
            check=False,
        )

    assert missing().returncode == 0  # this environment has what solo needs (pycocotools, pillow, tqdm)
    optional = missing(fake="cv2")
    assert optional.returncode == 0 and "missing optional module cv2: carry a wheel of opencv-python-headless" in (
        optional.stdout
    )
    assert missing(fake="PIL").returncode == 1  # required, and no wheel for it
    (tmp_path / "pillow-11.0.0-cp312-cp312-manylinux_2_28_x86_64.whl").write_bytes(b"")
    covered = missing("--wheels", str(tmp_path), fake="PIL")
    assert covered.returncode == 0 and "provided by" in covered.stdout


def test_helper_append_and_stamp_keep_the_environment(tmp_path):
    env = {"date_utc": "2026-01-01T00:00:00Z", "gpu": "NVIDIA H200", "dry_run": False}
    env_path = tmp_path / "env.json"
    env_path.write_text(json.dumps(env))
    for i in range(2):
        src = tmp_path / f"r{i}.json"
        src.write_text(json.dumps({"op": i}))
        subprocess.run(
            [sys.executable, str(HELPER), "append", str(env_path), str(tmp_path / "bench.json"), str(src)], check=True
        )
    bench = json.loads((tmp_path / "bench.json").read_text())
    assert bench["gpu_check_env"]["gpu"] == "NVIDIA H200" and bench["runs"] == [{"op": 0}, {"op": 1}]
    result = tmp_path / "selftest.json"
    result.write_text(json.dumps({"ok": True}))
    subprocess.run([sys.executable, str(HELPER), "stamp", str(env_path), str(result)], check=True)
    assert json.loads(result.read_text()) == {"ok": True, "gpu_check_env": env}
