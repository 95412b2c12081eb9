"""Compile gate: every Triton kernel of solo, compiled for real NVIDIA targets at the launches the ops really make.

``python -m solo.tools.triton_compile_check`` (no GPU needed; CI runs it). The interpreter (``TRITON_INTERPRET=1``,
what the tests use) runs kernels as plain Python and cannot see compile-time errors: constexpr shapes, ints that
Triton specialises (== 1, multiples of 16), ``tl.dot`` operand types per architecture, shared memory per target.

How the launches are produced (nothing is copied from the ops):
  every Triton launch of ``solo/ops/_triton_*.py`` goes through ``solo.ops._triton_common.launch``. Inside
  ``_triton_common.recording(capability)`` it records (kernel, grid, arguments, constexprs, options) instead of
  launching. For each target and each case below (SOLO's COCO shapes, and the values that change what Triton
  specialises) the gate calls the op's own Triton entry function on *meta* tensors of the case's shapes/dtypes (no
  memory, so even the int64-index sizes cost nothing) with recording on: the op's host code picks the block sizes,
  paths, splits and MMA variant itself, from the target's compute capability and a typical SM count
  (``device_capability`` / ``sm_count``). Data-dependent host reads use ``host_value``'s stand-in.

Each recorded launch is bound the way Triton's JIT launcher binds it (``create_function_from_signature`` over the
kernel's signature, then ``JITFunction._pack_args``), deduplicated on (kernel, specialisation, constexprs, options,
target), and compiled with ``triton.compile(ASTSource, target=GPUTarget("cuda", cc, 32))`` in worker processes, down
to a cubin (ptxas). A compile whose shared memory exceeds the target's per-block limit, or a grid beyond CUDA's
limits, fails too.

Kernel coverage rule: a ``@triton.jit`` function defined in a ``solo/ops/_triton_*.py`` module that no other
``@triton.jit`` function of those modules calls is an *entry kernel*; every entry kernel must be compiled by at least
one case for every target, else the gate fails (a new kernel cannot be silently left out: give it a case).

Exit status 0 when everything compiled, 1 on any failure (each listed with kernel, target, case, dtypes, constexprs
and the first lines of Triton's error), 2 when the installed Triton lacks what the gate needs.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import dataclasses
import importlib
import inspect
import multiprocessing
import os
import pkgutil
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Callable

import torch

# Base targets (T4, A100, H100) and the newer ones used when the installed Triton's NVIDIA backend compiles for them.
BASE_TARGETS = (75, 80, 90)
PROBE_TARGETS = (100, 120)
# Shared memory a block may use (opt-in maximum), bytes, per compute capability.
_MAX_SHARED = {75: 65536, 80: 166912, 86: 101376, 89: 101376, 90: 232448, 100: 232448, 103: 232448, 120: 101376}
_MAX_GRID = (2**31 - 1, 65535, 65535)


# ---------------------------------------------------------------------------------------------------------------
# Triton private API (checked once, with a clear message naming what is missing)
# ---------------------------------------------------------------------------------------------------------------


def triton_api() -> dict:
    """The Triton internals the gate needs; SystemExit(2) naming the missing one (tested on 3.9, written for 3.6+)."""
    import triton

    api = {"triton": triton}
    needs = (
        ("GPUTarget", "triton.backends.compiler", "GPUTarget"),
        ("make_backend", "triton.compiler.compiler", "make_backend"),
        ("ASTSource", "triton.compiler", "ASTSource"),
        ("create_function_from_signature", "triton.runtime.jit", "create_function_from_signature"),
        ("JITFunction", "triton.runtime.jit", "JITFunction"),
    )
    for key, mod, name in needs:
        try:
            api[key] = getattr(importlib.import_module(mod), name)
        except (ImportError, AttributeError) as e:
            raise SystemExit(
                f"triton_compile_check: triton {triton.__version__} lacks {mod}.{name} ({e}); the gate needs it"
            ) from None
    if not hasattr(api["JITFunction"], "_pack_args"):
        raise SystemExit(
            f"triton_compile_check: triton {triton.__version__} lacks JITFunction._pack_args (binding the launch "
            "arguments like the JIT launcher); the gate is written against Triton 3.6-3.9"
        )
    return api


# ---------------------------------------------------------------------------------------------------------------
# Cases: SOLO's real shapes (COCO), and the values that change Triton's specialisation
# ---------------------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Case:
    """One call of an op's Triton entry function; ``run()`` makes the call (meta tensors) while recording."""

    op: str
    label: str
    run: Callable[[], object]


