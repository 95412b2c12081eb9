#!/usr/bin/env python3
"""Per-kernel resource table from ptxas's verbose output (``nvcc -Xptxas -v``): registers, spills, shared memory,
stack frame, for every kernel and architecture the CMake build compiles (``-DSOLO_PTXAS_REPORT=ON``).

    python3 .ci/ptxas_report.py build/cmake/ptxas        # a folder of captured logs (or log files)
    python3 .ci/ptxas_report.py capture DIR -- nvcc ...  # compiler launcher: runs nvcc, keeps its stderr in DIR

Why a launcher: ptxas names the kernel on the "Compiling entry function" line but not on the "Used N registers"
line after it, so the output of two compilers running in parallel (``-j2`` under Make) cannot be told apart once
interleaved. CMake runs every CUDA compile through ``capture``, which writes one log per object file (and still
prints the output, so the build log and errors look the same); the report then reads each log on its own.

Hot kernels: a spill (spill stores or loads > 0 bytes) in a hot kernel on sm_90 prints a ``WARNING:`` line (not a
failure: spilling a few bytes can be the better trade, but it should be a decision). Every kernel is hot -- the ops'
per-element forward/backward kernels and the per-pixel/per-pair passes -- except the small bookkeeping kernels in
COLD_KERNELS, which run over one value per row, instance or grid cell. A new kernel is therefore hot until someone
lists it here with a reason. Spills on other architectures are printed as notes.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass

# Base names (no namespace, template arguments or parameters) of kernels whose cost is negligible next to the op.
COLD_KERNELS = {
    "dice_fwd_finalize_kernel": "one thread per row: turns the per-slice partial sums into the loss",
    "sum_partials_kernel": "one block sums the focal loss's per-block partials",
    "scan_kernel": "prefix sum over the grid cells' instance counts",
    "regions_kernel": "one thread per instance: its centre region on the grid",
}
WARN_ARCHS = ("sm_90", "sm_90a")  # the GPU the project is tuned and benchmarked on (H100/H200)

_ENTRY = re.compile(r"ptxas\s+info\s*:\s*Compiling entry function '([^']+)' for '([^']+)'")
_PROPS = re.compile(r"ptxas\s+info\s*:\s*Function properties for (\S+)")
_FRAME = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
_USED = re.compile(r"ptxas\s+info\s*:\s*Used (\d+) registers(.*)")
_SMEM = re.compile(r"(\d+) bytes smem")


@dataclass
class Kernel:
    mangled: str
    arch: str
    source: str = ""
    registers: int | None = None
    spill_stores: int = 0
    spill_loads: int = 0
    smem: int = 0
    stack: int = 0
    name: str = ""  # short demangled name, filled by demangle()

    @property
    def spills(self) -> bool:
        return self.spill_stores > 0 or self.spill_loads > 0

    @property
    def base_name(self) -> str:
        return self.name.split("<", 1)[0]


def parse(text: str, source: str = "") -> list[Kernel]:
    """The kernels in one compiler's ptxas output, in order. ``source`` labels them (e.g. the .cu file).

    Function properties without a preceding entry line (device functions compiled separately) are ignored; the
    properties of an entry function come after its "Compiling entry function" line, its registers after that."""
    kernels: list[Kernel] = []
    current: Kernel | None = None
    props_for: str | None = None
    for line in text.splitlines():
        if m := _ENTRY.search(line):
            current = Kernel(m.group(1), m.group(2), source)
            kernels.append(current)
            props_for = None
        elif m := _PROPS.search(line):
            props_for = m.group(1)
        elif m := _FRAME.search(line):
            if current is not None and props_for == current.mangled:
                current.stack, current.spill_stores, current.spill_loads = map(int, m.groups())
            props_for = None
        elif (m := _USED.search(line)) and current is not None and current.registers is None:
            current.registers = int(m.group(1))
            if s := _SMEM.search(m.group(2)):
                current.smem = int(s.group(1))
    return kernels


def short_name(demangled: str) -> str:
    """``void solo::cuda::(anonymous namespace)::k<float, 1>(float const*, long)`` -> ``k<float, 1>``."""
    text = demangled.removeprefix("void ").replace("(anonymous namespace)", "{anonymous}")
    depth, end, start = 0, len(text), 0
    for i, ch in enumerate(text):
        if ch == "<":
            depth += 1
        elif ch == ">":
            depth -= 1
        elif depth == 0 and ch == "(":  # the parameter list
            end = i
            break
        elif depth == 0 and text.startswith("::", i):  # a namespace ends here
            start = i + 2
    return text[start:end]


def demangle(kernels: list[Kernel]) -> None:
    """Fill ``name`` with c++filt (one call for all); the mangled name stays when c++filt is missing."""
    names = sorted({k.mangled for k in kernels})
    demangled = dict(zip(names, names, strict=True))
    cxxfilt = shutil.which("c++filt")
    if cxxfilt and names:
        out = subprocess.run([cxxfilt], input="\n".join(names) + "\n", capture_output=True, text=True, check=False)
        lines = out.stdout.splitlines()
        if out.returncode == 0 and len(lines) == len(names):
            demangled = dict(zip(names, lines, strict=True))
    for k in kernels:
        k.name = short_name(demangled[k.mangled])


def is_hot(kernel: Kernel) -> bool:
    return kernel.base_name not in COLD_KERNELS


def _arch_key(arch: str) -> tuple[int, str]:
    digits = re.sub(r"\D", "", arch)
    return (int(digits) if digits else 0, arch)


def table(kernels: list[Kernel]) -> str:
    """A fixed-width table, one block per architecture (oldest first), kernels by source file then name."""
    head = ("arch", "source", "kernel", "regs", "spill st", "spill ld", "smem", "stack", "hot")
    rows = [
        (
            k.arch,
            k.source,
            k.name,
            "?" if k.registers is None else str(k.registers),
            str(k.spill_stores),
            str(k.spill_loads),
            str(k.smem),
            str(k.stack),
            "yes" if is_hot(k) else "no",
        )
        for k in sorted(kernels, key=lambda k: (_arch_key(k.arch), k.source, k.name))
    ]
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    numeric = {3, 4, 5, 6, 7}

    def fmt(row: tuple[str, ...]) -> str:
        return "  ".join(c.rjust(w) if i in numeric else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths)))

    lines = [fmt(head), "  ".join("-" * w for w in widths)]
    previous_arch = None
    for row in rows:
        if previous_arch is not None and row[0] != previous_arch:
            lines.append("")
        previous_arch = row[0]
        lines.append(fmt(row))
    return "\n".join(line.rstrip() for line in lines)


def spill_messages(kernels: list[Kernel]) -> list[str]:
    """``WARNING:`` lines for hot kernels spilling on sm_90, ``note:`` lines for the other spills."""
    out = []
    for k in sorted(kernels, key=lambda k: (_arch_key(k.arch), k.source, k.name)):
        if not k.spills:
            continue
        what = (
            f"{k.name} ({k.source}) spills on {k.arch}: {k.spill_stores} bytes spill stores, "
            f"{k.spill_loads} bytes spill loads ({k.registers} registers, {k.stack} bytes stack frame)"
        )
        if k.arch in WARN_ARCHS and is_hot(k):
            out.append(f"WARNING: hot kernel {what}")
        else:
            out.append(f"note: {what}")
    return out


def read_logs(paths: list[str]) -> list[Kernel]:
    """Kernels from captured logs (``<object>.ptxas.log``, labelled by the source file) or any text files."""
    files = []
    for p in paths:
        if os.path.isdir(p):
            files += sorted(os.path.join(p, f) for f in os.listdir(p) if f.endswith(".log"))
        else:
            files.append(p)
    kernels = []
    for f in files:
        with open(f, errors="replace") as fh:
            text = fh.read()
        label = os.path.basename(f).removesuffix(".log").removesuffix(".ptxas").removesuffix(".o")
        kernels += parse(text, label)
    return kernels


def capture(log_dir: str, command: list[str]) -> int:
    """Run ``command`` (a compiler call), pass its output through, and keep its stderr (where ptxas -v writes) in
    ``log_dir/<object file>.ptxas.log``. Returns the command's exit status, so a failing compile fails the build."""
    if not command:
        print("ptxas_report capture: no compiler command after '--'", file=sys.stderr)
        return 2
    obj = command[command.index("-o") + 1] if "-o" in command[:-1] else "unknown.o"
    proc = subprocess.run(command, capture_output=True, text=True, errors="replace", check=False)
    sys.stdout.write(proc.stdout)
    sys.stderr.write(proc.stderr)
    if "ptxas" in proc.stderr:
        os.makedirs(log_dir, exist_ok=True)
        path = os.path.join(log_dir, os.path.basename(obj) + ".ptxas.log")
        with open(path + ".tmp", "w") as f:
            f.write(proc.stderr)
        os.replace(path + ".tmp", path)
    return proc.returncode


