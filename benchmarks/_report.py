"""Environment capture and the reports of a benchmark run: a text table for stdout, a markdown file and a JSON
file of the raw results, plus ``latest-<device>`` copies."""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parent.parent


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo (Linux), else platform.processor()."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown cpu"


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_model()


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def device_tag(device: torch.device) -> str:
    """A stable file-name tag: ``cuda-nvidia-h200``, ``cpu-amd-epyc``, ``cpu-intel-xeon-platinum-8375c``."""
    name = device_name(device)
    if device.type == "cpu":
        name = re.sub(r"\((R|TM|tm|r)\)|\bCPU\b|\bProcessor\b|@.*$|\b\d+-Core\b", " ", name)
    return f"{device.type}-{_slug(name) or 'unknown'}"


def _extension_info() -> str:
    """Which build of ``solo._C`` ran: its file and modification time (the git commit alone does not say)."""
    try:
        from solo import _C

        path = Path(_C.__file__)
        stamp = _dt.datetime.fromtimestamp(path.stat().st_mtime).astimezone().isoformat(timespec="seconds")
    except Exception as e:  # noqa: BLE001  (not built, or not loadable)
        return f"not loaded ({type(e).__name__})"
    return f"{path.name} built {stamp}"


def environment(device: torch.device, argv: list[str]) -> dict[str, Any]:
    """Everything needed to interpret (and repeat) a run."""
    try:
        import triton

        triton_version = triton.__version__
    except Exception as e:  # noqa: BLE001  (not installed, or a broken installation)
        triton_version = f"unavailable ({type(e).__name__})"
    commit = _git("rev-parse", "HEAD")
    dirty = _git("status", "--porcelain", "--untracked-files=no")
    env: dict[str, Any] = {
        "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "device": device.type,
        "device_name": device_name(device),
        "device_tag": device_tag(device),
        "torch": torch.__version__,
        "triton": triton_version,
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "cpu_count": os.cpu_count(),
        "loadavg_at_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "git_commit": commit,
        "git_dirty": bool(dirty) if dirty is not None else None,
        "command": " ".join(["python", sys.argv[0] or "benchmarks/run.py", *argv]),
    }
    env["solo_ext"] = _extension_info()
    load = env["loadavg_at_start"]
    if device.type == "cpu" and load and load[0] >= 0.75:
        env["warning"] = (
            f"the machine was busy at start (1-min load average {load[0]:.2f} on {os.cpu_count()} CPUs): "
            "CPU timings may be inflated by other processes"
        )
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env.update(
            gpu_memory_gib=round(props.total_memory / 2**30, 1),
            gpu_sms=props.multi_processor_count,
            gpu_capability=f"{props.major}.{props.minor}",
            cudnn=torch.backends.cudnn.version(),
        )
    return env


# --- formatting ---------------------------------------------------------------------------------------------

COLUMNS = (
    "op",
    "size",
    "pass",
    "backend",
    "median ms",
    "vs ref",
    "vs compile",
    "GB/s",
    "% copy",
    "peak MB",
    "busy",
    "check",
)
_RIGHT = {"median ms", "vs ref", "vs compile", "GB/s", "% copy", "peak MB", "busy"}


def _fmt_ms(ms: float) -> str:
    return f"{ms:.4f}" if ms < 0.1 else f"{ms:.3f}" if ms < 100 else f"{ms:.1f}"


def _fmt_x(x: float | None) -> str:
    return "" if x is None else f"{x:.2f}x"


def _short(msg: str, n: int = 60) -> str:
    msg = " ".join(msg.split())
    return msg if len(msg) <= n else msg[: n - 3] + "..."


def _busy_cell(timing: dict[str, Any]) -> str:
    other = timing.get("other_cpu")
    return "" if other is None else f"{other:.2f}"


def _check_cell(check: dict[str, Any] | None) -> str:
    if check is None:
        return ""
    if "error" in check:
        return "error"
    verdict = "ok" if check["ok"] else "WRONG"
    if "max_rel_diff" in check:
        return f"{verdict} {check['max_rel_diff']:.1e}"
    if "mismatches_in_band" in check:  # thresholded masks: pixels that flipped within the allowed band
        return f"{verdict} {check['mismatches_in_band']}px"
    return verdict


