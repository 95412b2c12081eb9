"""solo.ops.paste_masks: every backend against the float64 reference, edge cases, bad arguments, opcheck, compile.

The oracle is the reference's two interpolations run on ``probs.double()`` (for fp16/bf16 probs: on the same rounded
values). The contract (issue 3): only pixels whose float64 value lies within 1e-5 of the threshold may differ.
"""

import math

import pytest
import torch
import torch.nn.functional as F

import solo.ops
from tests.conftest import all_backend_params

BAND = 1e-5


def blob_probs(n, h, w, dtype=torch.float32, device="cpu"):
    """Mask probabilities like SOLO's mask branch gives them: smooth elliptic blobs with sharp-ish edges (sigmoid of
    a scaled signed radius, random sharpness) plus per-pixel noise. Every 7th mask is empty (all low), every 11th
    full (all high), every 13th a single hot pixel."""
    yy = torch.arange(h, dtype=torch.float64).view(h, 1) + 0.5
    xx = torch.arange(w, dtype=torch.float64).view(1, w) + 0.5
    out = torch.empty(n, h, w, dtype=torch.float64)
    for i in range(n):
        if i % 7 == 6:
            logits = torch.full((h, w), -4.0, dtype=torch.float64)
        elif i % 11 == 10:
            logits = torch.full((h, w), 4.0, dtype=torch.float64)
        elif i % 13 == 12:
            logits = torch.full((h, w), -4.0, dtype=torch.float64)
            logits[torch.randint(h, ()), torch.randint(w, ())] = 5.0
        else:
            cy, cx = (torch.rand(2, dtype=torch.float64) * torch.tensor([h, w])).tolist()
            ry = 1.5 + float(torch.rand(())) * h / 2.5
            rx = 1.5 + float(torch.rand(())) * w / 2.5
            sharp = 2.0 + 10.0 * float(torch.rand(()))
            r = (((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2).sqrt()
            logits = sharp * (1.0 - r)
        out[i] = torch.sigmoid(logits + 0.3 * torch.randn(h, w, dtype=torch.float64))
    return out.to(dtype).to(device)


def values64(probs, canvas, valid, out):
    """The reference's pre-threshold values, in float64 on the CPU."""
    x = probs.detach().cpu().double().unsqueeze(1)
    x = F.interpolate(x, size=tuple(canvas), mode="bilinear", align_corners=False)
    x = x[:, :, : valid[0], : valid[1]]
    return F.interpolate(x, size=tuple(out), mode="bilinear", align_corners=False)[:, 0]


def check(got, probs, canvas, valid, out, threshold=0.5):
    n = probs.shape[0]
    assert got.dtype == torch.bool
    assert got.shape == (n, *out)
    assert got.device == probs.device
    v = values64(probs, canvas, valid, out)
    expected = v > threshold
    differ = got.cpu() != expected
    near = (v - threshold).abs() <= BAND
    outside = differ & ~near
    if outside.any():
        dist = float((v[outside] - threshold).abs().max())
        raise AssertionError(f"{int(outside.sum())} pixels differ outside the {BAND} band (up to {dist:.3g} away)")
    # In-band pixels are rare on these inputs; many differences would mean a systematic error hiding in the band.
    assert int(differ.sum()) <= max(4, v.numel() // 1000), f"{int(differ.sum())} in-band differences"
    return expected


def run(backend, probs, canvas, valid, out, threshold=0.5):
    return solo.ops.paste_masks(probs, canvas, valid, out, threshold, backend=backend)


# (n, h, w, canvas, valid, out): SOLO's shapes scaled down and the corner cases of both resizes.
SHAPES = {
    "solo-down": (7, 25, 38, (100, 152), (100, 150), (67, 100)),  # 200x304 -> 800x1216 -> 427x640, / 8
    "solo-up": (7, 25, 38, (100, 152), (98, 150), (125, 167)),  # second stage upscaling
    "canvas-not-4x": (3, 17, 23, (61, 90), (55, 83), (40, 97)),
    "odd": (1, 13, 11, (29, 31), (27, 30), (53, 71)),
    "valid-eq-canvas": (2, 20, 30, (80, 120), (80, 120), (50, 70)),
    "out-1x1": (7, 9, 7, (36, 28), (30, 25), (1, 1)),
    "out-eq-valid": (2, 10, 12, (40, 48), (37, 45), (37, 45)),  # stage 2 is a copy
    "canvas-eq-probs": (2, 16, 20, (16, 20), (12, 18), (30, 41)),  # stage 1 is a copy
    "one-row": (2, 1, 9, (4, 36), (4, 30), (5, 40)),
    "one-col": (2, 9, 1, (36, 4), (30, 3), (40, 2)),
    "all-1": (1, 1, 1, (1, 1), (1, 1), (1, 1)),
    "downscale-both": (2, 60, 90, (30, 40), (30, 40), (15, 13)),  # Triton: the direct (non-separable) path
    "wide": (1, 6, 80, (24, 320), (24, 317), (9, 700)),  # several column tiles
}


@pytest.mark.parametrize("backend,device", all_backend_params())
@pytest.mark.parametrize("shape", list(SHAPES), ids=list(SHAPES))
def test_parity_shapes(backend, device, shape):
    n, h, w, canvas, valid, out = SHAPES[shape]
    probs = blob_probs(n, h, w, device=device)
    check(run(backend, probs, canvas, valid, out), probs, canvas, valid, out)


@pytest.mark.parametrize("backend,device", all_backend_params())
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_parity_dtypes(backend, device, dtype):
    n, h, w, canvas, valid, out = SHAPES["solo-down"]
    probs = blob_probs(n, h, w, dtype=dtype, device=device)  # the oracle runs on these (rounded) values
    expected = check(run(backend, probs, canvas, valid, out), probs, canvas, valid, out)
    assert expected.any() and not expected.all()


@pytest.mark.parametrize("backend,device", all_backend_params())
def test_float64_is_exact(backend, device):
    """float64 probs compute in float64: no difference beyond rounding noise (1e-12 of the threshold)."""
    n, h, w, canvas, valid, out = SHAPES["canvas-not-4x"]
    probs = blob_probs(n, h, w, dtype=torch.float64, device=device)
    got = run(backend, probs, canvas, valid, out).cpu()
    v = values64(probs, canvas, valid, out)
    assert not ((got != (v > 0.5)) & ((v - 0.5).abs() > 1e-12)).any()


@pytest.mark.parametrize("backend,device", all_backend_params())
def test_thresholds(backend, device):
    n, h, w, canvas, valid, out = SHAPES["canvas-not-4x"]
    probs = blob_probs(n, h, w, device=device)
    for threshold in (0.05, 0.3, 0.7, 0.95, 0.1 + 1e-9):
        check(run(backend, probs, canvas, valid, out, threshold), probs, canvas, valid, out, threshold)
    # Probabilities lie in (0, 1): a threshold below / above everything gives all True / all False.
    assert run(backend, probs, canvas, valid, out, -0.25).all()
    assert not run(backend, probs, canvas, valid, out, 1.5).any()
    # Integer thresholds are numbers too; thresholds beyond the float range compare as +-inf in float32.
    assert not run(backend, probs, canvas, valid, out, 1).any()
    assert not run(backend, probs, canvas, valid, out, 1e300).any()
    assert run(backend, probs, canvas, valid, out, -1e300).all()


@pytest.mark.parametrize("backend,device", all_backend_params())
def test_special_masks(backend, device):
    """Constant masks and a single hot pixel: the kernels' all-below-threshold skipping must not drop the pixel."""
    h, w, canvas, valid, out = 11, 14, (44, 56), (41, 53), (83, 97)
    probs = torch.full((5, h, w), 0.01, device=device)
    probs[1] = 0.99
    probs[2, 5, 7] = 0.99  # one hot pixel
    probs[3, 0, 0] = 0.99  # in the corner
    probs[4, h - 1, w - 2 :] = 0.99  # on the edge the crop cuts: only partly visible
    got = run(backend, probs, canvas, valid, out)
    expected = check(got, probs, canvas, valid, out)
    assert not expected[0].any() and expected[1].all()
    for i in (2, 3, 4):
        assert expected[i].any() and not expected[i].all()


@pytest.mark.parametrize("backend,device", all_backend_params())
def test_non_contiguous(backend, device):
    n, h, w, canvas, valid, out = SHAPES["canvas-not-4x"]
    base = blob_probs(n, w, h, device=device)
    transposed = base.transpose(1, 2)  # [n, h, w] view with swapped strides
    strided = blob_probs(2 * n, 2 * h, w + 3, device=device)[::2, ::2, 1:-2]  # offset and strides
    for probs in (transposed, strided):
        assert not probs.is_contiguous() and probs.shape == (n, h, w)
        check(run(backend, probs, canvas, valid, out), probs, canvas, valid, out)


@pytest.mark.parametrize("backend,device", all_backend_params())
def test_empty(backend, device):
    for dtype in (torch.float32, torch.float16):
        got = run(backend, torch.empty(0, 25, 38, dtype=dtype, device=device), (100, 152), (100, 150), (67, 100))
        assert got.shape == (0, 67, 100) and got.dtype == torch.bool and got.device.type == device


@pytest.mark.parametrize("backend,device", all_backend_params())
def test_deterministic(backend, device):
    n, h, w, canvas, valid, out = SHAPES["canvas-not-4x"]
    probs = blob_probs(n, h, w, device=device)
    assert torch.equal(run(backend, probs, canvas, valid, out), run(backend, probs, canvas, valid, out))


@pytest.mark.parametrize("backend,device", all_backend_params(triton=False))
@pytest.mark.parametrize("out", [(427, 640), (800, 1333)], ids=["427x640", "800x1333"])
def test_solo_sizes(backend, device, out):
    """SOLO's real shapes: 200x304 probs, canvas 800x1216, valid 800x1199 (a 1333x800 COCO image)."""
    probs = blob_probs(3, 200, 304, device=device)
    check(run(backend, probs, (800, 1216), (800, 1199), out), probs, (800, 1216), (800, 1199), out)


@pytest.mark.parametrize("backend,device", all_backend_params(triton=False))
def test_many_masks(backend, device):
    """More masks than threads and row blocks: the CPU work queue and the CUDA mask loop."""
    probs = blob_probs(37, 12, 16, device=device)
    check(run(backend, probs, (48, 64), (47, 60), (33, 44)), probs, (48, 64), (47, 60), (33, 44))


# --- registration: opcheck, torch.compile -----------------------------------------------------------------------


def _namespaces():
    from solo.ops import _registry

    return [pytest.param(ns, id=ns) for ns in _registry.namespaces()] or [
        pytest.param("solo", marks=pytest.mark.skip(reason="no compiled or triton ops here"))
    ]


@pytest.mark.parametrize("ns", _namespaces())
def test_opcheck(ns):
    op = getattr(torch.ops, ns).paste_masks.default
    for dtype in (torch.float32, torch.float64):
        probs = blob_probs(3, 9, 13, dtype=dtype)
        torch.library.opcheck(op, (probs, [36, 52], [35, 50], [20, 31], 0.5))
    torch.library.opcheck(op, (torch.empty(0, 9, 13), [36, 52], [35, 50], [20, 31], 0.5))


@pytest.mark.parametrize("ns", _namespaces())
def test_raw_op(ns):
    """The registered op itself (what the public wrapper calls): same results, its own argument checks."""
    op = getattr(torch.ops, ns).paste_masks
    probs = blob_probs(3, 9, 13)
    check(op(probs, [36, 52], [35, 50], [20, 31], 0.5), probs, (36, 52), (35, 50), (20, 31))
    assert op(torch.empty(0, 9, 13), [36, 52], [35, 50], [20, 31], 0.5).shape == (0, 20, 31)
    with pytest.raises(RuntimeError, match="valid_size"):
        op(probs, [36, 52], [37, 50], [20, 31], 0.5)
    with pytest.raises(RuntimeError, match="threshold"):
        op(probs, [36, 52], [35, 50], [20, 31], math.nan)
    with pytest.raises(RuntimeError, match="probs must be 3-D"):
        op(probs[0], [36, 52], [35, 50], [20, 31], 0.5)
    with pytest.raises(RuntimeError, match="out_size"):
        op(probs, [36, 52], [35, 50], [0, 31], 0.5)
    with pytest.raises(RuntimeError, match="probs must be float"):
        op(probs.long(), [36, 52], [35, 50], [20, 31], 0.5)


@pytest.mark.parametrize("backend,device", [p for p in all_backend_params() if p.id.split("-")[0] != "reference"])
def test_torch_compile_fullgraph(backend, device):
    probs = blob_probs(4, 9, 13, device=device)

    def paste(p):
        return solo.ops.paste_masks(p, (36, 52), (35, 50), (20, 31), 0.4, backend=backend)

    torch._dynamo.reset()
    compiled = torch.compile(paste, fullgraph=True, backend="aot_eager")
    got = compiled(probs)
    assert torch.equal(got, paste(probs))
    check(got, probs, (36, 52), (35, 50), (20, 31), 0.4)


# --- bad arguments ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["reference", pytest.param("cpu", marks=pytest.mark.needs_ext)])
def test_bad_arguments_name_the_argument(backend):
    probs = torch.rand(2, 5, 6)
    good = {"canvas_size": (20, 24), "valid_size": (19, 22), "out_size": (30, 33), "threshold": 0.5}

    def call(p=probs, **kw):
        return solo.ops.paste_masks(p, **{**good, "backend": backend, **kw})

    call()  # the good arguments work
    with pytest.raises(ValueError, match="probs must be a torch.Tensor"):
        call(p=probs.numpy())
    with pytest.raises(ValueError, match="probs must be float16, bfloat16, float32 or float64"):
        call(p=(probs > 0.5).to(torch.uint8))
    with pytest.raises(ValueError, match="probs must be 3-D"):
        call(p=probs[0])
    with pytest.raises(ValueError, match="probs must be 3-D"):
        call(p=probs[None])
    for empty_hw in (torch.rand(2, 0, 6), torch.rand(2, 5, 0), torch.rand(0, 0, 6)):
        with pytest.raises(ValueError, match="probs must have h, w > 0"):
            call(p=empty_hw)
    for name in ("canvas_size", "valid_size", "out_size"):
        for bad in ((20,), (20, 24, 3), (0, 24), (20, -1), (20.0, 24), (True, 24), "20x24", None, 20, (20, None)):
            with pytest.raises(ValueError, match=f"{name} must be a pair of positive integers"):
                call(**{name: bad})
    with pytest.raises(ValueError, match="valid_size .* must fit inside canvas_size"):
        call(valid_size=(21, 22))
    with pytest.raises(ValueError, match="valid_size .* must fit inside canvas_size"):
        call(valid_size=(19, 25))
    for bad in (math.nan, math.inf, -math.inf, 10**400, "0.5", None, True, torch.tensor(0.5)):
        with pytest.raises(ValueError, match="threshold must be a finite number"):
            call(threshold=bad)
    with pytest.raises(ValueError, match="backend must be one of"):
        call(backend="gpu")


def test_sizes_accept_lists_and_torch_size():
    probs = blob_probs(2, 5, 6)
    a = solo.ops.paste_masks(probs, [20, 24], torch.Size([19, 22]), (30, 33), backend="reference")
    b = solo.ops.paste_masks(probs, (20, 24), (19, 22), (30, 33), backend="reference")
    assert torch.equal(a, b)


@pytest.mark.needs_cuda
def test_auto_backend_on_cuda():
    probs = blob_probs(3, 25, 38, device="cuda")
    check(solo.ops.paste_masks(probs, (100, 152), (100, 150), (67, 100)), probs, (100, 152), (100, 150), (67, 100))
