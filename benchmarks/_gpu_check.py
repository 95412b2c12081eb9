"""Helpers of benchmarks/gpu_check.sh (the environment record, the wheel check, result files and the summary).

    python benchmarks/_gpu_check.py env OUT_JSON [--dry-run] [--wheels DIR]
    python benchmarks/_gpu_check.py header ENV_JSON          # one line for the top of each log
    python benchmarks/_gpu_check.py missing [--wheels DIR]   # modules solo and its tests import that are missing
    python benchmarks/_gpu_check.py names                    # the benchmark's ops (line 1) and e2e presets (line 2)
    python benchmarks/_gpu_check.py stamp ENV_JSON FILE      # add the environment to a JSON result
    python benchmarks/_gpu_check.py append ENV_JSON DEST SRC # add the JSON report SRC to DEST's "runs"
    python benchmarks/_gpu_check.py summary ENV_JSON STAGES_TSV OUT_MD

Only the standard library at module level: ``missing`` and ``env`` must work where torch itself is missing.
"""

from __future__ import annotations

import datetime
import importlib.util
import json
import os
import platform
import re
import shutil
import subprocess
import sys
from pathlib import Path

# Modules solo, its tests and the benchmarks import on a GPU run, with the distribution that provides each.
# Required: without them a stage cannot run. Optional: a few tests or plots skip without them.
REQUIRED = {
    "torch": "torch",
    "numpy": "numpy",
    "pytest": "pytest",
    "triton": "triton",
    "pycocotools": "pycocotools",  # solo.data / solo.evaluation, the e2e benchmark's RLE phase, many tests
    "PIL": "pillow",  # solo.data, solo.demo
    "tqdm": "tqdm",  # solo.engine's progress bars
}
OPTIONAL = {
    "cv2": "opencv-python-headless",  # an independent oracle of the mask resize in the tests
    "matplotlib": "matplotlib",  # the plotting tools and the e2e benchmark's figure
}
# Set to a comma-separated list to treat modules as missing (tests of the wheel check).
FAKE_MISSING_ENV = "SOLO_GPU_CHECK_FAKE_MISSING"


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


def wheels_in(folder: str | None) -> dict[str, str]:
    """{normalised project name: wheel file name} of the wheels in ``folder``."""
    if not folder or not os.path.isdir(folder):
        return {}
    return {_normalise(f.split("-", 1)[0]): f for f in sorted(os.listdir(folder)) if f.endswith(".whl")}


def missing_modules() -> tuple[list[str], list[str]]:
    """(required, optional) modules that cannot be imported here."""
    fake = {m.strip() for m in os.environ.get(FAKE_MISSING_ENV, "").split(",") if m.strip()}

    def absent(module: str) -> bool:
        return module in fake or importlib.util.find_spec(module) is None

    return [m for m in REQUIRED if absent(m)], [m for m in OPTIONAL if absent(m)] + sorted(
        m for m in fake if m not in REQUIRED and m not in OPTIONAL
    )


def wheel_lines(wheels: str | None) -> tuple[list[str], bool]:
    """Lines describing the missing modules and the wheels that would provide them; True when a required module is
    missing and no wheel in ``wheels`` provides it."""
    required, optional = missing_modules()
    have = wheels_in(wheels)
    lines, blocking = [], False
    for kind, modules in (("required", required), ("optional", optional)):
        for m in modules:
            dist = REQUIRED.get(m) or OPTIONAL.get(m) or m
            found = have.get(_normalise(dist))
            if found:
                lines.append(f"missing {kind} module {m}: provided by {wheels}/{found}")
                continue
            blocking |= kind == "required"
            lines.append(
                f"missing {kind} module {m}: carry a wheel of {dist} for CPython 3.12, manylinux x86_64 "
                f"(e.g. {_normalise(dist)}-<version>-cp312-*-manylinux*_x86_64.whl, or py3-none-any) in --wheels DIR"
            )
    if not lines:
        lines.append("all modules solo, its tests and the benchmarks import are present")
    return lines, blocking


