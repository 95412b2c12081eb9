"""Triton backend of ``solo_triton::assign_grid_targets_mass`` / ``solo_triton::assign_grid_targets_cells`` (same
schemas and semantics as ``solo::`` in csrc/ops.cpp; geometry of csrc/include/solo/grid_targets.h, repeated here
operation for operation in float64).

mass: grid M * splits; program (instance, split) walks a band of rows in [BLOCK_R, BLOCK_C] tiles with int32 lane
  accumulators (count, sum x, sum (y - band start)), bounded so they cannot overflow (int64 lanes otherwise), and
  writes its band's three sums; a torch sum over the bands gives [M, 3]. Integer sums: exact, deterministic.
cells: (1) grid (M / BLOCK_M, L): each (instance, level) computes its region, stores it, and marks its <= 9 cells
  with atomic max (winner = the last instance) and atomic add (count); integer atomics, so the result does not
  depend on their order. (2) torch cumsum of the per-cell positives (one host sync for P). (3) grid N / BLOCK_N:
  labels of every cell, and (SOLO) the cell's one positive. (4) SOLOv2: each (instance, level) writes its pairs into
  its cells' segments (atomic slots), then a torch sort by (cell, instance) fixes the order inside the segments.
  The instance scale sqrt((x2 - x1)(y2 - y1)) is computed by torch (IEEE-rounded sqrt on every device).

Kernels are launched with ``enable_fp_fusion=False``: a fused multiply-add would round the region bounds differently
from the other backends. Only the ops are registered here; the fake kernels live in solo/ops/assign_grid_targets.py.
Importing this module raises ImportError when triton is not installed.
"""

import math

import torch
import triton
import triton.language as tl

from solo.ops._triton_common import cpu_allowed, device_ctx, host_value, launch

__all__ = ["assign_grid_targets_cells", "assign_grid_targets_mass"]

# Mass pass: 8 x 256 byte tiles (4 warps, 16 bytes per thread), 64 rows per program: an 800 x 1216 mask is 13
# programs, so even a few instances fill a GPU.
_BLOCK_R = 8
_BLOCK_C = 256
_ROWS_PER_PROGRAM = 64
# Cells: instances per program of the per-(instance, level) kernels, and cells per program of the cell kernel.
_BLOCK_M = 64
_BLOCK_N = 1024

_MAX_LEVELS = 16
# Lane sums of the mass kernel at or above this use int64 lanes (a test lowers it to cover that variant).
_INT32_LANE_LIMIT = 2**31


def _is_interpreted() -> bool:
    return type(_mass_kernel).__name__ == "InterpretedFunction"


@triton.jit
def _mass_kernel(
    m_ptr, part_ptr, H, W, n_split, rows, BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr, acc_t: tl.constexpr
):
    pid = tl.program_id(0)
    inst = pid // n_split
    split = pid - inst * n_split
    r0 = split * rows
    r1 = tl.minimum(r0 + rows, H)
    base = m_ptr + inst.to(tl.int64) * H * W
    acc_n = tl.zeros([BLOCK_R, BLOCK_C], dtype=acc_t)
    acc_x = tl.zeros([BLOCK_R, BLOCK_C], dtype=acc_t)
    acc_y = tl.zeros([BLOCK_R, BLOCK_C], dtype=acc_t)
    rr = tl.arange(0, BLOCK_R)
    cc = tl.arange(0, BLOCK_C)
    for r in range(r0, r1, BLOCK_R):
        row = r + rr
        row_ptr = base + row.to(tl.int64) * W
        row_ok = row < r1
        dy = (row - r0).to(acc_t)
        for c in range(0, W, BLOCK_C):
            col = c + cc
            ok = row_ok[:, None] & (col < W)[None, :]
            v = tl.load(row_ptr[:, None] + col[None, :], mask=ok, other=0)
            b = (v != 0).to(acc_t)
            acc_n += b
            acc_x += b * col.to(acc_t)[None, :]
            acc_y += b * dy[:, None]
    n = tl.sum(tl.sum(acc_n.to(tl.int64), axis=1), axis=0)
    sx = tl.sum(tl.sum(acc_x.to(tl.int64), axis=1), axis=0)
    sy = tl.sum(tl.sum(acc_y.to(tl.int64), axis=1), axis=0) + r0.to(tl.int64) * n
    out = part_ptr + pid.to(tl.int64) * 3
    tl.store(out, n)
    tl.store(out + 1, sx)
    tl.store(out + 2, sy)