def table_rows(results: list[dict[str, Any]], error_width: int = 36) -> list[dict[str, str]]:
    """One row of strings per (op, size, pass, backend). A failed or wrong backend shows why, never a speed."""
    rows = []
    for r in results:
        row = {"op": r["op"], "size": r["size"], "pass": r["pass"], "backend": r["backend"]}
        check = r.get("check")
        if r.get("skipped"):
            row["median ms"] = f"not run: {_short(r['skipped'], error_width)}"
        elif r.get("error"):
            row["median ms"] = f"error: {_short(r['error'], error_width)}"
        elif check is not None and not check.get("ok", False):
            row["median ms"] = "WRONG" if "error" not in check else f"check error: {_short(check['error'], 40)}"
            row["check"] = _check_cell(check)
        else:
            row.update(
                {
                    "median ms": _fmt_ms(r["timing"]["median_ms"]),
                    "vs ref": _fmt_x(r.get("speedup_vs_reference")),
                    "vs compile": _fmt_x(r.get("speedup_vs_compile")),
                    "GB/s": f"{r['gb_per_s']:.1f}" if r.get("gb_per_s") is not None else "",
                    "% copy": f"{r['pct_of_copy']:.0f}%" if r.get("pct_of_copy") is not None else "",
                    "peak MB": f"{r['peak_extra_bytes'] / 2**20:.1f}"
                    if r.get("peak_extra_bytes") is not None
                    else "n/a",
                    "busy": _busy_cell(r["timing"]),
                    "check": _check_cell(check),
                }
            )
        rows.append({c: row.get(c, "") for c in COLUMNS})
    return rows


def text_table(rows: list[dict[str, str]]) -> str:
    """Aligned plain-text table; a blank line between ops' sizes."""
    widths = {c: max([len(c)] + [len(r[c]) for r in rows]) for c in COLUMNS}

    def line(cells: dict[str, str]) -> str:
        parts = [cells[c].rjust(widths[c]) if c in _RIGHT else cells[c].ljust(widths[c]) for c in COLUMNS]
        return "  ".join(parts).rstrip()

    out = [line({c: c for c in COLUMNS}), "  ".join("-" * widths[c] for c in COLUMNS)]
    prev = None
    for r in rows:
        if prev is not None and (r["op"], r["size"]) != prev:
            out.append("")
        out.append(line(r))
        prev = (r["op"], r["size"])
    return "\n".join(out)


def markdown_table(rows: list[dict[str, str]]) -> str:
    def esc(s: str) -> str:
        return s.replace("|", "\\|")

    out = ["| " + " | ".join(COLUMNS) + " |", "|" + "|".join("---:" if c in _RIGHT else "---" for c in COLUMNS) + "|"]
    out += ["| " + " | ".join(esc(r[c]) for c in COLUMNS) + " |" for r in rows]
    return "\n".join(out)


