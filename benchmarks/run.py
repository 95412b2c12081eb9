"""Benchmark the solo ops: every usable backend against the eager reference and torch.compile(reference).

    python benchmarks/run.py                      # everything, cuda if available else cpu
    python benchmarks/run.py --device cpu --quick # smoke test: smallest size per op, short timings
    python benchmarks/run.py --ops dice_loss,decoupled_dice_loss --dtype bfloat16
    python benchmarks/run.py --e2e [--quick]      # end-to-end: training step and inference by phase (benchmarks/e2e.py)

For each case (op at a SOLO size, see ``benchmarks/_cases.py``), pass (fwd, fwd+bwd) and backend, it records the
median time, the speed-ups over the eager reference and over torch.compile(reference), the achieved bandwidth
against the measured device copy bandwidth, the peak extra memory (CUDA) and, with ``--check`` (the default), the
largest difference to a float64 oracle, so that no speed is shown for a wrong result. It prints a table and
writes ``<out>/<device-tag>-<date>.json`` / ``.md`` plus ``<out>/latest-<device>.json`` / ``.md`` (the latest
copies only for complete runs: not ``--quick``, no ``--ops`` or ``--backends`` filter; a dtype other than float32
adds ``-<dtype>`` to the names).

A backend that fails on a case is recorded with its error and the run goes on; the exit status is non-zero only
when the harness itself breaks.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch

import solo.ops
from benchmarks import _cases, _report, _timing
from benchmarks._cases import FWD, FWD_BWD, Case, Inputs

REFERENCE = "reference"
COMPILED = "compile(reference)"
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
CHECK_RTOL = {torch.float32: 1e-4, torch.float16: 5e-3, torch.bfloat16: 2e-2}
CUDA_COPY_BYTES, CPU_COPY_BYTES = 1 << 30, 256 << 20


# --- backends -----------------------------------------------------------------------------------------------


def solo_backends(device: torch.device) -> tuple[list[str], dict[str, str]]:
    """The solo backends to time on ``device`` (usable ones, but not the reference, timed as such, nor Triton
    on the CPU, whose interpreter is for tests), and the reasons the others are not run."""
    run, skipped = [], {}
    for name, (ok, why) in solo.ops.available_backends(device).items():
        if name == REFERENCE:
            continue
        if ok and name == "triton" and device.type != "cuda":
            ok, why = False, f"{why}; the interpreter is not timed"
        if ok:
            run.append(name)
        else:
            skipped[name] = why
    return run, skipped


def _error(e: BaseException) -> str:
    msg = " ".join(str(e).split()) or repr(e)
    return f"{type(e).__name__}: {msg[:1000]}"


def make_fn(case: Case, backend: str) -> Callable[..., Any]:
    """``fn(**inputs)`` running ``case`` on ``backend`` (compiled lazily for compile(reference))."""
    if backend == REFERENCE:
        return case.reference
    if backend == COMPILED:
        torch._dynamo.reset()  # one case per compiled function: no recompile limits, no stale graphs
        return torch.compile(case.reference, dynamic=False)
    return lambda **inputs: case.solo(**inputs, backend=backend)


def _tensors(out: Any) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, (tuple, list)):
        return [t for o in out for t in _tensors(o)]
    if isinstance(out, dict):
        return [t for o in out.values() for t in _tensors(o)]
    return []


def _scalar(out: Any) -> torch.Tensor:
    """The scalar fwd+bwd differentiates: the (first) output summed."""
    first = _tensors(out)[0]
    return first if first.dim() == 0 else first.sum()


class PassRunner:
    """The zero-argument callable timed for one (case, backend, pass), plus the gradient reset it needs."""

    def __init__(self, fn: Callable[..., Any], inputs: Inputs, grad_inputs: tuple[str, ...], pass_: str) -> None:
        self.fn, self.inputs, self.pass_ = fn, inputs, pass_
        self.grad_names = grad_inputs
        self.grad_tensors = [inputs[k] for k in grad_inputs]

    def reset(self) -> None:
        for t in self.grad_tensors:
            t.grad = None

    def run(self) -> Any:
        """One call; returns the output (and leaves the gradients in ``.grad`` for fwd+bwd)."""
        if self.pass_ == FWD:
            with torch.no_grad():
                return self.fn(**self.inputs)
        self.reset()
        out = self.fn(**self.inputs)
        _scalar(out).backward()
        return out

    def __call__(self) -> None:
        self.run()


# --- correctness --------------------------------------------------------------------------------------------


def float64_inputs(inputs: Inputs) -> Inputs:
    """The same inputs with every floating tensor in float64."""
    return {
        k: v.detach().double().requires_grad_(v.requires_grad) if torch.is_tensor(v) and v.is_floating_point() else v
        for k, v in inputs.items()
    }


def oracle(case: Case, inputs: Inputs) -> dict[str, dict[str, torch.Tensor]]:
    """The reference in float64 on the same inputs: per pass, the tensors a backend must reproduce."""
    inputs64 = float64_inputs(inputs)
    if case.check is not None:  # the case compares outputs itself
        return {pass_: {"inputs64": inputs64} for pass_ in case.passes}
    result = {}
    for pass_ in case.passes:
        runner = PassRunner(case.reference, inputs64, case.grad_inputs, pass_)
        out = runner.run()
        tensors = {f"out{i}": t.detach() for i, t in enumerate(_tensors(out))}
        if pass_ == FWD_BWD:
            tensors.update({f"grad:{k}": inputs64[k].grad for k in case.grad_inputs})
        result[pass_] = tensors
    return result


def compare(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor], rtol: float) -> dict[str, Any]:
    """Largest absolute difference per tensor, and relative to the largest oracle magnitude; ok when every
    relative difference is within ``rtol`` (shapes must match; non-float outputs must match exactly)."""
    abs_diff, rel_diff, ok = {}, {}, True
    for name, w in want.items():
        g = got.get(name)
        if g is None or g.shape != w.shape:
            shape = None if g is None else tuple(g.shape)
            return {"ok": False, "error": f"{name}: shape {shape}, want {tuple(w.shape)}"}
        if not w.is_floating_point():
            mismatches = int((g.cpu() != w.cpu()).sum())
            abs_diff[name], rel_diff[name] = float(mismatches), float(mismatches)
            ok &= mismatches == 0
            continue
        d = (g.double() - w).abs().max().item() if w.numel() else 0.0
        scale = w.abs().max().item() if w.numel() else 0.0
        abs_diff[name], rel_diff[name] = d, d / max(scale, 1e-30)
        ok &= rel_diff[name] <= rtol  # False for NaN
    return {
        "ok": bool(ok),
        "max_abs_diff": abs_diff,
        "max_rel_diff": max(rel_diff.values(), default=0.0),
        "rel_diff": rel_diff,
        "rtol": rtol,
    }


def check_pass(runner: PassRunner, want: dict[str, Any], rtol: float, case: Case) -> dict[str, Any]:
    out = runner.run()
    if case.check is not None:
        return case.check(out, want["inputs64"])
    got = {f"out{i}": t.detach() for i, t in enumerate(_tensors(out))}
    if runner.pass_ == FWD_BWD:
        got.update({f"grad:{k}": t.grad for k, t in zip(runner.grad_names, runner.grad_tensors)})
    return compare(got, want, rtol)


# --- one case -----------------------------------------------------------------------------------------------


def run_case(
    case: Case,
    device: torch.device,
    dtype: torch.dtype,
    backends: list[str],
    args: argparse.Namespace,
    cfg: _timing.TimingConfig,
    copy_gbps: float | None,
) -> list[dict[str, Any]]:
    """All (pass, backend) results of ``case``."""
    gen = torch.Generator().manual_seed(args.seed)
    inputs = case.setup(device, dtype, gen)
    want = oracle(case, inputs) if args.check else None
    rtol = CHECK_RTOL[dtype]
    results = []
    for backend in backends:
        t0 = time.perf_counter()
        fn, setup_error = None, None
        try:
            fn = make_fn(case, backend)
        except Exception as e:  # noqa: BLE001  (recorded; the run goes on)
            setup_error = _error(e)
        for pass_ in case.passes:
            res: dict[str, Any] = {
                "op": case.op,
                "size": case.size,
                "pass": pass_,
                "backend": backend,
                "traffic_bytes": case.traffic(inputs, pass_),
            }
            results.append(res)
            if setup_error:
                res["error"] = setup_error
                continue
            if backend == COMPILED and case.no_compile:
                res["skipped"] = case.no_compile
                continue
            runner = PassRunner(fn, inputs, case.grad_inputs, pass_)
            try:
                if backend == COMPILED:  # compile outside the timing
                    c0 = time.perf_counter()
                    runner.run()
                    res["compile_s"] = round(time.perf_counter() - c0, 3)
                if want is not None:
                    try:
                        res["check"] = check_pass(runner, want[pass_], rtol, case)
                    except Exception as e:  # noqa: BLE001
                        res["check"] = {"ok": False, "error": _error(e)}
                timing = _timing.bench(runner, device, cfg)
                res["timing"] = timing.to_dict()
                res["peak_extra_bytes"] = _timing.peak_extra_bytes(runner, runner.reset, device)
                secs = timing.median_ms * 1e-3
                res["gb_per_s"] = res["traffic_bytes"] / secs / 1e9 if secs > 0 else None
                if copy_gbps and res["gb_per_s"] is not None:
                    res["pct_of_copy"] = 100.0 * res["gb_per_s"] / copy_gbps
            except Exception as e:  # noqa: BLE001  (a failing backend is a result, not a harness bug)
                res["error"] = _error(e)
            finally:
                runner.reset()
        if not args.quiet:
            print(f"  {case.op} [{case.size}] {backend}: {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    del inputs, want
    _cleanup(device)
    _add_speedups(results)
    return results


def _add_speedups(results: list[dict[str, Any]]) -> None:
    """Speed-up of every result over the reference and compile(reference) of the same (op, size, pass); only
    between results that ran and passed their check."""

    def valid(r: dict[str, Any]) -> bool:
        return "timing" in r and not r.get("error") and (r.get("check") is None or r["check"].get("ok", False))

    base = {(r["pass"], r["backend"]): r["timing"]["median_ms"] for r in results if valid(r)}
    for r in results:
        if not valid(r):
            continue
        for key, name in (("speedup_vs_reference", REFERENCE), ("speedup_vs_compile", COMPILED)):
            b = base.get((r["pass"], name))
            r[key] = b / r["timing"]["median_ms"] if b and r["timing"]["median_ms"] > 0 else None


def _cleanup(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


# --- main ---------------------------------------------------------------------------------------------------


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--ops", help=f"comma-separated ops (default: all): {','.join(_cases.CASES)}")
    p.add_argument("--device", choices=("cpu", "cuda"), help="default: cuda if available, else cpu")
    p.add_argument("--dtype", choices=tuple(DTYPES), default="float32", help="logits dtype (default float32)")
    p.add_argument("--quick", action="store_true", help="smallest size of each op, short timings (smoke test)")
    p.add_argument(
        "--out",
        type=Path,
        default=Path(__file__).resolve().parent / "results",
        help="output directory (default: benchmarks/results/)",
    )
    p.add_argument(
        "--check",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="compare every backend with a float64 reference oracle (default: on)",
    )
    p.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also time torch.compile(reference) (--no-compile skips it)",
    )
    p.add_argument(
        "--backends", help="comma-separated subset of backends to run (reference and compile(reference) included)"
    )
    p.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's choice)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--min-time", type=float, help="seconds of timed calls per measurement (default 1.0, quick 0.1)")
    p.add_argument("--no-flush-l2", dest="flush_l2", action="store_false", help="CUDA: keep L2 warm between calls")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    p.add_argument(
        "--e2e",
        action="store_true",
        help="run the end-to-end model benchmark instead (benchmarks/e2e.py; see --e2e --help for its options)",
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "--e2e" in argv:  # the end-to-end benchmark has its own options (benchmarks/e2e.py)
        from benchmarks import e2e

        return e2e.main([a for a in argv if a != "--e2e"])
    args = parse_args(argv)
    t_start = time.perf_counter()
    device = _report.resolve_device(args.device, args.threads)
    if device is None:
        return 2
    dtype = DTYPES[args.dtype]
    try:
        cases = _cases.select(args.ops.split(",") if args.ops else None, args.quick)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    known_backends = (REFERENCE, COMPILED, *(b for b in solo.ops.BACKENDS if b != REFERENCE))
    wanted = args.backends.split(",") if args.backends else list(known_backends)
    if any(b not in known_backends for b in wanted):
        print(f"error: --backends takes names from {known_backends}, got {args.backends!r}", file=sys.stderr)
        return 2
    environment = _report.environment(device, argv)  # first: the load average before our own work
    run_monitor = _timing.OtherCpuMonitor()
    run_monitor.start()

    cfg = _timing.TimingConfig.quick() if args.quick else _timing.TimingConfig()
    if args.min_time is not None:
        cfg = dataclasses.replace(cfg, min_time_s=args.min_time)
    cfg = dataclasses.replace(cfg, flush_l2=args.flush_l2 and device.type == "cuda")

    kernel_backends, not_run = solo_backends(device)
    backends = [REFERENCE] + ([COMPILED] if args.compile else []) + kernel_backends
    if not args.compile:
        not_run[COMPILED] = "--no-compile"
    for b in backends:
        if b not in wanted:
            not_run[b] = "not in --backends"
    backends = [b for b in backends if b in wanted]

    copy_bytes = (CUDA_COPY_BYTES if device.type == "cuda" else CPU_COPY_BYTES) >> (2 if args.quick else 0)
    try:
        copy_bw: dict[str, Any] = _timing.copy_bandwidth(device, copy_bytes, cfg)
    except Exception as e:  # noqa: BLE001  (e.g. out of memory): the run goes on without a ceiling
        copy_bw = {"error": _error(e)}

    report: dict[str, Any] = {
        "environment": environment,
        "options": {
            "ops": [c.op for c in cases],
            "dtype": args.dtype,
            "quick": args.quick,
            "check": args.check,
            "compile": args.compile,
            "seed": args.seed,
            "backends": backends,
            "timing": dataclasses.asdict(cfg),
        },
        "copy_bandwidth": copy_bw,
        "backends_not_run": not_run,
        "cases": [{"op": c.op, "size": c.size, "params": c.params, "passes": list(c.passes)} for c in cases],
        "results": [],
    }
    for case in cases:
        report["results"] += run_case(case, device, dtype, backends, args, cfg, copy_bw.get("gb_per_s"))
    report["wall_s"] = round(time.perf_counter() - t_start, 1)
    report["other_cpu_during_run"] = run_monitor.stop()

    _report.print_report(report)
    complete = not args.quick and not args.ops and not args.backends
    suffix = ("" if dtype == torch.float32 else f"-{args.dtype}") + ("-quick" if args.quick else "")
    paths = _report.write_reports(report, args.out, update_latest=complete, suffix=suffix)
    print(f"\nwall time {report['wall_s']} s; wrote " + ", ".join(str(p) for p in paths))
    return 0


if __name__ == "__main__":
    sys.exit(main())
