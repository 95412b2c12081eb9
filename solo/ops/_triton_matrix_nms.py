"""Triton backend of ``solo_triton::matrix_nms`` (same schema and semantics as ``solo::matrix_nms`` in csrc/ops.cpp;
math of csrc/include/solo/matrix_nms.h).

Three launches, no host sync:
  1. intersections: one program per (upper-triangular 64 x 64 tile of mask pairs, K split). The masks' bytes are
     loaded straight from the uint8/bool tensor as 0/1 int8 tiles and multiplied with ``tl.dot`` into an int32
     accumulator: exact counts on the tensor cores (no float copy, no packing pass). The diagonal of the diagonal
     tiles is each mask's area. Tiles below the diagonal are never launched. With several K splits per tile the
     partial counts are added with integer atomics (exact, so still deterministic). Before sm_80 (T4), where Triton
     has no int8 MMA, the tiles are 0/1 fp16 operands with an fp32 accumulator instead: exact, see _FP16_MAX_K.
  2. compensation: one program per block of columns j; comp_j = max over the same-label i < j of IoU_ij (and
     1 - comp_j, formed without cancellation).
  3. decay: one program per block of columns j; out_j = scores_j * min(1, min over the same-label i < j of
     f(IoU_ij) / f(comp_i)).

Only the op is registered here; the fake kernel is registered in solo/ops/matrix_nms.py. Importing this module raises
ImportError when triton is not installed. On CPU tensors the kernels run only when ``TRITON_INTERPRET=1`` was set
before triton was first imported.
"""

import torch
import triton
import triton.language as tl

from solo.ops._triton_common import cpu_allowed, device_capability, device_ctx, launch, sm_count

__all__ = ["matrix_nms"]

# Intersection tiles: 64 x 64 mask pairs, 128 mask bytes per dot step (int8 MMA wants K a multiple of 32).
_BLOCK = 64
_BLOCK_K = 128
_NUM_WARPS = 4
_NUM_STAGES = 3
# Aim for this many intersection programs per SM (K splits are added until there are enough).
_PROGRAMS_PER_SM = 2
# Epilogue kernels: blocks of 64 columns, 64 rows at a time.
_EPI_BLOCK_I = 64
_EPI_BLOCK_J = 64
# Triton lowers an int8 tl.dot only from sm_80 on (for sm_75 TritonGPUAccelerateMatmul fails: "'arith.extf' op operand
# #0 must be floating-point-like"); below it the fp16 variant runs. Chosen from the device's compute capability.
_INT8_MMA_MIN_CAPABILITY = 80
# fp16 variant: the products of 0/1 operands are exact and an fp32 accumulator holds every integer up to 2^24 exactly,
# so the sums are exact as long as no partial count exceeds 2^24. A program's counts are at most the number of mask
# bytes of its K split (k_per_split), so the host caps k_per_split at 2^24 (a multiple of _BLOCK_K) for this variant
# and the splits are added as int32 with atomics (exact). Masks have < 2^30 pixels (checked): at most 64 splits.
_FP16_MAX_K = 2**24

_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
_AREA_DTYPES = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64) + _FLOAT_DTYPES