def resolve_device(name: str | None, threads: int | None = None) -> torch.device | None:
    """The device a benchmark runs on (``name`` or cuda when available, else cpu; CUDA with its index), after
    setting torch's thread count to ``threads`` when given. None (and a message on stderr) when cuda is asked for
    and there is none."""
    if name == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda but no CUDA device is available", file=sys.stderr)
        return None
    device = torch.device(name or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda":
        device = torch.device("cuda", torch.cuda.current_device())
    if threads:
        torch.set_num_threads(threads)
    return device


def environment_lines(env: dict[str, Any]) -> list[str]:
    """The environment part of a report's header: device, versions, threads, date and commit, command."""
    return [
        f"device: {env['device_name']} ({env['device_tag']})",
        f"torch {env['torch']}, triton {env['triton']}, CUDA {env['cuda']}, python {env['python']}",
        (
            f"threads: {env['torch_threads']} torch intra-op of {env['cpu_count']} CPUs; "
            f"load average at start {env['loadavg_at_start']}"
        ),
        (
            f"date {env['date']}, commit {env['git_commit']}{' (dirty)' if env['git_dirty'] else ''}; "
            f"{env.get('solo_ext')}"
        ),
        f"command: {env['command']}",
    ]


def header_lines(report: dict[str, Any]) -> list[str]:
    """Key/value lines describing the run (environment, ceilings, options, backends not run)."""
    env, opts = report["environment"], report["options"]
    bw = report.get("copy_bandwidth") or {}
    lines = [
        *environment_lines(env),
        (
            f"dtype {opts['dtype']}, seed {opts['seed']}, quick={opts['quick']}, check={opts['check']}, "
            f"compile={opts['compile']}, timing {opts['timing']}"
        ),
    ]
    if env.get("warning"):
        lines.append(f"WARNING: {env['warning']}")
    if report.get("wall_s") is not None:
        busy = report.get("other_cpu_during_run")
        lines.append(
            f"run time: {report['wall_s']} s"
            + ("" if busy is None else f"; other processes used {busy:.2f} CPU cores on average meanwhile")
        )
    if "gb_per_s" in bw:
        lines.append(
            f"copy bandwidth (read+write, {bw['bytes'] / 2**20:.0f} MiB copy_): {bw['gb_per_s']:.1f} GB/s median, "
            f"{bw['best_gb_per_s']:.1f} GB/s best"
        )
    elif bw.get("error"):
        lines.append(f"copy bandwidth: error {bw['error']}")
    for name, why in report.get("backends_not_run", {}).items():
        lines.append(f"not run: {name} ({why})")
    return lines


NOTES = (
    "median ms: median per call (CUDA events, each call on an idle GPU after an L2 flush; CPU perf_counter). "
    "fwd runs under no_grad; fwd+bwd = forward, sum to a scalar, backward into fresh .grad tensors. "
    "vs ref / vs compile: speed-up over the eager reference / torch.compile(reference) for the same pass. "
    "GB/s: minimal traffic (inputs read once, outputs and gradients written once) / median time; % copy: of the "
    "measured copy bandwidth. peak MB: peak memory above the inputs during one call, output included (CUDA: allocator statistics; CPU: torch profiler). busy: CPU cores "
    "used by other processes during the timed calls (CPU measurements above 0.25 are retried, the quietest kept); "
    "large values mean inflated times. check: max "
    "|out - oracle| / max |oracle| over outputs and gradients, oracle = the reference in float64 on the same inputs."
)


def errors_section(results: list[dict[str, Any]]) -> list[str]:
    """One line per failed backend or failed check, with the full message or the per-tensor differences."""
    out = []
    for r in results:
        check = r.get("check") or {}
        msg = r.get("error") or check.get("error")
        if not msg and check and not check.get("ok", True):
            diffs = ", ".join(f"{k} {v:.2e}" for k, v in check["rel_diff"].items())
            msg = f"WRONG: relative differences {diffs} (rtol {check['rtol']:.0e})"
        if msg:
            out.append(f"- {r['op']} [{r['size']}] {r['pass']} {r['backend']}: {' '.join(msg.split())[:500]}")
    return out


def print_report(report: dict[str, Any]) -> None:
    print("\n".join(header_lines(report)))
    print()
    print(text_table(table_rows(report["results"])))
    errs = errors_section(report["results"])
    if errs:
        print("\nerrors and failed checks:")
        print("\n".join(errs))


def markdown(report: dict[str, Any]) -> str:
    lines = [f"# solo benchmarks: {report['environment']['device_name']}", ""]
    lines += [f"- {h}" for h in header_lines(report)]
    lines += ["", markdown_table(table_rows(report["results"], error_width=80)), "", NOTES, ""]
    errs = errors_section(report["results"])
    if errs:
        lines += ["## Errors and failed checks", "", *errs, ""]
    return "\n".join(lines)


def write_reports(
    report: dict[str, Any],
    out_dir: Path,
    update_latest: bool,
    suffix: str = "",
    render: Callable[[dict[str, Any]], str] = markdown,
    extra: dict[str, Callable[[dict[str, Any], Path], None]] | None = None,
) -> list[Path]:
    """Write ``<tag>-<date><suffix>.json`` and ``.md`` (``render(report)``, by default the op benchmark's markdown)
    under ``out_dir``, plus ``<...><suffix><ext>`` by ``writer(report, path)`` for each of ``extra``, and copy them
    to ``latest-<device><suffix>.*`` when ``update_latest``. Returns the paths written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    env = report["environment"]
    stamp = _dt.datetime.fromisoformat(env["date"]).strftime("%Y%m%d-%H%M%S")
    base = f"{env['device_tag']}-{stamp}{suffix}"
    paths = [out_dir / f"{base}.json", out_dir / f"{base}.md"]
    paths[0].write_text(json.dumps(report, indent=1, default=str) + "\n")
    paths[1].write_text(render(report))
    for ext, writer in (extra or {}).items():
        paths.append(out_dir / f"{base}{ext}")
        writer(report, paths[-1])
    if update_latest:
        for p in list(paths):
            dst = out_dir / f"latest-{env['device']}{suffix}{p.suffix}"
            shutil.copyfile(p, dst)
            paths.append(dst)
    return paths
