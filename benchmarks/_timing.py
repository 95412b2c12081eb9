"""Timing, peak-memory and copy-bandwidth measurements for the benchmarks (no Triton dependency).

CUDA: every timed call starts on an idle device (``torch.cuda.synchronize()`` first, after an optional L2 flush),
and is bracketed by CUDA events on the current stream, so host-side launch overhead and host syncs inside the op
count, as they do for a loss in a training step. CPU: ``time.perf_counter`` around each call, with the torch
intra-op thread count as set. Both: a time-bounded warm-up (which also sizes the repeat count), then the median of
the repeats.

On Linux each measurement also records how many CPU cores *other* processes used meanwhile (``/proc/stat`` minus
our own ``getrusage``): on a shared machine this says whether a CPU time is trustworthy, and ``bench`` retries a
CPU measurement that ran beside busy neighbours (``TimingConfig.busy_retries``).
"""

from __future__ import annotations

import gc
import math
import os
import resource
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace

import torch


@dataclass(frozen=True)
class TimingConfig:
    """How long to warm up and measure each (case, pass, backend)."""

    warmup_s: float = 0.2
    min_time_s: float = 1.0
    min_reps: int = 5
    max_reps: int = 500
    flush_l2: bool = True  # CUDA only
    busy_threshold: float = 0.25  # CPU: cores used by other processes above which a measurement is retried
    busy_retries: int = 2

    @classmethod
    def quick(cls) -> TimingConfig:
        return cls(warmup_s=0.02, min_time_s=0.1, min_reps=3, max_reps=20)


@dataclass(frozen=True)
class Timing:
    """Per-call times in milliseconds."""

    median_ms: float
    min_ms: float
    p20_ms: float
    p80_ms: float
    reps: int
    other_cpu: float | None = None  # cores used by other processes during the timed calls (Linux only)
    attempts: int = 1

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _summary(times_ms: list[float], other_cpu: float | None) -> Timing:
    s = sorted(times_ms)
    q = statistics.quantiles(s, n=5, method="inclusive") if len(s) > 1 else [s[0]] * 4
    return Timing(
        median_ms=statistics.median(s), min_ms=s[0], p20_ms=q[0], p80_ms=q[3], reps=len(s), other_cpu=other_cpu
    )


class OtherCpuMonitor:
    """CPU cores used by other processes between ``start()`` and ``stop()``: busy time of the whole machine
    (``/proc/stat``) minus this process's user+system time (all threads), over the wall time. None where
    ``/proc/stat`` is missing. Resolution: one clock tick (usually 10 ms) of machine time."""

    _HZ = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

    @staticmethod
    def _machine_busy_s() -> float | None:
        try:
            with open("/proc/stat") as f:
                fields = [int(v) for v in f.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
        guest = sum(fields[8:10]) if len(fields) > 9 else 0  # already counted in user / nice
        return (sum(fields) - idle - guest) / OtherCpuMonitor._HZ

    @staticmethod
    def _own_s() -> float:
        r = resource.getrusage(resource.RUSAGE_SELF)
        return r.ru_utime + r.ru_stime

    def start(self) -> None:
        self.t0, self.busy0, self.own0 = time.perf_counter(), self._machine_busy_s(), self._own_s()

    def stop(self) -> float | None:
        busy, own, wall = self._machine_busy_s(), self._own_s(), time.perf_counter() - self.t0
        if busy is None or self.busy0 is None or wall <= 0:
            return None
        return max(0.0, (busy - self.busy0) - (own - self.own0)) / wall


class _L2Flusher:
    """Overwrites a buffer larger than the GPU's L2 cache, so each timed call starts with a cold cache."""

    def __init__(self, device: torch.device) -> None:
        l2 = getattr(torch.cuda.get_device_properties(device), "L2_cache_size", 0) or 64 << 20
        self.buf = torch.empty(max(2 * l2, 64 << 20), dtype=torch.int8, device=device)

    def __call__(self) -> None:
        self.buf.zero_()


_FLUSHERS: dict[torch.device, _L2Flusher] = {}


def bench(fn: Callable[[], object], device: torch.device, cfg: TimingConfig) -> Timing:
    """Warm ``fn`` up, then time ``reps`` calls (enough for ``cfg.min_time_s``, within ``[min_reps, max_reps]``).

    On the CPU a measurement during which other processes used more than ``cfg.busy_threshold`` cores is repeated
    (at most ``cfg.busy_retries`` times); the one with the least such use is kept."""
    best = _bench_once(fn, device, cfg)
    attempts = 1
    while (
        device.type == "cpu"
        and best.other_cpu is not None
        and best.other_cpu > cfg.busy_threshold
        and attempts <= cfg.busy_retries
    ):
        attempts += 1
        again = _bench_once(fn, device, cfg)
        if again.other_cpu is not None and again.other_cpu < best.other_cpu:
            best = again
    return replace(best, attempts=attempts)


def _bench_once(fn: Callable[[], object], device: torch.device, cfg: TimingConfig) -> Timing:
    n, t0 = 0, time.perf_counter()
    while n < 2 or (time.perf_counter() - t0 < cfg.warmup_s and n < cfg.max_reps):
        fn()
        _sync(device)
        n += 1
    per_call = (time.perf_counter() - t0) / n
    reps = max(cfg.min_reps, min(cfg.max_reps, math.ceil(cfg.min_time_s / max(per_call, 1e-9))))

    gc_was_enabled = gc.isenabled()
    gc.disable()  # no collector pauses inside the timed calls (as timeit)
    monitor = OtherCpuMonitor()
    monitor.start()
    try:
        if device.type != "cuda":
            times = []
            for _ in range(reps):
                start = time.perf_counter()
                fn()
                times.append((time.perf_counter() - start) * 1e3)
        else:
            times = _cuda_times(fn, device, reps, _flusher(device) if cfg.flush_l2 else None)
        return _summary(times, monitor.stop())
    finally:
        if gc_was_enabled:
            gc.enable()


def _flusher(device: torch.device) -> _L2Flusher:
    if device not in _FLUSHERS:
        _FLUSHERS[device] = _L2Flusher(device)
    return _FLUSHERS[device]


def _cuda_times(fn: Callable[[], object], device: torch.device, reps: int, flush: _L2Flusher | None) -> list[float]:
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
    for start, end in zip(starts, ends):
        if flush is not None:
            flush()
        torch.cuda.synchronize(device)  # the call starts on an idle GPU: its host-side cost is not hidden
        start.record()
        fn()
        end.record()
    torch.cuda.synchronize(device)
    return [s.elapsed_time(e) for s, e in zip(starts, ends)]


def peak_extra_bytes(fn: Callable[[], object], reset: Callable[[], None], device: torch.device) -> int | None:
    """Peak memory allocated by one call of ``fn`` above what was allocated before it, outputs included.
    ``reset`` runs first and outside the measurement (it frees the previous call's gradients).

    CUDA: the caching allocator's peak statistics. CPU: torch's profiler with ``profile_memory=True``, which records
    every allocation and free of torch's CPU allocator with a running total (scratch that a kernel takes with plain
    ``malloc``/``new`` is not seen). None on other devices or when the profiler fails."""
    if device.type == "cpu":
        reset()
        return _cpu_peak_extra_bytes(fn)
    if device.type != "cuda":
        return None
    reset()
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    fn()
    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device) - base