def _run(cmd: list[str]) -> str | None:
    if shutil.which(cmd[0]) is None:
        return None
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def environment(dry_run: bool, wheels: str | None) -> dict:
    """What the results were measured on: GPU, driver, torch/triton/CUDA versions, date, commit."""
    env: dict = {
        "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "dry_run": dry_run,
        "host": platform.node(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "gpu": None,
        "compute_capability": None,
        "driver": None,
        "torch": None,
        "torch_cuda": None,
        "triton": None,
        "nvcc": None,
        "git_commit": _run(["git", "-C", str(Path(__file__).resolve().parent.parent), "rev-parse", "HEAD"]),
    }
    smi = _run(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"])
    if smi:
        name, _, driver = smi.splitlines()[0].partition(",")
        env["gpu"], env["driver"] = name.strip(), driver.strip()
    nvcc = _run(["nvcc", "--version"])
    if nvcc and (m := re.search(r"release (\S+),", nvcc)):
        env["nvcc"] = m.group(1)
    try:
        import torch

        env["torch"], env["torch_cuda"] = torch.__version__, torch.version.cuda
        if torch.cuda.is_available():
            env["gpu"] = torch.cuda.get_device_name(0)
            env["compute_capability"] = "{}.{}".format(*torch.cuda.get_device_capability(0))
    except Exception as e:  # noqa: BLE001  a missing or broken torch is itself a finding
        env["torch"] = f"unavailable ({type(e).__name__}: {e})"
    try:
        import triton

        env["triton"] = triton.__version__
    except Exception as e:  # noqa: BLE001
        env["triton"] = f"unavailable ({type(e).__name__})"
    required, optional = missing_modules()
    env["missing_required"], env["missing_optional"] = required, optional
    env["wheels"] = sorted(wheels_in(wheels).values())
    return env


def header(env: dict) -> str:
    return (
        f"# gpu_check {env['date_utc']} | GPU {env['gpu']} (sm {env['compute_capability']}) | driver {env['driver']}"
        f" | torch {env['torch']} (CUDA {env['torch_cuda']}) | triton {env['triton']} | nvcc {env['nvcc']}"
        f" | commit {(env['git_commit'] or '?')[:12]}{' | DRY RUN' if env['dry_run'] else ''}"
    )


def _load(path: str) -> dict:
    with open(path) as f:
        return json.load(f)


def _dump(obj: object, path: str) -> None:
    with open(path + ".tmp", "w") as f:
        json.dump(obj, f, indent=1, default=str)
        f.write("\n")
    os.replace(path + ".tmp", path)  # a run cut off mid-write leaves the previous complete file


def stamp(env_path: str, path: str) -> None:
    data = _load(path)
    if not isinstance(data, dict):
        data = {"result": data}
    data["gpu_check_env"] = _load(env_path)
    _dump(data, path)


def append(env_path: str, dest: str, src: str) -> None:
    data = _load(dest) if os.path.exists(dest) else {"gpu_check_env": _load(env_path), "runs": []}
    data["runs"].append(_load(src))
    _dump(data, dest)


def summary(env_path: str, stages_tsv: str, out_md: str) -> None:
    """Markdown: the environment, then one row per stage (status, seconds, command, note)."""
    env = _load(env_path)
    lines = [
        header(env),
        "",
        "| stage | status | seconds | command | note |",
        "| --- | --- | ---: | --- | --- |",
    ]
    if os.path.exists(stages_tsv):
        with open(stages_tsv) as f:
            for row in f:
                parts = row.rstrip("\n").split("\t")
                if len(parts) == 5:
                    stage, status, secs, cmd, note = (p.replace("|", "\\|") for p in parts)
                    lines.append(f"| {stage} | {status} | {secs} | `{cmd}` | {note} |")
    lines += ["", "Missing modules: " + (", ".join(env["missing_required"] + env["missing_optional"]) or "none")]
    with open(out_md + ".tmp", "w") as f:
        f.write("\n".join(lines) + "\n")
    os.replace(out_md + ".tmp", out_md)


def _opt(args: list[str], name: str) -> str | None:
    if name in args:
        i = args.index(name)
        if i + 1 >= len(args):
            sys.exit(f"_gpu_check: {name} needs a value")
        return args[i + 1]
    return None


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    cmd, args = argv[0], argv[1:]
    if cmd == "env":
        env = environment("--dry-run" in args, _opt(args, "--wheels"))
        _dump(env, args[0])
        print(header(env))
    elif cmd == "names":  # one import for both lists (importing torch costs seconds)
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
        from benchmarks import _cases, e2e

        print(" ".join(_cases.CASES))
        print(" ".join(e2e.PRESETS))
    elif cmd == "header":
        print(header(_load(args[0])))
    elif cmd == "missing":
        lines, blocking = wheel_lines(_opt(args, "--wheels"))
        print("\n".join(lines))
        return 1 if blocking else 0
    elif cmd == "stamp":
        stamp(*args)
    elif cmd == "append":
        append(*args)
    elif cmd == "summary":
        summary(*args)
    else:
        print(f"_gpu_check: unknown command {cmd!r}\n{__doc__}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