@torch.library.custom_op("solo_triton::assign_grid_targets_mass", mutates_args=(), schema="(Tensor masks) -> Tensor")
def assign_grid_targets_mass(masks: torch.Tensor) -> torch.Tensor:
    """Moments of each mask (Triton): masks (Tensor[M, H, W], bool/uint8; nonzero = 1) -> int64 [M, 3] =
    (sum m, sum x m, sum y m). See csrc/ops.cpp."""
    fn = "assign_grid_targets_mass"
    if masks.dim() != 3:
        raise RuntimeError(f"{fn}: masks must be 3-D [M, H, W], got shape {tuple(masks.shape)}")
    if masks.dtype not in (torch.bool, torch.uint8):
        raise RuntimeError(f"{fn}: masks must be bool or uint8, got {masks.dtype}")
    if not masks.is_cuda and not cpu_allowed(_is_interpreted()):
        raise RuntimeError(f"{fn} (triton): CPU tensors need TRITON_INTERPRET=1 set before triton is imported")
    M, H, W = masks.shape
    if M == 0 or H == 0 or W == 0:
        return torch.zeros((M, 3), dtype=torch.int64, device=masks.device)
    mk = masks.contiguous()
    mk = mk.view(torch.uint8) if mk.dtype == torch.bool else mk
    rows = min(H, _ROWS_PER_PROGRAM)
    n_split = triton.cdiv(H, rows)
    # Largest lane sum: (elements per lane) * (largest column or row offset); int64 lanes past int32.
    per_lane = triton.cdiv(rows, _BLOCK_R) * triton.cdiv(W, _BLOCK_C)
    wide = per_lane * max(W, rows) >= _INT32_LANE_LIMIT
    part = torch.empty((M, n_split, 3), dtype=torch.int64, device=masks.device)
    with device_ctx(masks):
        launch(
            _mass_kernel,
            (M * n_split,),
            mk,
            part,
            H,
            W,
            n_split,
            rows,
            BLOCK_R=_BLOCK_R,
            BLOCK_C=_BLOCK_C,
            acc_t=tl.int64 if wide else tl.int32,
            num_warps=4,
        )
    return part.sum(1)


@triton.jit
def _grid_cell(pos, extent, S):
    # floor((pos / extent) * S) clamped to [-1, S]; NaN and -inf give -1 (grid::floor_cell).
    v = pos / extent * S.to(tl.float64)
    v = tl.where(v > -1.0, tl.where(v < S.to(tl.float64), v, S.to(tl.float64)), -1.0)
    return tl.floor(v).to(tl.int32)


@triton.jit
def _load_rect(rect_ptr, m, lvl, L, ok):
    p = rect_ptr + (m.to(tl.int64) * L + lvl) * 4
    top = tl.load(p, mask=ok, other=1)
    down = tl.load(p + 1, mask=ok, other=0)
    left = tl.load(p + 2, mask=ok, other=1)
    right = tl.load(p + 3, mask=ok, other=0)
    return top, down, left, right