def copy_bandwidth(device: torch.device, nbytes: int, cfg: TimingConfig) -> dict[str, float]:
    """Device copy bandwidth: ``dst.copy_(src)`` of ``nbytes``, counted as read + write (2 x nbytes) per call."""
    no_flush = replace(cfg, min_reps=max(cfg.min_reps, 5), flush_l2=False)
    timing = _time_copy(nbytes, device, no_flush)
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return {
        "bytes": nbytes,
        "median_ms": timing.median_ms,
        "gb_per_s": 2 * nbytes / (timing.median_ms * 1e-3) / 1e9,
        "best_gb_per_s": 2 * nbytes / (timing.min_ms * 1e-3) / 1e9,
    }


def _time_copy(nbytes: int, device: torch.device, cfg: TimingConfig) -> Timing:
    src = torch.ones(nbytes // 4, dtype=torch.float32, device=device)
    dst = torch.empty_like(src)
    return bench(lambda: dst.copy_(src), device, cfg)


def _cpu_peak_extra_bytes(fn: Callable[[], object]) -> int | None:
    import json
    import tempfile

    from torch.profiler import ProfilerActivity, profile

    try:
        # Kineto prints start/stop lines on the C-level stderr: silence them for the measurement.
        with _quiet_stderr(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            fn()
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "trace.json")
            prof.export_chrome_trace(path)
            with open(path) as f:
                events = json.load(f).get("traceEvents", [])
    except Exception:  # noqa: BLE001  (a profiler problem costs the column, not the run)
        return None
    # Each "[memory]" event carries "Total Allocated": all memory torch's CPU allocator holds after the event, the
    # inputs and every other live tensor included. The level before the call is the first event's total minus its
    # own size; the peak extra memory is the highest total above that level.
    mem = sorted(
        (e for e in events if e.get("name") == "[memory]" and e.get("args", {}).get("Device Type", 0) == 0),
        key=lambda e: (e.get("ts", 0), e.get("args", {}).get("Ev Idx", 0)),
    )
    if not mem:
        return 0
    base = mem[0]["args"].get("Total Allocated", 0) - mem[0]["args"].get("Bytes", 0)
    return max(0, max(e["args"].get("Total Allocated", 0) for e in mem) - base)


class _quiet_stderr:
    """Redirect file descriptor 2 to /dev/null (C++ libraries write there directly, not through sys.stderr)."""

    def __enter__(self) -> None:
        import sys

        sys.stderr.flush()
        self._saved = os.dup(2)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        os.close(devnull)

    def __exit__(self, *exc) -> None:
        os.dup2(self._saved, 2)
        os.close(self._saved)