def main(argv: list[str]) -> int:
    if argv[:1] == ["capture"]:
        if len(argv) < 3 or "--" not in argv or argv.index("--") != 2:
            print("usage: ptxas_report.py capture LOG_DIR -- COMPILER ARGS...", file=sys.stderr)
            return 2
        return capture(argv[1], argv[3:])
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if argv else 2
    missing = [p for p in argv if not os.path.exists(p)]
    if missing:
        print(f"ptxas_report: no such log file or folder: {', '.join(missing)}", file=sys.stderr)
        return 2
    kernels = read_logs(argv)
    if not kernels:
        # the report was asked for, so an empty one means the flags did not reach ptxas: fail loudly
        print(f"ptxas_report: no ptxas -v output found in {', '.join(argv)}", file=sys.stderr)
        return 1
    demangle(kernels)
    print(table(kernels))
    messages = spill_messages(kernels)
    print()
    for m in messages:
        print(m)
    spilling = sum(k.spills for k in kernels)
    archs = sorted({k.arch for k in kernels}, key=_arch_key)
    print(
        f"ptxas report: {len(kernels)} kernel builds over {', '.join(archs)}; {spilling} spill "
        f"({sum(m.startswith('WARNING:') for m in messages)} warnings: hot kernels on {'/'.join(WARN_ARCHS)})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