@triton.jit
def _inter_kernel(
    m_ptr,
    inter_ptr,
    N,
    L,
    nb,
    k_per_split,
    ATOMIC: tl.constexpr,
    FP16_MMA: tl.constexpr,
    BLOCK: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    # Upper-triangular tile index t -> (bi, bj), bi <= bj; row bi of tiles starts at off(bi) = bi (2 nb - bi + 1) / 2.
    t = tl.program_id(0)
    split = tl.program_id(1)
    b = 2 * nb + 1
    disc = (b * b - 8 * t).to(tl.float32)
    bi = ((b - tl.sqrt(disc)) * 0.5).to(tl.int32)
    # The float estimate can be off by one either way: correct it.
    bi = tl.where((bi + 1) * (2 * nb - bi) // 2 <= t, bi + 1, bi)
    bi = tl.where(bi * (2 * nb - bi + 1) // 2 > t, bi - 1, bi)
    bj = bi + t - bi * (2 * nb - bi + 1) // 2

    rows = bi * BLOCK + tl.arange(0, BLOCK)
    cols = bj * BLOCK + tl.arange(0, BLOCK)
    rmask = rows < N
    cmask = cols < N
    a_base = m_ptr + rows.to(tl.int64)[:, None] * L
    b_base = m_ptr + cols.to(tl.int64)[None, :] * L
    k0 = split * k_per_split
    k_end = tl.minimum(k0 + k_per_split, L)
    if FP16_MMA:
        acc = tl.zeros([BLOCK, BLOCK], dtype=tl.float32)
    else:
        acc = tl.zeros([BLOCK, BLOCK], dtype=tl.int32)
    for k in range(k0, k_end, BLOCK_K):
        ka = k + tl.arange(0, BLOCK_K)
        kin = ka < k_end
        a = tl.load(a_base + ka[None, :], mask=rmask[:, None] & kin[None, :], other=0)
        bt = tl.load(b_base + ka[:, None], mask=kin[:, None] & cmask[None, :], other=0)
        # Any nonzero byte is inside: 0/1 operands, exact sums (int32; fp32 below 2^24 in the fp16 variant).
        if FP16_MMA:
            acc = tl.dot((a != 0).to(tl.float16), (bt != 0).to(tl.float16), acc, out_dtype=tl.float32)
        else:
            acc = tl.dot((a != 0).to(tl.int8), (bt != 0).to(tl.int8), acc, out_dtype=tl.int32)
    counts = acc.to(tl.int32)  # exact: integers (below 2^24 in the fp16 variant)
    out = inter_ptr + rows.to(tl.int64)[:, None] * N + cols[None, :]
    keep = rmask[:, None] & cmask[None, :] & (rows[:, None] <= cols[None, :])
    if ATOMIC:
        tl.atomic_add(out, counts, mask=keep)
    else:
        tl.store(out, counts, mask=keep)


@triton.jit
def _pair_iou(inter_ptr, areas_ptr, N, i, j, valid, GIVEN: tl.constexpr):
    # IoU and 1 - IoU of the pairs (i, j) (i a column vector, j a row vector), as mask_iou in matrix_nms.h: union and
    # union - inter exact in int64 for counted areas (the diagonal of inter), in float32 for given areas.
    inter = tl.load(inter_ptr + i.to(tl.int64)[:, None] * N + j[None, :], mask=valid, other=0)
    if GIVEN:
        ai = tl.load(areas_ptr + i, mask=i < N, other=0.0)
        aj = tl.load(areas_ptr + j, mask=j < N, other=0.0)
        fi = inter.to(tl.float32)
        uni = ai[:, None] + aj[None, :] - fi
        diff = uni - fi
        uf = uni
    else:
        ai = tl.load(inter_ptr + i.to(tl.int64) * (N + 1), mask=i < N, other=0).to(tl.int64)
        aj = tl.load(inter_ptr + j.to(tl.int64) * (N + 1), mask=j < N, other=0).to(tl.int64)
        i64 = inter.to(tl.int64)
        u64 = ai[:, None] + aj[None, :] - i64
        uf = u64.to(tl.float32)
        diff = (u64 - i64).to(tl.float32)
        fi = inter.to(tl.float32)
    pos = uf > 0
    den = tl.where(pos, uf, 1.0)
    iou = tl.where(pos, fi / den, 0.0)
    omd = tl.where(pos, diff / den, 1.0)
    return iou, omd


@triton.jit
def _comp_kernel(
    inter_ptr,
    labels_ptr,
    areas_ptr,
    comp_ptr,
    omc_ptr,
    N,
    GIVEN: tl.constexpr,
    BLOCK_I: tl.constexpr,
    BLOCK_J: tl.constexpr,
):
    j = tl.program_id(0) * BLOCK_J + tl.arange(0, BLOCK_J)
    jmask = j < N
    lj = tl.load(labels_ptr + j, mask=jmask, other=0)
    comp = tl.zeros([BLOCK_J], dtype=tl.float32)
    omc = tl.full([BLOCK_J], 1.0, dtype=tl.float32)
    i_end = tl.minimum(tl.program_id(0) * BLOCK_J + BLOCK_J, N)  # rows i < j only
    for i0 in range(0, i_end, BLOCK_I):
        i = i0 + tl.arange(0, BLOCK_I)
        li = tl.load(labels_ptr + i, mask=i < N, other=0)
        valid = (i[:, None] < j[None, :]) & jmask[None, :] & (li[:, None] == lj[None, :])
        iou, omd = _pair_iou(inter_ptr, areas_ptr, N, i, j, valid, GIVEN)
        comp = tl.maximum(comp, tl.max(tl.where(valid, iou, 0.0), axis=0))
        omc = tl.minimum(omc, tl.min(tl.where(valid, omd, 1.0), axis=0))
    tl.store(comp_ptr + j, comp, mask=jmask)
    tl.store(omc_ptr + j, omc, mask=jmask)


@triton.jit
def _decay_kernel(
    inter_ptr,
    labels_ptr,
    areas_ptr,
    comp_ptr,
    omc_ptr,
    scores_ptr,
    out_ptr,
    N,
    sigma,
    LINEAR: tl.constexpr,
    GIVEN: tl.constexpr,
    BLOCK_I: tl.constexpr,
    BLOCK_J: tl.constexpr,
):
    j = tl.program_id(0) * BLOCK_J + tl.arange(0, BLOCK_J)
    jmask = j < N
    lj = tl.load(labels_ptr + j, mask=jmask, other=0)
    decay = tl.full([BLOCK_J], 1.0, dtype=tl.float32)
    i_end = tl.minimum(tl.program_id(0) * BLOCK_J + BLOCK_J, N)
    for i0 in range(0, i_end, BLOCK_I):
        i = i0 + tl.arange(0, BLOCK_I)
        imask = i < N
        li = tl.load(labels_ptr + i, mask=imask, other=0)
        valid = (i[:, None] < j[None, :]) & jmask[None, :] & (li[:, None] == lj[None, :])
        iou, omd = _pair_iou(inter_ptr, areas_ptr, N, i, j, valid, GIVEN)
        # decay_ratio of matrix_nms.h.
        if LINEAR:
            omc = tl.load(omc_ptr + i, mask=imask, other=1.0)[:, None]
            zero = omc == 0.0
            big = tl.where(omd > 0.0, float("inf"), -3.4028234663852886e38)
            special = tl.where(omd == 0.0, 0.0, big)
            ratio = tl.where(zero, special, omd / tl.where(zero, 1.0, omc))
        else:
            c = tl.load(comp_ptr + i, mask=imask, other=0.0)[:, None]
            ratio = tl.exp(-sigma * ((iou - c) * (iou + c)))
        decay = tl.minimum(decay, tl.min(tl.where(valid, ratio, 1.0), axis=0))
    s = tl.load(scores_ptr + j, mask=jmask, other=0.0)
    tl.store(out_ptr + j, s * decay, mask=jmask)


def _is_interpreted() -> bool:
    # TRITON_INTERPRET is read when @triton.jit runs, i.e. when this module was imported.
    return type(_inter_kernel).__name__ == "InterpretedFunction"


def _num_splits(n_tiles: int, k_blocks: int, sms: int | None) -> int:
    # sms: multiprocessors of the GPU (a typical count of the target's while recording; None: the interpreter).
    if k_blocks <= 1:
        return 1
    if sms is None:
        # Interpreter (tests): two splits, so the atomic path is exercised too.
        return 2
    want = -(-_PROGRAMS_PER_SM * sms // n_tiles)
    return max(1, min(want, k_blocks))


def _use_fp16_mma(capability: int | None) -> bool:
    # capability: 10 * major + minor of the GPU (the target while recording), None on the interpreter (int8 there).
    return capability is not None and capability < _INT8_MMA_MIN_CAPABILITY


def _check_inputs(masks, labels, scores, areas, kernel, sigma) -> None:
    fn = "matrix_nms"
    if masks.dim() != 3:
        raise RuntimeError(f"{fn}: masks must be 3-D [N, H, W], got shape {tuple(masks.shape)}")
    if masks.dtype not in (torch.bool, torch.uint8):
        raise RuntimeError(f"{fn}: masks must be bool or uint8, got {masks.dtype}")
    n = masks.shape[0]
    if labels.shape != (n,) or labels.dtype != torch.int64:
        raise RuntimeError(f"{fn}: labels must be int64 [{n}], got {labels.dtype} {tuple(labels.shape)}")
    if scores.shape != (n,) or scores.dtype not in _FLOAT_DTYPES:
        raise RuntimeError(f"{fn}: scores must be floating point [{n}], got {scores.dtype} {tuple(scores.shape)}")
    tensors = {"labels": labels, "scores": scores}
    if areas is not None:
        if areas.shape != (n,) or areas.dtype not in _AREA_DTYPES:
            raise RuntimeError(f"{fn}: areas must be integer or floating [{n}], got {areas.dtype} {tuple(areas.shape)}")
        tensors["areas"] = areas
    for name, t in tensors.items():
        if t.device != masks.device:
            raise RuntimeError(f"{fn}: {name} on {t.device}, masks on {masks.device}")
    if kernel not in (0, 1):
        raise RuntimeError(f"{fn}: kernel must be 0 (gaussian) or 1 (linear), got {kernel}")
    if not (sigma >= 0 and sigma != float("inf")):
        raise RuntimeError(f"{fn}: sigma must be a finite number >= 0, got {sigma}")
    if masks.shape[1] * masks.shape[2] >= 2**30:
        raise RuntimeError(f"{fn}: masks must have fewer than 2^30 pixels each, got {tuple(masks.shape[1:])}")
    if not masks.is_cuda and not cpu_allowed(_is_interpreted()):
        raise RuntimeError(f"{fn} (triton): CPU tensors need TRITON_INTERPRET=1 set before triton is imported")


@torch.library.custom_op(
    "solo_triton::matrix_nms",
    mutates_args=(),
    schema="(Tensor masks, Tensor labels, Tensor scores, Tensor? areas, int kernel, float sigma) -> Tensor",
)
def matrix_nms(
    masks: torch.Tensor,
    labels: torch.Tensor,
    scores: torch.Tensor,
    areas: torch.Tensor | None,
    kernel: int,
    sigma: float,
) -> torch.Tensor:
    """Matrix NMS (Triton). See csrc/ops.cpp for the contract.

    masks (Tensor[N, H, W], bool/uint8; nonzero = inside); labels (Tensor[N], int64); scores (Tensor[N], float,
    sorted descending: index order is the priority order); areas (Tensor[N] int/float, or None: counted);
    kernel 0 gaussian / 1 linear; sigma >= 0. Returns the decayed scores, Tensor[N] float32.
    """
    _check_inputs(masks, labels, scores, areas, kernel, sigma)
    n = masks.shape[0]
    dev = masks.device
    out = torch.empty((n,), dtype=torch.float32, device=dev)
    if n == 0:
        return out
    L = masks.shape[1] * masks.shape[2]
    m = masks.reshape(n, L).contiguous()
    m = m.view(torch.uint8) if m.dtype == torch.bool else m
    lab = labels.contiguous()
    s = scores.to(torch.float32).contiguous()
    given = areas.to(torch.float32).contiguous() if areas is not None else None

    nb = triton.cdiv(n, _BLOCK)
    n_tiles = nb * (nb + 1) // 2
    k_blocks = triton.cdiv(L, _BLOCK_K)
    fp16_mma = _use_fp16_mma(device_capability(masks))
    splits = _num_splits(n_tiles, k_blocks, sm_count(masks))
    k_per_split = triton.cdiv(k_blocks, splits) * _BLOCK_K
    if fp16_mma:
        k_per_split = min(k_per_split, _FP16_MAX_K)
    splits = max(1, triton.cdiv(L, k_per_split)) if L > 0 else 1
    atomic = splits > 1
    inter = (torch.zeros if atomic or L == 0 else torch.empty)((n, n), dtype=torch.int32, device=dev)
    comp = torch.empty((n,), dtype=torch.float32, device=dev)
    omc = torch.empty((n,), dtype=torch.float32, device=dev)
    areas_arg = given if given is not None else comp  # unused pointer when the areas are counted
    n_col = triton.cdiv(n, _EPI_BLOCK_J)
    with device_ctx(masks):
        if L > 0:
            launch(
                _inter_kernel,
                (n_tiles, splits),
                m,
                inter,
                n,
                L,
                nb,
                k_per_split,
                ATOMIC=atomic,
                FP16_MMA=fp16_mma,
                BLOCK=_BLOCK,
                BLOCK_K=_BLOCK_K,
                num_warps=_NUM_WARPS,
                num_stages=_NUM_STAGES,
            )
        launch(
            _comp_kernel,
            (n_col,),
            inter,
            lab,
            areas_arg,
            comp,
            omc,
            n,
            GIVEN=given is not None,
            BLOCK_I=_EPI_BLOCK_I,
            BLOCK_J=_EPI_BLOCK_J,
            num_warps=4,
        )
        launch(
            _decay_kernel,
            (n_col,),
            inter,
            lab,
            areas_arg,
            comp,
            omc,
            s,
            out,
            n,
            float(sigma),
            LINEAR=kernel == 1,
            GIVEN=given is not None,
            BLOCK_I=_EPI_BLOCK_I,
            BLOCK_J=_EPI_BLOCK_J,
            num_warps=4,
        )
    return out
