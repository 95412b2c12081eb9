"""solo.ops.assign_grid_targets: every backend against the reference loop (exact equality), the reference against an
exact rational-arithmetic oracle of SOLO_SPEC.md §7, edge cases, errors, opcheck and torch.compile."""

import math
from fractions import Fraction

import pytest
import torch
import torch.nn.functional as F

import solo.ops
from solo.ops import reference
from solo.ops.assign_grid_targets import GridTargets, mask_moments
from tests.conftest import all_backend_params, backend_params, set_cpu_isa

SOLO_GRIDS = (40, 36, 24, 16, 12)
SOLO_RANGES = ((1, 96), (48, 192), (96, 384), (192, 768), (384, 2048))
# A small configuration for small canvases: overlapping ranges so instances land on one or two levels.
SMALL_GRIDS = (12, 8, 5)
SMALL_RANGES = ((1, 24), (12, 48), (24, 160))


# --- inputs -------------------------------------------------------------------------------------------------------


def blob_masks(n, h, w, gen):
    """[n, h, w] bool masks like resized COCO instances: ragged ellipses and rectangles, plus 1-pixel masks, empty
    masks and masks cut by the canvas edge (their centres lie near or outside it)."""
    if n == 0:
        return torch.zeros(0, h, w, dtype=torch.bool)
    cy = torch.rand(n, 1, 1, generator=gen) * (h + 20) - 10
    cx = torch.rand(n, 1, 1, generator=gen) * (w + 20) - 10
    ry = (0.02 + 0.3 * torch.rand(n, 1, 1, generator=gen) ** 2) * h
    rx = (0.02 + 0.3 * torch.rand(n, 1, 1, generator=gen) ** 2) * w
    yy = torch.arange(h, dtype=torch.float32).view(1, h, 1)
    xx = torch.arange(w, dtype=torch.float32).view(1, 1, w)
    noise = F.interpolate(torch.randn(n, 1, h // 16 + 2, w // 16 + 2, generator=gen), size=(h, w), mode="bilinear")
    ellipse = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 + 0.3 * noise.squeeze(1) <= 1
    rect = ((yy - cy).abs() <= ry) & ((xx - cx).abs() <= rx)
    kind = torch.randint(0, 10, (n,), generator=gen)
    masks = torch.where((kind < 5).view(n, 1, 1), ellipse, rect)
    for i in range(n):
        if kind[i] == 8:  # one pixel, sometimes in a corner
            masks[i] = False
            y = int(torch.randint(0, h, (1,), generator=gen)) if i % 3 else (h - 1) * (i % 2)
            x = int(torch.randint(0, w, (1,), generator=gen)) if i % 3 else (w - 1) * (i % 2)
            masks[i, y, x] = True
        elif kind[i] == 9 and i % 2:
            masks[i] = False  # empty
    return masks


def boxes_of(masks):
    """Bounding boxes x1, y1, x2 = x1 + w, y2 = y1 + h (modern convention) of the masks; 0 for empty masks."""
    n = masks.shape[0]
    boxes = torch.zeros(n, 4, dtype=torch.float32)
    for i in range(n):
        ys = torch.nonzero(masks[i].any(1)).flatten()
        xs = torch.nonzero(masks[i].any(0)).flatten()
        if len(ys):
            boxes[i] = torch.tensor([xs[0], ys[0], xs[-1] + 1, ys[-1] + 1], dtype=torch.float32)
    return boxes


def make_batch(images, per_image, h, w, gen, ranges=SMALL_RANGES, num_classes=80, shuffle=True):
    """A batch: `per_image` instances for each of `images` images (an int or a list), blob masks with their
    boxes, some boxes replaced by crafted ones whose scale is exactly a range bound (or just beyond it), some
    nested / overlapping copies, instances of the images interleaved (annotation order across images)."""
    counts = [per_image] * images if isinstance(per_image, int) else list(per_image)
    m = sum(counts)
    masks = blob_masks(m, h, w, gen)
    boxes = boxes_of(masks).double()
    image_ids = torch.repeat_interleave(torch.arange(len(counts)), torch.tensor(counts, dtype=torch.int64))
    bounds = sorted({float(b) for r in ranges for b in r})
    for i in range(m):
        r = int(torch.randint(0, 8, (1,), generator=gen))
        if r == 0 and i > 0 and image_ids[i - 1] == image_ids[i]:
            # nested in the previous instance: a shrunk copy of its mask, same image
            masks[i] = masks[i - 1] & (torch.rand(h, w, generator=gen) < 0.7)
            boxes[i] = boxes_of(masks[i : i + 1])[0].double()
        elif r == 1:
            # scale exactly a range bound: a b x b box at integer coordinates (exact in float32), or one whose
            # height is the next float32 above b (just outside an upper bound, just inside a lower one)
            b = bounds[int(torch.randint(0, len(bounds), (1,), generator=gen))]
            x0, y0 = int(torch.randint(0, w, (1,), generator=gen)), int(torch.randint(0, h, (1,), generator=gen))
            y1 = float(y0 + b)
            if int(torch.randint(0, 3, (1,), generator=gen)) == 0:
                y1 = float(torch.nextafter(torch.tensor(y1, dtype=torch.float32), torch.tensor(math.inf)))
            boxes[i] = torch.tensor([x0, y0, x0 + b, y1], dtype=torch.float64)
        elif r == 2:
            boxes[i] += torch.rand(4, generator=gen, dtype=torch.float64) - 0.5  # fractional coordinates
    if shuffle and m:
        perm = torch.randperm(m, generator=gen)
        masks, boxes, image_ids = masks[perm], boxes[perm], image_ids[perm]
    labels = torch.randint(0, num_classes, (m,), generator=gen)
    return {"masks": masks, "boxes": boxes.float(), "labels": labels, "image_ids": image_ids, "batch_size": len(counts)}


def to(batch, device):
    return {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}


def run(backend, batch, device="cpu", **cfg):
    return solo.ops.assign_grid_targets(**to(batch, device), **cfg, backend=backend)


def assert_same(got, want):
    assert isinstance(got, GridTargets)
    for name, g, e in zip(GridTargets._fields, got, want):
        assert g.dtype == torch.int64, name
        assert g.shape == e.shape, f"{name}: shape {tuple(g.shape)}, want {tuple(e.shape)}"
        assert torch.equal(g.cpu(), e.cpu()), f"{name} differs at {torch.nonzero(g.cpu() != e.cpu())[:5].tolist()}"


def oracle(batch, **cfg):
    return reference.assign_grid_targets(**batch, **cfg)


# --- an exact oracle of SOLO_SPEC.md §7, for the reference itself -------------------------------------------------


def exact_targets(
    masks, boxes, labels, image_ids, batch_size, num_grids, scale_ranges, sigma=0.2, num_classes=80, mode="solo"
):
    """§7 in rational arithmetic (exact centres, scales compared as squares). Also returns `near`: whether some
    decision lies within 1e-9 of (but not on) a boundary, where float64 rounding may legitimately go either way."""
    h, w = masks.shape[1:]
    mom = reference.mask_moments(masks).tolist()
    cells = sum(s * s for s in num_grids)
    out = [[num_classes] * cells for _ in range(batch_size)]
    owner, pairs, near = {}, [], False
    sig = Fraction(sigma)

    def cell(v, extent, s):
        nonlocal near
        q = v * s / extent
        if q.denominator == 1:
            # Exactly on a border (a centre at a multiple of extent / S): the contract is float64 floor((c / W) * S)
            # of the once-rounded centre; region bounds never land exactly (sigma's binary value has 2^-55 in it).
            return math.floor(float(v) / extent * s)
        near |= abs(q - round(q)) < Fraction(1, 10**9)
        return math.floor(q)

    for i in range(masks.shape[0]):
        n, sx, sy = mom[i]
        if n == 0:
            continue
        x1, y1, x2, y2 = (Fraction(v) for v in boxes[i].double().tolist())
        area = (x2 - x1) * (y2 - y1)
        cx, cy = Fraction(sx, n), Fraction(sy, n)
        off = 0
        for s, (lo, hi) in zip(num_grids, scale_ranges):
            lo2, hi2 = Fraction(lo) ** 2, Fraction(hi) ** 2
            # an exact bound is decided exactly in float64 too (sqrt of a square is exact); a near miss is not
            near |= any(0 < abs(area - b2) <= b2 * Fraction(1, 10**9) for b2 in (lo2, hi2))
            if lo2 <= area <= hi2:
                hw, hh = (x2 - x1) * sig / 2, (y2 - y1) * sig / 2
                ic = min(max(cell(cy, h, s), 0), s - 1)
                jc = min(max(cell(cx, w, s), 0), s - 1)
                top, down = max(0, cell(cy - hh, h, s), ic - 1), min(s - 1, cell(cy + hh, h, s), ic + 1)
                left, right = max(0, cell(cx - hw, w, s), jc - 1), min(s - 1, cell(cx + hw, w, s), jc + 1)
                img = int(image_ids[i])
                for a in range(top, down + 1):
                    for b in range(left, right + 1):
                        c = img * cells + off + a * s + b
                        out[img][off + a * s + b] = int(labels[i])
                        owner[c] = i
                        pairs.append((c, i))
            off += s * s
    if mode == "solo":
        pairs = list(owner.items())
    pairs.sort()
    pos = torch.tensor(pairs, dtype=torch.int64).reshape(-1, 2)
    return (torch.tensor(out, dtype=torch.int64).reshape(batch_size, cells), pos[:, 0], pos[:, 1]), near


@pytest.mark.parametrize("mode", ["solo", "solov2"])
@pytest.mark.parametrize("config", ["small", "solo"])
def test_reference_against_exact_oracle(mode, config):
    """The reference loop follows §7: compared with exact arithmetic on random batches away from cell borders."""
    grids, ranges = (SMALL_GRIDS, SMALL_RANGES) if config == "small" else (SOLO_GRIDS, SOLO_RANGES)
    gen = torch.Generator().manual_seed(torch.initial_seed() % 2**31)
    compared = 0
    for trial in range(6):
        batch = make_batch(3, [5, 0, 9], 96, 128, gen, ranges=ranges)
        want, near = exact_targets(**batch, num_grids=grids, scale_ranges=ranges, mode=mode)
        if near:
            continue
        compared += 1
        got = solo.ops.assign_grid_targets(
            **batch, num_grids=grids, scale_ranges=ranges, mode=mode, backend="reference"
        )
        assert_same(got, want)
    assert compared >= 2, "too many random batches had a decision on a cell border"


# --- parity -------------------------------------------------------------------------------------------------------


def fused_backend_params(triton=True):
    """Every backend but the reference (the oracle of the parity tests)."""
    return [p for p in all_backend_params(triton=triton) if p.id.split("-")[0] != "reference"]


@pytest.mark.parametrize("backend,device", fused_backend_params())
@pytest.mark.parametrize("mode", ["solo", "solov2"])
def test_parity_random_small_canvas(backend, device, mode):
    """Random batches of 1-16 images with 0-50 instances each on a 96 x 128 canvas, both grid configurations
    (the interpreted Triton kernels get fewer, smaller batches)."""
    gen = torch.Generator().manual_seed(torch.initial_seed() % 2**31)
    interpreted = backend == "triton" and device == "cpu"
    for trial in range(2 if interpreted else 6):
        images = int(torch.randint(1, 4 if interpreted else 17, (1,), generator=gen))
        counts = torch.randint(0, 9 if interpreted else 51, (images,), generator=gen).tolist()
        grids, ranges = (SMALL_GRIDS, SMALL_RANGES) if trial % 2 else (SOLO_GRIDS, SOLO_RANGES)
        batch = make_batch(images, counts, 96, 128, gen, ranges=ranges)
        cfg = {"num_grids": grids, "scale_ranges": ranges, "mode": mode}
        assert_same(run(backend, batch, device, **cfg), oracle(batch, **cfg))


@pytest.mark.parametrize("backend,device", fused_backend_params(triton=False))
@pytest.mark.parametrize("mode", ["solo", "solov2"])
@pytest.mark.parametrize("hw,counts", [((800, 1216), [7, 0, 5]), ((512, 640), [12, 9])])
def test_parity_solo_canvas(backend, device, mode, hw, counts):
    """SOLO's padded canvases with the standard grids and scale ranges."""
    gen = torch.Generator().manual_seed(torch.initial_seed() % 2**31)
    batch = make_batch(len(counts), counts, *hw, gen, ranges=SOLO_RANGES)
    cfg = {"mode": mode}
    assert_same(run(backend, batch, device, **cfg), oracle(batch, **cfg))


@pytest.mark.parametrize("backend,device", all_backend_params())
@pytest.mark.parametrize("mode", ["solo", "solov2"])
def test_range_borders_and_overlaps(backend, device, mode):
    """Scales exactly on a range bound are on both levels (inclusive); the next double above an upper bound is not.
    Overlapping instances: the later one wins the label (and the SOLO positive); SOLOv2 keeps both pairs."""
    h, w = 96, 128
    masks = torch.zeros(6, h, w, dtype=torch.bool)
    masks[0, 40:52, 60:72] = True  # 12 x 12: scale 12 = upper of nothing, lower of level 1
    masks[1, 40:64, 60:84] = True  # 24 x 24: upper of level 0, inside level 1, lower of level 2
    masks[2, 48:54, 68:74] = True  # nested in 1, later: wins the cell they share on level 0
    masks[3, 10:34, 10:34] = True  # 24 x (24 + ulp): just above level 0's upper bound
    masks[4, 0, 0] = True  # one pixel in the corner
    masks[5, h - 1, w - 1] = True  # one pixel in the opposite corner, other image
    boxes = boxes_of(masks).double()
    boxes[3, 3] = math.nextafter(float(boxes[3, 3]), math.inf)  # height 24 + ulp: scale just above 24
    batch = {
        "masks": masks,
        "boxes": boxes,
        "labels": torch.tensor([3, 5, 7, 9, 11, 13]),
        "image_ids": torch.tensor([0, 0, 0, 0, 0, 1]),
        "batch_size": 2,
    }
    cfg = {"num_grids": SMALL_GRIDS, "scale_ranges": SMALL_RANGES, "mode": mode}
    got = run(backend, batch, device, **cfg)
    assert_same(got, oracle(batch, **cfg))
    offsets = [0, 144, 144 + 64]
    pc, pi = got.pos_cells.cpu(), got.pos_instances.cpu()

    def levels_of(i):
        cells = pc[pi == i] % 233
        return sorted({sum(int(c) >= o for o in offsets) - 1 for c in cells})

    if mode == "solov2":
        assert levels_of(0) == [0, 1] and levels_of(1) == [0, 1, 2] and levels_of(3) == [1, 2]
        assert levels_of(4) == [0] and levels_of(5) == [0]
        shared = set(pc[pi == 1].tolist()) & set(pc[pi == 2].tolist())
        assert shared, "instances 1 and 2 share cells"
        for c in shared:  # one pair per instance, instance order
            assert pi[pc == c].tolist() == sorted(pi[pc == c].tolist())
    labels = got.labels.cpu().flatten()
    for c in set(pc[pi == 2].tolist()):
        assert labels[c] == 7  # the later instance's label
    assert labels[0] == 11 and labels[233 + 143] == 13  # the corner pixels: first and last cell of level 0
    assert (pc.diff() >= 0).all()


@pytest.mark.parametrize("backend,device", all_backend_params())
def test_empty_cases(backend, device):
    """M = 0, images without instances, empty masks and scales outside every range: all background, no positives."""
    h, w = 32, 48
    cfg = {"num_grids": SMALL_GRIDS, "scale_ranges": SMALL_RANGES}
    empty = {
        "masks": torch.zeros(0, h, w, dtype=torch.bool),
        "boxes": torch.zeros(0, 4),
        "labels": torch.zeros(0, dtype=torch.int64),
        "image_ids": torch.zeros(0, dtype=torch.int64),
    }
    for batch_size in (0, 1, 3):
        got = run(backend, {**empty, "batch_size": batch_size}, device, **cfg)
        assert got.labels.shape == (batch_size, 233) and (got.labels == 80).all() and got.pos_cells.numel() == 0
        assert got.pos_instances.shape == (0,)
    masks = torch.zeros(3, h, w, dtype=torch.uint8)
    masks[1, 5:9, 5:9] = 1
    masks[2, 1:30, 1:40] = 1
    boxes = torch.tensor(
        [[0, 0, 10, 10], [5, 5, 5.5, 5.5], [1, 1, 400, 400]], dtype=torch.float32
    )  # scales 10, 0.5, 399
    batch = {
        "masks": masks,
        "boxes": boxes,
        "labels": torch.tensor([1, 2, 3]),
        "image_ids": torch.tensor([0, 1, 0]),
        "batch_size": 2,
    }
    for mode in ("solo", "solov2"):
        got = run(backend, batch, device, mode=mode, **cfg)
        assert (got.labels == 80).all() and got.pos_cells.numel() == 0
        assert_same(got, oracle(batch, mode=mode, **cfg))


@pytest.mark.parametrize("backend,device", all_backend_params())
def test_input_variants(backend, device):
    """uint8 masks with any nonzero value, non-contiguous masks and ids, float16/float64 boxes, a different
    num_classes and sigma: the same targets as the plain inputs."""
    gen = torch.Generator().manual_seed(torch.initial_seed() % 2**31)
    batch = make_batch(3, [6, 4, 8], 48, 72, gen, num_classes=5)
    cfg = {"num_grids": SMALL_GRIDS, "scale_ranges": SMALL_RANGES, "num_classes": 5, "sigma": 0.35}
    want = oracle(batch, **cfg)
    values = torch.randint(1, 256, batch["masks"].shape, generator=gen, dtype=torch.int64).to(torch.uint8)
    variant = dict(batch)
    variant["masks"] = (batch["masks"].to(torch.uint8) * values).transpose(1, 2).contiguous().transpose(1, 2)
    variant["image_ids"] = torch.stack([batch["image_ids"], batch["image_ids"]], 1)[:, 1]
    assert not variant["masks"].is_contiguous() and not variant["image_ids"].is_contiguous()
    assert_same(run(backend, variant, device, **cfg), want)
    for dtype in (torch.float64, torch.float16):
        boxes = batch["boxes"].to(dtype)
        ref = oracle({**batch, "boxes": boxes}, **cfg)
        assert_same(run(backend, {**batch, "boxes": boxes}, device, **cfg), ref)


@pytest.mark.parametrize("backend,device", all_backend_params())
@pytest.mark.parametrize("h,w", [(1, 1), (5, 31), (7, 32), (9, 33), (33, 36), (20, 37), (64, 128), (3, 1216)])
def test_mask_moments(backend, device, h, w):
    """(sum m, sum x m, sum y m) against a direct int64 computation, for row lengths around the vector widths."""
    gen = torch.Generator().manual_seed(torch.initial_seed() % 2**31)
    masks = torch.randint(0, 256, (5, h, w), generator=gen, dtype=torch.int64).to(torch.uint8)
    masks[masks < 140] = 0
    masks[1] = 0
    nz = (masks != 0).to(torch.int64)
    xs, ys = torch.arange(w).view(1, 1, w), torch.arange(h).view(1, h, 1)
    want = torch.stack([nz.sum((1, 2)), (nz * xs).sum((1, 2)), (nz * ys).sum((1, 2))], 1)
    for m in (masks, masks != 0, masks.transpose(1, 2).contiguous().transpose(1, 2)):
        got = mask_moments(m.to(device), backend=backend)
        assert got.dtype == torch.int64 and torch.equal(got.cpu(), want)
    assert mask_moments(torch.zeros(0, h, w, dtype=torch.bool, device=device), backend=backend).shape == (0, 3)
    assert torch.equal(
        mask_moments(torch.ones(2, 0, w, dtype=torch.bool, device=device), backend=backend).cpu(),
        torch.zeros(2, 3, dtype=torch.int64),
    )


@pytest.mark.needs_ext
@pytest.mark.parametrize("isa", ["baseline", "auto"])
def test_cpu_instruction_set_variants(monkeypatch, isa):
    """The CPU mass pass has a baseline and an AVX2 loop (csrc/cpu/isa.h); both must be exact, including rows wider
    than the baseline's 32-bit fast path."""
    set_cpu_isa(monkeypatch, isa)
    gen = torch.Generator().manual_seed(torch.initial_seed() % 2**31)
    for h, w in ((3, 31), (17, 65), (2, 1217), (2, 70001)):
        masks = (torch.rand(3, h, w, generator=gen) < 0.5).to(torch.uint8) * 200
        assert torch.equal(mask_moments(masks, backend="cpu"), reference.mask_moments(masks))
    batch = make_batch(2, [9, 7], 64, 96, gen)
    cfg = {"num_grids": SMALL_GRIDS, "scale_ranges": SMALL_RANGES, "mode": "solov2"}
    assert_same(run("cpu", batch, **cfg), oracle(batch, **cfg))


@pytest.mark.parametrize("backend,device", backend_params("cpu"))
def test_triton_wide_accumulators(backend, device, monkeypatch):
    """The Triton mass kernel's int64-lane variant (for very wide masks) gives the same sums."""
    if backend != "triton":
        pytest.skip("triton only")
    from solo.ops import _triton_assign_grid_targets as tg

    monkeypatch.setattr(tg, "_INT32_LANE_LIMIT", 1)
    masks = torch.rand(3, 21, 37) < 0.4
    assert torch.equal(mask_moments(masks, backend="triton"), reference.mask_moments(masks))


# --- errors -------------------------------------------------------------------------------------------------------


def _good():
    masks = torch.zeros(2, 16, 16, dtype=torch.bool)
    masks[:, 4:8, 4:8] = True
    return {
        "masks": masks,
        "boxes": torch.tensor([[4.0, 4, 8, 8], [4, 4, 8, 8]]),
        "labels": torch.tensor([1, 2]),
        "image_ids": torch.tensor([0, 1]),
        "batch_size": 2,
    }


@pytest.mark.parametrize("backend,device", all_backend_params())
@pytest.mark.parametrize(
    "change,name",
    [
        ({"masks": "not a tensor"}, "masks"),
        ({"masks": torch.zeros(16, 16, dtype=torch.bool)}, "masks"),
        ({"masks": torch.zeros(2, 16, 16)}, "masks"),
        ({"boxes": torch.zeros(2, 5)}, "boxes"),
        ({"boxes": torch.zeros(3, 4)}, "boxes"),
        ({"boxes": torch.zeros(2, 4, dtype=torch.int64)}, "boxes"),
        ({"labels": torch.tensor([1, 2], dtype=torch.int32)}, "labels"),
        ({"labels": torch.tensor([1])}, "labels"),
        ({"labels": torch.tensor([1, 80])}, "labels: value"),
        ({"labels": torch.tensor([-1, 0])}, "labels: value"),
        ({"image_ids": torch.tensor([0.0, 1.0])}, "image_ids"),
        ({"image_ids": torch.tensor([[0, 1]])}, "image_ids"),
        ({"image_ids": torch.tensor([0, 2])}, "image_ids: value"),
        ({"image_ids": torch.tensor([-1, 0])}, "image_ids: value"),
        ({"batch_size": -1}, "batch_size"),
        ({"batch_size": 2.0}, "batch_size"),
        ({"batch_size": True}, "batch_size"),
        ({"num_grids": ()}, "num_grids"),
        ({"num_grids": (40, 36, 24, 16, 0)}, "num_grids"),
        ({"num_grids": (40, 36.5, 24, 16, 12)}, "num_grids"),
        ({"num_grids": (4,) * 17, "scale_ranges": ((1, 2),) * 17}, "num_grids"),
        ({"num_grids": 12}, "num_grids"),
        ({"scale_ranges": SOLO_RANGES[:4]}, "scale_ranges"),
        ({"scale_ranges": SOLO_RANGES[:4] + ((1, 2, 3),)}, "scale_ranges"),
        ({"scale_ranges": SOLO_RANGES[:4] + ((9, 3),)}, "scale_ranges"),
        ({"scale_ranges": SOLO_RANGES[:4] + ((-1, 3),)}, "scale_ranges"),
        ({"scale_ranges": SOLO_RANGES[:4] + ((float("nan"), 3),)}, "scale_ranges"),
        ({"scale_ranges": SOLO_RANGES[:4] + (("a", 3),)}, "scale_ranges"),
        ({"sigma": 0.0}, "sigma"),
        ({"sigma": -0.2}, "sigma"),
        ({"sigma": float("nan")}, "sigma"),
        ({"sigma": None}, "sigma"),
        ({"num_classes": 0}, "num_classes"),
        ({"mode": "solo3"}, "mode"),
        ({"backend": "gpu"}, "backend"),
        ({"masks": torch.zeros(2, 16, 16, dtype=torch.bool, device="meta")}, "on meta"),
    ],
)
def test_bad_arguments(backend, device, change, name):
    args = {**to(_good(), device), "backend": backend}
    if name.endswith(": value"):
        if device != "cpu":
            pytest.skip("value checks run on the GPU only with SOLO_CHECK_VALUES=1 (tested separately)")
        name = name.split(":")[0]
    args.update({k: v.to(device) if torch.is_tensor(v) and v.device.type != "meta" else v for k, v in change.items()})
    with pytest.raises(ValueError, match=name):
        solo.ops.assign_grid_targets(**args)


@pytest.mark.needs_cuda
def test_cuda_value_checks(monkeypatch):
    """On the GPU, labels and image ids are checked only with SOLO_CHECK_VALUES=1 (a sync); without it an
    out-of-range image id is ignored."""
    batch = to({**_good(), "image_ids": torch.tensor([0, 5])}, "cuda")
    monkeypatch.setenv("SOLO_CHECK_VALUES", "1")
    with pytest.raises(ValueError, match="image_ids"):
        solo.ops.assign_grid_targets(**batch, num_grids=SMALL_GRIDS, scale_ranges=SMALL_RANGES)
    monkeypatch.delenv("SOLO_CHECK_VALUES")
    got = solo.ops.assign_grid_targets(**batch, num_grids=SMALL_GRIDS, scale_ranges=SMALL_RANGES)
    assert set(got.pos_instances.tolist()) == {0}


def test_ops_check_their_arguments():
    """Direct calls of the registered ops reject bad arguments with an error naming them."""
    from solo.ops import _registry

    for ns in _registry.namespaces():
        ops = getattr(torch.ops, ns)
        with pytest.raises(RuntimeError, match="masks"):
            ops.assign_grid_targets_mass(torch.zeros(2, 3))
        mass = torch.zeros(1, 3, dtype=torch.int64)
        args = [
            mass,
            torch.zeros(1, 4),
            torch.zeros(1, dtype=torch.int64),
            torch.zeros(1, dtype=torch.int64),
            1,
            8,
            8,
            [4],
            [1.0, 9.0],
            0.2,
            80,
            0,
        ]
        ops.assign_grid_targets_cells(*args)
        bad_values = (
            (4, -1, "batch_size"),
            (7, [0], "num_grids"),
            (7, [4] * 17, "num_grids"),
            (8, [1.0], "scale_ranges"),
            (8, [9.0, 1.0], "scale_ranges"),
            (9, 0.0, "sigma"),
            (10, 0, "num_classes"),
            (11, 2, "mode"),
        )
        for k, v, name in bad_values:
            bad = list(args)
            bad[k] = v
            with pytest.raises(RuntimeError, match=name):
                ops.assign_grid_targets_cells(*bad)


# --- opcheck and torch.compile ------------------------------------------------------------------------------------


def _namespaces():
    from solo.ops import _registry

    return [pytest.param(ns, id=ns) for ns in _registry.namespaces()] or [
        pytest.param("solo", marks=pytest.mark.skip(reason="no compiled or triton ops here"))
    ]


@pytest.mark.parametrize("ns", _namespaces())
@pytest.mark.parametrize("mode", [0, 1])
def test_opcheck(ns, mode):
    ops = getattr(torch.ops, ns)
    gen = torch.Generator().manual_seed(torch.initial_seed() % 2**31)
    batch = make_batch(2, [5, 4], 24, 40, gen)
    torch.library.opcheck(ops.assign_grid_targets_mass.default, (batch["masks"],))
    mass = ops.assign_grid_targets_mass(batch["masks"])
    flat = [float(v) for r in SMALL_RANGES for v in r]
    args = (
        mass,
        batch["boxes"],
        batch["labels"],
        batch["image_ids"],
        2,
        24,
        40,
        list(SMALL_GRIDS),
        flat,
        0.2,
        80,
        mode,
    )
    torch.library.opcheck(ops.assign_grid_targets_cells.default, args)


@pytest.mark.parametrize("backend,device", fused_backend_params())
@pytest.mark.parametrize("mode", ["solo", "solov2"])
def test_torch_compile_fullgraph(backend, device, mode):
    """The fused op traces into one graph: P is an unbacked size from the fake kernel, and the value checks that
    would need a sync are skipped while compiling (the CPU kernel checks values itself)."""
    gen = torch.Generator().manual_seed(torch.initial_seed() % 2**31)
    batch = to(make_batch(2, [6, 5], 32, 48, gen), device)

    def targets(masks, boxes, labels, image_ids):
        t = solo.ops.assign_grid_targets(
            masks, boxes, labels, image_ids, 2, SMALL_GRIDS, SMALL_RANGES, mode=mode, backend=backend
        )
        # use the data-dependent outputs inside the graph
        return t.labels.clone(), t.pos_cells + 0, t.pos_instances * 1, t.labels.flatten()[t.pos_cells]

    torch._dynamo.reset()
    compiled = torch.compile(targets, fullgraph=True, backend="aot_eager")
    args = (batch["masks"], batch["boxes"], batch["labels"], batch["image_ids"])
    for got, want in zip(compiled(*args), targets(*args)):
        assert torch.equal(got, want)