@triton.jit
def _cells_count_kernel(
    mass_ptr,
    boxes_ptr,
    scale_ptr,
    img_ptr,
    fcfg_ptr,
    icfg_ptr,
    rect_ptr,
    winner_ptr,
    count_ptr,
    M,
    L,
    B,
    T,
    H,
    W,
    BLOCK: tl.constexpr,
):
    lvl = tl.program_id(1)
    m = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    valid = m < M
    m64 = m.to(tl.int64)
    n = tl.load(mass_ptr + m64 * 3, mask=valid, other=0)
    sx = tl.load(mass_ptr + m64 * 3 + 1, mask=valid, other=0)
    sy = tl.load(mass_ptr + m64 * 3 + 2, mask=valid, other=0)
    x1 = tl.load(boxes_ptr + m64 * 4, mask=valid, other=0.0)
    y1 = tl.load(boxes_ptr + m64 * 4 + 1, mask=valid, other=0.0)
    x2 = tl.load(boxes_ptr + m64 * 4 + 2, mask=valid, other=0.0)
    y2 = tl.load(boxes_ptr + m64 * 4 + 3, mask=valid, other=0.0)
    scale = tl.load(scale_ptr + m64, mask=valid, other=float("nan"))
    img = tl.load(img_ptr + m64, mask=valid, other=-1)
    S = tl.load(icfg_ptr + lvl).to(tl.int32)
    level_off = tl.load(icfg_ptr + L + lvl)
    lower = tl.load(fcfg_ptr + lvl)
    upper = tl.load(fcfg_ptr + L + lvl)
    sigma = tl.load(fcfg_ptr + 2 * L)
    # tl.cast, not H.to(): Triton specialises an int argument equal to 1 into a Python int, which has no .to().
    Hf = tl.cast(H, tl.float64)
    Wf = tl.cast(W, tl.float64)

    active = valid & (n > 0) & (lower <= scale) & (scale <= upper) & (img >= 0) & (img < B)
    nf = tl.where(n > 0, n, 1).to(tl.float64)
    cx = sx.to(tl.float64) / nf
    cy = sy.to(tl.float64) / nf
    hw = 0.5 * (x2 - x1) * sigma
    hh = 0.5 * (y2 - y1) * sigma
    ic = tl.minimum(tl.maximum(_grid_cell(cy, Hf, S), 0), S - 1)
    jc = tl.minimum(tl.maximum(_grid_cell(cx, Wf, S), 0), S - 1)
    top = tl.maximum(tl.maximum(_grid_cell(cy - hh, Hf, S), 0), ic - 1)
    down = tl.minimum(tl.minimum(_grid_cell(cy + hh, Hf, S), S - 1), ic + 1)
    left = tl.maximum(tl.maximum(_grid_cell(cx - hw, Wf, S), 0), jc - 1)
    right = tl.minimum(tl.minimum(_grid_cell(cx + hw, Wf, S), S - 1), jc + 1)
    active = active & (top <= down) & (left <= right)
    top = tl.where(active, top, 1)
    down = tl.where(active, down, 0)

    p = rect_ptr + (m64 * L + lvl) * 4
    tl.store(p, top, mask=valid)
    tl.store(p + 1, down, mask=valid)
    tl.store(p + 2, left, mask=valid)
    tl.store(p + 3, right, mask=valid)

    # The region lies inside the 3 x 3 cells around the centre cell: at most 3 rows and 3 columns.
    base = tl.where(active, img, 0).to(tl.int64) * T + level_off
    for di in tl.static_range(3):
        for dj in tl.static_range(3):
            i = top + di
            j = left + dj
            ok = active & (i <= down) & (j <= right)
            cell = tl.where(ok, base + i * S + j, 0)
            tl.atomic_max(winner_ptr + cell, m, mask=ok)
            tl.atomic_add(count_ptr + cell, 1, mask=ok)


@triton.jit
def _cells_label_kernel(
    winner_ptr,
    labels_ptr,
    offsets_ptr,
    out_ptr,
    pc_ptr,
    pi_ptr,
    N,
    num_classes,
    SOLO: tl.constexpr,
    BLOCK: tl.constexpr,
):
    c = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    valid = c < N
    w = tl.load(winner_ptr + c, mask=valid, other=-1)
    has = valid & (w >= 0)
    lab = tl.load(labels_ptr + tl.where(has, w, 0), mask=has, other=0)
    tl.store(out_ptr + c, tl.where(has, lab, num_classes), mask=valid)
    if SOLO:
        pos = tl.load(offsets_ptr + c, mask=has, other=0)
        tl.store(pc_ptr + pos, c, mask=has)
        tl.store(pi_ptr + pos, w.to(tl.int64), mask=has)