def _entry(op):
    # The Python function behind a torch.library.custom_op: calling the op itself on meta tensors would dispatch to
    # its fake kernel, and the launches are made by the real function.
    fn = getattr(op, "_init_fn", None)
    if fn is None:
        raise SystemExit(
            f"triton_compile_check: torch {torch.__version__}: custom op {op} has no _init_fn (the function it wraps)"
        )
    return fn


def _meta(shape, dtype) -> torch.Tensor:
    return torch.empty(shape, dtype=dtype, device="meta")


_F = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
_DT = {torch.float16: "fp16", torch.bfloat16: "bf16", torch.float32: "fp32", torch.float64: "fp64"}
_DT.update({torch.bool: "bool", torch.uint8: "u8", torch.int64: "i64"})

# COCO: 1333 x 800 images padded to 800 x 1344, batch 2, 80 classes; SOLO grids on strides 8..64; masks at stride 4.
BATCH = 2
CLASSES = 80
GRIDS = (40, 36, 24, 16, 12)
SCALE_RANGES = (1.0, 96.0, 48.0, 192.0, 96.0, 384.0, 192.0, 768.0, 384.0, 2048.0)
CANVAS = (800, 1344)
MASK_FEAT = (200, 336)  # stride 4
CELLS = sum(s * s for s in GRIDS)  # 3872 per image
NMS_PRE = 500
MAX_DET = 100
INSTANCES = 16  # ground-truth instances in a batch of two images (COCO averages ~7 per image)


# The full product of dtypes and code paths is compiled at SOLO's COCO shapes; the values that only change what
# Triton specialises (ints == 1, not multiples of 16, int64 indices) are crossed with fp32 and fp64 (the two
# accumulation types): a specialisation acts on integer arguments, which are the same for every float dtype.
_SPECIAL_DTYPES = (torch.float32, torch.float64)