@triton.jit
def _cells_pairs_kernel(
    rect_ptr, img_ptr, icfg_ptr, offsets_ptr, count_ptr, pc_ptr, pi_ptr, M, L, T, BLOCK: tl.constexpr
):
    lvl = tl.program_id(1)
    m = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    valid = m < M
    img = tl.load(img_ptr + m, mask=valid, other=0)
    S = tl.load(icfg_ptr + lvl).to(tl.int32)
    level_off = tl.load(icfg_ptr + L + lvl)
    top, down, left, right = _load_rect(rect_ptr, m, lvl, L, valid)
    base = img.to(tl.int64) * T + level_off
    for di in tl.static_range(3):
        for dj in tl.static_range(3):
            i = top + di
            j = left + dj
            ok = valid & (i <= down) & (j <= right)
            cell = tl.where(ok, base + i * S + j, 0)
            # Slots count down from the cell's count: unique, in no particular order (sorted afterwards).
            slot = tl.atomic_add(count_ptr + cell, -1, mask=ok) - 1
            pos = tl.load(offsets_ptr + cell, mask=ok, other=0) + slot
            pos = tl.where(ok, pos, 0)
            tl.store(pc_ptr + pos, cell, mask=ok)
            tl.store(pi_ptr + pos, m.to(tl.int64), mask=ok)


def _to_device(values: list, dtype: torch.dtype, dev: torch.device) -> torch.Tensor:
    """A small host list on `dev` without a stream sync (a copy from pageable memory would wait for the stream)."""
    if dev.type != "cuda":
        return torch.tensor(values, dtype=dtype, device=dev)
    return torch.tensor(values, dtype=dtype, pin_memory=True).to(dev, non_blocking=True)


@torch.library.custom_op(
    "solo_triton::assign_grid_targets_cells",
    mutates_args=(),
    schema="(Tensor mass, Tensor boxes, Tensor labels, Tensor image_ids, int batch_size, int height, int width, "
    "int[] num_grids, float[] scale_ranges, float sigma, int num_classes, int mode) -> (Tensor, Tensor, Tensor)",
)
def assign_grid_targets_cells(
    mass: torch.Tensor,
    boxes: torch.Tensor,
    labels: torch.Tensor,
    image_ids: torch.Tensor,
    batch_size: int,
    height: int,
    width: int,
    num_grids: list[int],
    scale_ranges: list[float],
    sigma: float,
    num_classes: int,
    mode: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Labels and positives from the mask moments (Triton). See csrc/ops.cpp for the contract."""
    fn = "assign_grid_targets"
    if mass.dim() != 2 or mass.shape[1] != 3 or mass.dtype != torch.int64:
        raise RuntimeError(f"{fn}: mass must be int64 [M, 3], got {mass.dtype} {tuple(mass.shape)}")
    M = mass.shape[0]
    if tuple(boxes.shape) != (M, 4) or not boxes.dtype.is_floating_point:
        raise RuntimeError(f"{fn}: boxes must be floating [{M}, 4], got {boxes.dtype} {tuple(boxes.shape)}")
    for name, t in (("labels", labels), ("image_ids", image_ids)):
        if tuple(t.shape) != (M,) or t.dtype != torch.int64:
            raise RuntimeError(f"{fn}: {name} must be int64 [{M}], got {t.dtype} {tuple(t.shape)}")
    for name, t in (("boxes", boxes), ("labels", labels), ("image_ids", image_ids)):
        if t.device != mass.device:
            raise RuntimeError(f"{fn}: {name} is on {t.device}, mass on {mass.device}")
    L = len(num_grids)
    # Checked in order (later checks index scale_ranges by level).
    checks = (
        (lambda: 1 <= L <= _MAX_LEVELS, f"num_grids must have 1 to {_MAX_LEVELS} levels, got {L}"),
        (lambda: len(scale_ranges) == 2 * L, f"scale_ranges must hold {2 * L} values (lower, upper per level)"),
        (lambda: all(1 <= s <= 46340 for s in num_grids), f"num_grids must be in [1, 46340], got {list(num_grids)}"),
        (
            lambda: all(0 <= scale_ranges[2 * i] <= scale_ranges[2 * i + 1] for i in range(L)),
            "scale_ranges: need 0 <= lower <= upper",
        ),
        (lambda: batch_size >= 0, f"batch_size must be >= 0, got {batch_size}"),
        (lambda: height >= 0 and width >= 0, f"height and width must be >= 0, got {height} x {width}"),
        (lambda: math.isfinite(sigma) and sigma > 0, f"sigma must be a finite number > 0, got {sigma}"),
        (lambda: num_classes >= 1, f"num_classes must be >= 1, got {num_classes}"),
        (lambda: mode in (0, 1), f"mode must be 0 (solo) or 1 (solov2), got {mode}"),
    )
    for ok, why in checks:
        if not ok():
            raise RuntimeError(f"{fn}: {why}")
    if not mass.is_cuda and not cpu_allowed(_is_interpreted()):
        raise RuntimeError(f"{fn} (triton): CPU tensors need TRITON_INTERPRET=1 set before triton is imported")
    dev = mass.device
    T = sum(s * s for s in num_grids)
    N = batch_size * T
    offsets_l, acc = [], 0
    for s in num_grids:
        offsets_l.append(acc)
        acc += s * s
    icfg = _to_device(list(num_grids) + offsets_l, torch.int64, dev)
    fcfg = _to_device(
        [scale_ranges[2 * i] for i in range(L)] + [scale_ranges[2 * i + 1] for i in range(L)] + [sigma],
        torch.float64,
        dev,
    )
    b = boxes.detach().to(torch.float64).contiguous()
    scale = torch.sqrt((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]))
    ms, lb, im = mass.contiguous(), labels.contiguous(), image_ids.contiguous()

    winner = torch.full((N,), -1, dtype=torch.int32, device=dev)
    count = torch.zeros((N,), dtype=torch.int32, device=dev)
    rects = torch.empty((M, L, 4), dtype=torch.int32, device=dev)
    out_labels = torch.empty((batch_size, T), dtype=torch.int64, device=dev)
    with device_ctx(mass):
        if M and N:
            launch(
                _cells_count_kernel,
                (triton.cdiv(M, _BLOCK_M), L),
                ms,
                b,
                scale,
                im,
                fcfg,
                icfg,
                rects,
                winner,
                count,
                M,
                L,
                batch_size,
                T,
                height,
                width,
                BLOCK=_BLOCK_M,
                enable_fp_fusion=False,
                num_warps=2,
            )
        per_cell = (winner >= 0).to(torch.int64) if mode == 0 else count.to(torch.int64)
        ends = torch.cumsum(per_cell, 0)
        # The one host sync: the size of the outputs. While recording launches (compile gate) the count kernel did not
        # run: stand in the largest possible count (one positive per cell in SOLO; each instance in all 9 cells of
        # its 3 x 3 region at every level in SOLOv2), so the later launches are still produced.
        P = host_value(lambda: int(ends[-1]), lambda: min(N, 9 * M * L) if mode == 0 else 9 * M * L) if N else 0
        offsets = ends - per_cell
        pos_cells = torch.empty((P,), dtype=torch.int64, device=dev)
        pos_instances = torch.empty((P,), dtype=torch.int64, device=dev)
        if N:
            launch(
                _cells_label_kernel,
                (triton.cdiv(N, _BLOCK_N),),
                winner,
                lb,
                offsets,
                out_labels,
                pos_cells,
                pos_instances,
                N,
                num_classes,
                SOLO=mode == 0,
                BLOCK=_BLOCK_N,
                num_warps=4,
            )
        if mode == 1 and P:
            launch(
                _cells_pairs_kernel,
                (triton.cdiv(M, _BLOCK_M), L),
                rects,
                im,
                icfg,
                offsets,
                count,
                pos_cells,
                pos_instances,
                M,
                L,
                T,
                BLOCK=_BLOCK_M,
                num_warps=2,
            )
            order = torch.argsort(pos_cells * M + pos_instances)
            pos_cells, pos_instances = pos_cells[order], pos_instances[order]
    return out_labels, pos_cells, pos_instances