def _focal_cases() -> list[Case]:
    from solo.ops import _triton_focal_loss as m

    f = _entry(m.sigmoid_focal_loss_fwd)
    out = []
    rows = BATCH * CELLS

    def case(dt, shape, red, grad, gamma):
        desc = f"logits {_DT[dt]}{list(shape)} reduction={red} grad={grad} gamma={gamma}"
        run = lambda: f(_meta(shape, dt), _meta(shape[:1], torch.int64), 0.25, gamma, red, grad)
        out.append(Case("sigmoid_focal_loss", desc, run))

    for dt in _F:
        for red in (0, 1):
            for grad in (False, True):
                case(dt, (rows, CLASSES), red, grad, 2.0)
    for gamma in (1.0, 0.0, 1.5):  # the kernel's other GAMMA_MODEs (upcast math: dtype-independent)
        for red in (0, 1):
            for grad in (False, True):
                case(torch.float32, (rows, CLASSES), red, grad, gamma)
    for dt in _F:  # int64 indices (numel + BLOCK >= 2^31): meta tensors, so no memory
        case(dt, (2**31 // CLASSES + 1, CLASSES), 1, True, 2.0)
    for dt in _SPECIAL_DTYPES:  # one element (ints == 1); an odd count (not multiples of 16)
        for shape in ((1, 1), (rows - 1, CLASSES + 1)):
            for red in (0, 1):
                case(dt, shape, red, True, 2.0)
    return out


def _dice_cases() -> list[Case]:
    from solo.ops import _triton_dice_loss as m

    fwd, bwd = _entry(m.dice_loss_fwd), _entry(m.dice_loss_bwd)
    out = []

    def case(dt, tdt, dec, shape):
        acc = torch.float64 if dt == torch.float64 else torch.float32

        def run():
            x, t = _meta(shape, dt), _meta(shape, tdt)
            y = _meta(shape, dt) if dec else None
            fwd(x, t, y, 1e-3)
            bwd(_meta(shape[:1], acc), x, t, y, _meta((shape[0], 3), acc), 1e-3)

        out.append(Case("dice_loss", f"logits {_DT[dt]}{list(shape)} targets {_DT[tdt]} decoupled={dec}", run))

    coco = (BATCH * INSTANCES * 9, MASK_FEAT[0] * MASK_FEAT[1])  # positives x mask pixels at stride 4
    for dt in _F:
        for tdt in (torch.uint8, torch.bool, dt):  # SOLO's uint8 targets, bool, soft targets of the logits' dtype
            for dec in (False, True):
                case(dt, tdt, dec, coco)
    for dt in _SPECIAL_DTYPES:
        for shape in ((1, 1), (37, 57 * 91)):
            for dec in (False, True):
                case(dt, torch.uint8, dec, shape)
    return out


def _matrix_nms_cases() -> list[Case]:
    from solo.ops import _triton_matrix_nms as m

    f = _entry(m.matrix_nms)
    out = []
    shapes = (
        (NMS_PRE, *MASK_FEAT),  # nms_pre candidates at the mask feature size (K splits, atomics)
        (NMS_PRE, 8, 16),  # one K block: no splits, plain stores
        (1, *MASK_FEAT),  # one candidate (N == 1)
        (37, 25, 42),  # sizes not multiples of 16
    )
    for shape in shapes:
        for mdt in (torch.bool, torch.uint8):
            for kernel in (0, 1):
                for areas in (None, torch.float32):
                    n = shape[0]
                    desc = f"masks {_DT[mdt]}{list(shape)} kernel={kernel} areas={'given' if areas else 'counted'}"
                    out.append(
                        Case(
                            "matrix_nms",
                            desc,
                            lambda shape=shape, mdt=mdt, kernel=kernel, areas=areas, n=n: f(
                                _meta(shape, mdt),
                                _meta((n,), torch.int64),
                                _meta((n,), torch.float32),
                                _meta((n,), areas) if areas else None,
                                kernel,
                                2.0,
                            ),
                        )
                    )
    return out


def _paste_cases() -> list[Case]:
    from solo.ops import _triton_paste_masks as m

    f = _entry(m.paste_masks)
    out = []
    # (valid, out): a 1333 x 800 image pasted back at full size; a 640 x 427 image (resized to 1199 x 800 inside the
    # 800 x 1344 batch canvas) pasted at its original size; a thumbnail (strong downscale: the direct path); 1 x 1.
    sizes = (((800, 1333), (800, 1333)), ((800, 1199), (427, 640)), ((800, 1333), (40, 64)), ((800, 1333), (1, 1)))
    for dt in _F:
        for n, src in ((MAX_DET, MASK_FEAT), (1, (1, 1))):
            if src == (1, 1) and dt not in _SPECIAL_DTYPES:
                continue
            for valid, osz in sizes:
                desc = f"probs {_DT[dt]}[{n}, {src[0]}, {src[1]}] canvas {list(CANVAS)} valid {list(valid)} out {list(osz)}"
                out.append(
                    Case(
                        "paste_masks",
                        desc,
                        lambda dt=dt, n=n, src=src, valid=valid, osz=osz: f(
                            _meta((n, *src), dt), list(CANVAS), list(valid), list(osz), 0.5
                        ),
                    )
                )
    return out


def _downsample_cases() -> list[Case]:
    from solo.ops import _triton_downsample_masks as m

    f = _entry(m.downsample_masks)
    out = []
    for mdt in (torch.bool, torch.uint8):
        # SOLO's stride 4; odd (one tap) and even (four taps) paths. 3 divides no side of the COCO canvas: 768 x 1344.
        for stride, hw in ((4, CANVAS), (8, CANVAS), (1, CANVAS), (2, CANVAS), (3, (768, 1344))):
            for M in (INSTANCES, 1):
                out.append(
                    Case(
                        "downsample_masks",
                        f"masks {_DT[mdt]}[{M}, {hw[0]}, {hw[1]}] stride={stride}",
                        lambda mdt=mdt, stride=stride, M=M, hw=hw: f(_meta((M, *hw), mdt), stride),
                    )
                )
        # A non-contiguous view (the valid part of a bigger canvas): strides that are not the shape's.
        out.append(
            Case(
                "downsample_masks",
                f"masks {_DT[mdt]}[{INSTANCES}, 800, 1336] view of [.., 808, 1344] stride=4",
                lambda mdt=mdt: f(_meta((INSTANCES, 808, 1344), mdt)[:, :800, :1336], 4),
            )
        )
    return out


def _assign_cases() -> list[Case]:
    from solo.ops import _triton_assign_grid_targets as m

    mass, cells = _entry(m.assign_grid_targets_mass), _entry(m.assign_grid_targets_cells)
    out = []
    # mass: COCO masks; a one-row mask wide enough for the int64 lanes; 1 x 1.
    for mdt in (torch.bool, torch.uint8):
        for shape in ((INSTANCES, *CANVAS), (1, 1, 2**20), (1, 1, 1), (3, 37, 1)):
            out.append(
                Case(
                    "assign_grid_targets",
                    f"mass: masks {_DT[mdt]}{list(shape)}",
                    lambda mdt=mdt, shape=shape: mass(_meta(shape, mdt)),
                )
            )
    # cells: the batch canvas, and a canvas of height or width 1 (specialised ints), SOLO and SOLOv2 modes.
    for bdt in (torch.float32, torch.float64):
        for hw in (CANVAS, (1, 1344), (800, 1), (1, 1)):
            for mode in (0, 1):
                for M, B, grids in ((INSTANCES, BATCH, GRIDS), (1, 1, (1,))):
                    desc = (
                        f"cells: boxes {_DT[bdt]}[{M}, 4] batch={B} canvas {list(hw)} grids={list(grids)} mode={mode}"
                    )

                    def run(bdt=bdt, hw=hw, mode=mode, M=M, B=B, grids=grids):
                        ranges = list(SCALE_RANGES[: 2 * len(grids)])
                        i64 = torch.int64
                        ms, bx = _meta((M, 3), i64), _meta((M, 4), bdt)
                        cells(
                            ms, bx, _meta((M,), i64), _meta((M,), i64), B, *hw, list(grids), ranges, 0.2, CLASSES, mode
                        )

                    out.append(Case("assign_grid_targets", desc, run))
    return out


def default_cases() -> list[Case]:
    return _focal_cases() + _dice_cases() + _matrix_nms_cases() + _paste_cases() + _downsample_cases() + _assign_cases()


# ---------------------------------------------------------------------------------------------------------------
# Kernel discovery (the coverage rule)
# ---------------------------------------------------------------------------------------------------------------


def kernel_modules() -> list[str]:
    import solo.ops

    return sorted(
        f"solo.ops.{m.name}" for m in pkgutil.iter_modules(solo.ops.__path__) if m.name.startswith("_triton_")
    )


def entry_kernels(modules: list[str]) -> dict[str, object]:
    """{"module.name": kernel} of the entry kernels: jit functions of ``modules`` no other one calls.

    A jit function is a ``triton.jit`` object (JITFunction, or InterpretedFunction under TRITON_INTERPRET=1) defined
    in the module; "calls" is its name followed by "(" in another jit function's source."""
    fns = {}
    for mod_name in modules:
        mod = importlib.import_module(mod_name)
        for name, obj in vars(mod).items():
            if type(obj).__name__ in ("JITFunction", "InterpretedFunction") and obj.fn.__module__ == mod_name:
                fns[f"{mod_name}.{name}"] = obj
    sources = {key: inspect.getsource(fn.fn) for key, fn in fns.items()}
    called = set()
    for key, fn in fns.items():
        for other_key in fns:
            if other_key != key and re.search(rf"\b{re.escape(fn.fn.__name__)}\s*\(", sources[other_key]):
                called.add(key)
                break
    return {k: v for k, v in fns.items() if k not in called}


# ---------------------------------------------------------------------------------------------------------------
# Recording -> compile jobs
# ---------------------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Job:
    module: str
    name: str
    args: tuple  # ("tensor", dtype name, aligned) for tensors, the value otherwise
    kwargs: dict  # constexprs and launch options
    capability: int
    grid: tuple
    cases: list = dataclasses.field(default_factory=list)  # "op: label" of every case that makes this launch
    key: str = ""
    signature: str = ""  # the kernel's non-constexpr arguments as Triton types them (pointer dtypes, int widths)


def _arg_spec(a):
    if isinstance(a, torch.Tensor):
        # Meta tensors have no address: the ops' tensors are fresh allocations, aligned; a view's offset is not.
        aligned = a.storage_offset() * a.element_size() % 16 == 0
        return ("tensor", str(a.dtype).removeprefix("torch."), aligned)
    return a


def _arg_value(spec):
    if isinstance(spec, tuple) and len(spec) == 3 and spec[0] == "tensor":
        dt = getattr(torch, spec[1])
        # Only the dtype and the 16-byte alignment of a pointer argument reach the compiler.
        return torch.empty(2, dtype=dt)[0 if spec[2] else 1 :]
    return spec


def _bind(api, job: Job):
    """Bind a job's arguments like the JIT launcher: (backend, target, signature, constexprs, attrs, options)."""
    mod = importlib.import_module(job.module)
    kernel = getattr(mod, job.name)
    target = api["GPUTarget"]("cuda", job.capability, 32)
    backend = api["make_backend"](target)
    binder = api["create_function_from_signature"](kernel.signature, kernel.params, backend)
    kwargs = dict(job.kwargs)
    kwargs.setdefault("debug", False)
    args = [_arg_value(a) for a in job.args]
    bound_args, specialization, options = binder(*args, **kwargs)
    options, signature, constexprs, attrs = kernel._pack_args(backend, kwargs, bound_args, specialization, options)
    return kernel, target, signature, constexprs, attrs, options, specialization


def _job_key(api, job: Job) -> str:
    _, _, signature, constexprs, attrs, options, _ = _bind(api, job)
    job.signature = ", ".join(f"{k}: {v}" for k, v in signature.items() if v != "constexpr")
    return repr((job.module, job.name, job.capability, signature, sorted(constexprs.items()), attrs, options))


@contextlib.contextmanager
def _captured_stderr():
    """Capture file descriptor 2: MLIR pass failures print their diagnostic there (the exception only says
    "PassManager::run failed"). Yields a callable returning the text captured so far."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as f:
        os.dup2(f.fileno(), 2)
        try:
            yield lambda: (sys.stderr.flush(), f.seek(0), f.read().decode(errors="replace"))[2]
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def _compile_job(job: Job) -> tuple[str, float, str]:
    """Worker: compile one job down to a cubin. Returns (status "ok"/"fail", seconds, detail)."""
    api = triton_api()
    t0 = time.perf_counter()
    with _captured_stderr() as captured:
        try:
            kernel, target, signature, constexprs, attrs, options, _ = _bind(api, job)
            src = api["ASTSource"](kernel, signature, constexprs, attrs)
            ck = api["triton"].compile(src, target=target, options=options.__dict__)
        except Exception as e:  # noqa: BLE001  every compile error is a finding to report, not a crash of the gate
            diag = "\n".join(ln for ln in captured().splitlines() if "error" in ln.lower())
            return "fail", time.perf_counter() - t0, f"{type(e).__name__}: {e}" + (f"\n{diag}" if diag else "")
    try:
        shared = int(getattr(ck.metadata, "shared", 0) or 0)
        limit = _MAX_SHARED.get(job.capability)
        if limit is not None and shared > limit:
            return (
                "fail",
                time.perf_counter() - t0,
                f"needs {shared} B of shared memory, sm_{job.capability} allows {limit}",
            )
        return "ok", time.perf_counter() - t0, f"shared={shared}"
    except Exception as e:  # noqa: BLE001
        return "fail", time.perf_counter() - t0, f"reading the compiled kernel's metadata: {type(e).__name__}: {e}"


def _worker_init(cache_dir: str | None) -> None:
    import warnings

    if cache_dir:
        os.environ["TRITON_CACHE_DIR"] = cache_dir
    # Triton 3.9 warns once per process that its FP-fusion default will change; the gate compiles with the default
    # the ops get at run time, so the warning is noise here.
    warnings.filterwarnings("ignore", message="TRITON_DEFAULT_FP_FUSION")


def probe_targets(api, candidates=PROBE_TARGETS) -> tuple[list[int], dict[int, str]]:
    """The candidate capabilities the installed Triton compiles a trivial kernel for (to a cubin), and why not."""
    from solo.ops import _triton_downsample_masks as m

    ok, why = [], {}
    for cc in candidates:
        job = Job(
            m.__name__,
            "_downsample_kernel",
            (("tensor", "uint8", True),) * 2 + (7,) * 6,
            {"STRIDE": 1, "BLOCK_R": 1, "BLOCK_C": 16, "num_warps": 1},
            cc,
            (1,),
        )
        status, _, detail = _compile_job(job)
        if status == "ok":
            ok.append(cc)
        else:
            why[cc] = detail.splitlines()[0][:200]
    return ok, why


# ---------------------------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------------------------


def _error_lines(text: str, n: int = 8) -> list[str]:
    # Triton's CompilationError is "at L:C:", the kernel source up to the failing line, then the message: keep the
    # location, the failing source line and the message; other errors: their first lines.
    lines = [ln.rstrip() for ln in text.splitlines() if ln.strip()]
    if len(lines) > 2 and re.match(r"^\w*Error: at \d+:\d+:$", lines[0]):
        src_end = next((i for i, ln in enumerate(lines) if ln.lstrip().startswith("^")), None)
        if src_end is not None:
            lines = [lines[0], lines[src_end - 1]] + lines[src_end + 1 :]
    return lines[:n] + ([f"... ({len(lines) - n} more lines)"] if len(lines) > n else [])


def _fmt_kwargs(kwargs: dict) -> str:
    def v(x):
        return getattr(x, "name", None) or repr(x)

    return ", ".join(f"{k}={v(x)}" for k, x in kwargs.items())


def run_gate(
    targets: list[int] | None = None,
    ops: list[str] | None = None,
    plugins: list[str] | None = None,
    workers: int | None = None,
    cache_dir: str | None = None,
    case_filter: str | None = None,
    dry_run: bool = False,
    out=sys.stdout,
) -> int:
    """Run the gate; returns the exit status (0 ok, 1 failures). Arguments as the command line's."""
    t_start = time.perf_counter()
    # Kernels must be real JIT functions, not the interpreter's (the workers import the kernels afresh, but their
    # environment is this one's): refuse with the reason.
    if os.environ.get("TRITON_INTERPRET", "0") == "1":
        raise SystemExit("triton_compile_check: unset TRITON_INTERPRET (the interpreter cannot compile kernels)")
    api = triton_api()

    def say(*a):
        print(*a, file=out, flush=True)

    cases = default_cases()
    modules = kernel_modules()
    for p in plugins or []:
        mod = importlib.import_module(p)
        cases += list(getattr(mod, "CASES", []))
        modules.append(p)
    if ops:
        cases = [c for c in cases if c.op in ops]
    if case_filter:
        cases = [c for c in cases if re.search(case_filter, f"{c.op}: {c.label}")]
    if not cases:
        raise SystemExit(f"triton_compile_check: no case matches ops={ops} cases={case_filter!r}")

    own_cache = cache_dir is None
    cache_dir = cache_dir or tempfile.mkdtemp(prefix="solo-triton-gate-cache-")
    saved_env = os.environ.get("TRITON_CACHE_DIR")
    _worker_init(cache_dir)  # the probe compiles in this process
    try:
        return _run(targets, ops, cases, modules, workers, cache_dir, say, api, t_start, dry_run, case_filter)
    finally:
        if saved_env is None:
            os.environ.pop("TRITON_CACHE_DIR", None)
        else:
            os.environ["TRITON_CACHE_DIR"] = saved_env
        if own_cache:
            shutil.rmtree(cache_dir, ignore_errors=True)


def _run(targets, ops, cases, modules, workers, cache_dir, say, api, t_start, dry_run, case_filter) -> int:
    triton = api["triton"]
    probed, skipped = [], {}
    if targets is None:
        probed, skipped = probe_targets(api)
        targets = list(BASE_TARGETS) + probed
    say(
        f"triton compile check: triton {triton.__version__}, torch {torch.__version__}, python {sys.version.split()[0]}"
    )
    say(f"targets: {' '.join(f'sm_{t}' for t in targets)}")
    for cc, why in skipped.items():
        say(f"  sm_{cc} skipped: this Triton cannot compile for it ({why})")

    from solo.ops import _triton_common

    failures = []  # (kernel, target, cases, kwargs, error, signature)
    jobs: dict[str, Job] = {}
    n_launches = 0
    for cc in targets:
        for case in cases:
            where = f"{case.op}: {case.label}"
            try:
                with _triton_common.recording(cc) as launches:
                    case.run()
            except Exception as e:  # noqa: BLE001  a host-code error of an op is a finding too
                failures.append(("(host code)", cc, [where], {}, f"{type(e).__name__}: {e}"))
                continue
            for ln in launches:
                n_launches += 1
                kernel = ln.kernel
                job = Job(
                    kernel.fn.__module__,
                    kernel.fn.__name__,
                    tuple(_arg_spec(a) for a in ln.args),
                    ln.kwargs,
                    cc,
                    ln.grid,
                )
                bad_grid = [g for g, lim in zip(ln.grid, _MAX_GRID, strict=False) if not 0 < g <= lim]
                if len(ln.grid) > 3 or bad_grid:
                    failures.append((job.name, cc, [where], ln.kwargs, f"grid {ln.grid} outside CUDA's limits"))
                try:
                    job.key = _job_key(api, job)
                except Exception as e:  # noqa: BLE001
                    failures.append((job.name, cc, [where], ln.kwargs, f"binding failed: {type(e).__name__}: {e}"))
                    continue
                jobs.setdefault(job.key, job).cases.append(where)
    say(f"cases: {len(cases)} per target, {n_launches} launches recorded, {len(jobs)} distinct compiles")
    if dry_run:
        counts: dict[str, int] = {}
        for j in jobs.values():
            counts[j.name] = counts.get(j.name, 0) + 1
        for name, c in sorted(counts.items()):
            say(f"  {name}: {c} compiles over {len(targets)} targets")
        return 1 if failures else 0

    # Largest kernels first, so the pool does not end on a long tail.
    order = sorted(jobs.values(), key=lambda j: (-len(str(j.kwargs)), j.name))
    workers = workers or max(1, min(os.cpu_count() or 1, len(order)))
    results: dict[str, tuple[str, float, str]] = {}
    t_compile = time.perf_counter()
    ctx = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(
        workers, mp_context=ctx, initializer=_worker_init, initargs=(cache_dir,)
    ) as pool:
        futures = {pool.submit(_compile_job, j): j.key for j in order}
        for fut in concurrent.futures.as_completed(futures):
            results[futures[fut]] = fut.result()
    compile_wall = time.perf_counter() - t_compile

    # Table: kernel x target, variants compiled (and failed), compile seconds.
    table: dict[tuple[str, int], list] = {}
    for key, job in jobs.items():
        status, secs, detail = results[key]
        cell = table.setdefault((job.name, job.capability), [0, 0, 0.0])
        cell[0] += 1
        cell[2] += secs
        if status != "ok":
            cell[1] += 1
            failures.append((job.name, job.capability, job.cases, job.kwargs, detail, job.signature))
    entries = entry_kernels(modules)
    # A restricted run (--ops/--cases) lists the kernels it compiled; a full run every entry kernel.
    names = sorted({n for n, _ in table} | (set() if ops or case_filter else {k.rsplit(".", 1)[1] for k in entries}))
    width = max((len(n) for n in names), default=6) + 2
    say("")
    say("kernel".ljust(width) + "".join(f"sm_{t}".rjust(20) for t in targets))
    for name in names:
        row = name.ljust(width)
        for t in targets:
            n, bad, secs = table.get((name, t), (0, 0, 0.0))
            txt = "NOT COMPILED" if n == 0 else (f"{n - bad}/{n} ok" if bad else f"{n} ok") + f" {secs:5.1f}s"
            row += txt.rjust(20)
        say(row)

    # Coverage: every entry kernel compiled for every target.
    # With --ops, only the modules those ops launch from are checked; --cases (a few cases) skips the check.
    launched_modules = {j.module for j in jobs.values()}
    missing = []
    if case_filter:
        say("kernel coverage not checked: --cases selects a few cases")
    for full, fn in sorted(entries.items()):
        if case_filter or (ops and fn.fn.__module__ not in launched_modules):
            continue
        for t in targets:
            if (fn.fn.__name__, t) not in table:
                missing.append((full, t))
    if missing:
        for full, t in missing:
            failures.append((full, t, [], {}, "entry kernel never compiled by any case (add a case that launches it)"))

    say("")
    if failures:
        say(f"FAILED: {len(failures)} failure(s)")
        for i, (name, cc, where, kwargs, err, *sig) in enumerate(failures, 1):
            say(f"[{i}] kernel {name}, target sm_{cc}")
            if where:
                say(f"    case: {where[0]}" + (f"  (+{len(where) - 1} more cases)" if len(where) > 1 else ""))
            if sig and sig[0]:
                say(f"    arguments: {sig[0]}")
            if kwargs:
                say(f"    constexprs/options: {_fmt_kwargs(kwargs)}")
            for ln in _error_lines(err):
                say(f"    | {ln}")
    else:
        say(f"OK: {len(entries)} entry kernels, {len(jobs)} compiles, all targets")
    say(
        f"time: {time.perf_counter() - t_start:.1f} s wall ({compile_wall:.1f} s compiling on {workers} processes, "
        f"{sum(r[1] for r in results.values()):.1f} s of compiles)"
    )
    return 1 if failures else 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m solo.tools.triton_compile_check", description=__doc__.split("\n")[0])
    ap.add_argument("--targets", help="comma-separated compute capabilities (default: 75,80,90 + probed 100,120)")
    ap.add_argument("--ops", help="comma-separated op names to check (default: all)")
    ap.add_argument("--cases", help="regular expression: only the cases whose 'op: label' it matches")
    ap.add_argument("--dry-run", action="store_true", help="record and count the compiles, compile nothing")
    ap.add_argument("--plugin", action="append", default=[], help="module adding CASES and kernels (tests)")
    ap.add_argument("--workers", type=int, help="compile processes (default: CPU count)")
    ap.add_argument("--cache-dir", help="Triton cache to use (default: a fresh temporary one)")
    a = ap.parse_args(argv)
    targets = [int(t.strip().removeprefix("sm_")) for t in a.targets.split(",")] if a.targets else None
    ops = [o.strip() for o in a.ops.split(",")] if a.ops else None
    return run_gate(targets, ops, a.plugin, a.workers, a.cache_dir, a.cases, a.dry_run)


if __name__ == "__main__":
    sys.exit(main())
