"""solo.ops.downsample_masks: every backend equals the reference exactly; the reference equals OpenCV; errors, opcheck,
compile."""

import pytest
import torch

import solo.ops
from solo.ops import reference
from tests.conftest import all_backend_params, backend_params

STRIDES = [1, 2, 3, 4, 5, 8, 16]


def blob_masks(m, h, w, dtype=torch.bool):
    """SOLO-like instance masks: filled ellipses and rectangles of random size and place, single pixels, empty and
    full masks, and noise of random density. uint8 masks get random nonzero values (not only 1) inside."""
    yy = torch.arange(h, dtype=torch.float64).view(h, 1)
    xx = torch.arange(w, dtype=torch.float64).view(1, w)
    masks = torch.zeros(m, h, w, dtype=torch.bool)
    kinds = torch.randperm(max(m, 1))[:m] % 7  # every kind appears once m >= 7, in a random order
    for i in range(m):
        kind = int(kinds[i])
        cy, cx = (torch.rand(2, dtype=torch.float64) * torch.tensor([h, w])).tolist()
        ry, rx = (0.5 + torch.rand(2, dtype=torch.float64) * torch.tensor([h, w]) / 2).tolist()
        if kind == 0:
            masks[i] = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
        elif kind == 1:
            masks[i] = ((yy - cy).abs() <= ry) & ((xx - cx).abs() <= rx)
        elif kind == 2:
            masks[i, int(cy), int(cx)] = True  # a single pixel
        elif kind == 3:
            pass  # empty
        elif kind == 4:
            masks[i] = True
        elif kind == 5:
            masks[i] = torch.rand(h, w) < float(torch.rand(()))  # noise of random density
        else:  # two overlapping ellipses
            masks[i] = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
            masks[i] |= ((yy - h + cy) / rx) ** 2 + ((xx - w + cx) / ry) ** 2 <= 1
    if dtype == torch.uint8:
        return masks.to(torch.uint8) * torch.randint(1, 256, (m, h, w), dtype=torch.uint8)
    return masks


def noise_masks(m, h, w, dtype=torch.bool, p=0.5):
    masks = torch.rand(m, h, w) < p
    if dtype == torch.uint8:
        return masks.to(torch.uint8) * torch.randint(1, 256, (m, h, w), dtype=torch.uint8)
    return masks


def check(backend, masks, stride):
    got = solo.ops.downsample_masks(masks, stride, backend=backend)
    m, h, w = masks.shape
    assert got.dtype == torch.uint8
    assert got.shape == (m, h // stride, w // stride)
    assert got.device == masks.device
    assert got.is_contiguous()
    exp = reference.downsample_masks(masks.cpu(), stride)
    assert torch.equal(got.cpu(), exp), f"{int((got.cpu() != exp).sum())} of {exp.numel()} pixels differ"
    return got


@pytest.mark.parametrize("backend,device", all_backend_params())
@pytest.mark.parametrize("dtype", [torch.bool, torch.uint8], ids=["bool", "uint8"])
@pytest.mark.parametrize("m", [0, 1, 3, 50])
@pytest.mark.parametrize("stride", STRIDES)
def test_parity_blobs(backend, device, dtype, m, stride):
    # Output 6 x 19 (or 5 x 37): small enough for the Triton interpreter; rows long enough for the CPU kernel's
    # 16-pixel vector steps and a tail.
    ho, wo = (6, 19) if m != 3 else (5, 37)
    masks = blob_masks(m, ho * stride, wo * stride, dtype).to(device)
    check(backend, masks, stride)


@pytest.mark.parametrize("backend,device", all_backend_params())
@pytest.mark.parametrize("dtype", [torch.bool, torch.uint8], ids=["bool", "uint8"])
@pytest.mark.parametrize("stride", STRIDES + [6, 7, 32])
def test_parity_noise(backend, device, dtype, stride):
    """Noise of three densities: every 2x2 vote count (0..4) occurs many times."""
    for p in (0.25, 0.5, 0.75):
        check(backend, noise_masks(4, 5 * stride, 37 * stride, dtype, p).to(device), stride)


@pytest.mark.parametrize("backend,device", all_backend_params(triton=False))
@pytest.mark.parametrize("stride", [2, 4, 8, 16])
def test_parity_solo_size(backend, device, stride):
    """SOLO's canvas 800 x 1216 at the target strides."""
    check(backend, blob_masks(14, 800, 1216, torch.uint8).to(device), stride)


@pytest.mark.parametrize("backend,device", all_backend_params())
@pytest.mark.parametrize("stride", [1, 2, 3, 4, 8])
def test_every_row_length(backend, device, stride):
    """Output widths 1..40 (vector bodies and scalar tails of every length) and one-pixel-high outputs."""
    for wo in range(1, 41):
        check(backend, noise_masks(2, stride, wo * stride).to(device), stride)  # Ho = 1
    check(backend, noise_masks(3, 9 * stride, stride, torch.uint8).to(device), stride)  # Wo = 1
    check(backend, noise_masks(1, stride, stride).to(device), stride)  # a single output pixel


@pytest.mark.parametrize("backend,device", all_backend_params())
@pytest.mark.parametrize("stride", [1, 2, 3, 4, 8])
def test_non_contiguous(backend, device, stride):
    base = blob_masks(6, 7 * stride, 18 * stride, torch.uint8).to(device)
    views = {
        "transposed": base.transpose(1, 2),  # W is the slow dimension
        "sliced": torch.cat([base, base], 2)[1::2, :, 3 : 3 + 18 * stride],  # offset, gaps between masks and rows
        "row-step": base.repeat_interleave(2, dim=1)[:, ::2],  # every other row of a taller tensor
        "permuted": base.permute(1, 0, 2).contiguous().permute(1, 0, 2),  # masks interleaved row by row
        "expanded": base[:1].expand(4, -1, -1),  # stride 0 along M
        "bool-view": (base != 0).transpose(1, 2).contiguous().transpose(1, 2),
    }
    for name, v in views.items():
        assert not v.is_contiguous(), name
        check(backend, v, stride)


@pytest.mark.parametrize("backend,device", all_backend_params())
def test_values_other_than_one(backend, device):
    """Every nonzero byte counts as 1, whatever its value (255, 128, 2, ...)."""
    masks = torch.zeros(256, 2, 2, dtype=torch.uint8)
    masks[:, 0, 0] = torch.arange(256, dtype=torch.uint8)  # one pixel of value v
    masks[:, 1, 1] = 255
    got = check(backend, masks.to(device), 2)
    assert torch.equal(got.flatten().cpu(), (torch.arange(256) != 0).to(torch.uint8))
    got = check(backend, masks.to(device), 1)
    assert torch.equal(got.cpu(), (masks != 0).to(torch.uint8))


@pytest.mark.parametrize("backend,device", all_backend_params())
@pytest.mark.parametrize("stride", [1, 4, 5])
def test_empty(backend, device, stride):
    for shape in [(0, 4 * stride, 3 * stride), (3, 0, 2 * stride), (2, 3 * stride, 0), (0, 0, 0)]:
        for dtype in (torch.bool, torch.uint8):
            got = solo.ops.downsample_masks(torch.zeros(shape, dtype=dtype, device=device), stride, backend=backend)
            assert got.shape == (shape[0], shape[1] // stride, shape[2] // stride)
            assert got.dtype == torch.uint8 and got.device.type == device


@pytest.mark.parametrize("backend,device", all_backend_params())
def test_stride_integer_types(backend, device):
    """Integer types other than int (numpy integers) are accepted as strides and passed on as a Python int."""
    np = pytest.importorskip("numpy")
    masks = noise_masks(2, 8, 12).to(device)
    exp = reference.downsample_masks(masks.cpu(), 4)
    assert torch.equal(solo.ops.downsample_masks(masks, np.int64(4), backend=backend).cpu(), exp)


@pytest.mark.parametrize("backend", ["reference", pytest.param("cpu", marks=pytest.mark.needs_ext)])
def test_bad_arguments_name_the_argument(backend):
    ok = torch.zeros(2, 8, 12, dtype=torch.bool)
    cases = [
        (ok.numpy(), 4, "masks must be a torch.Tensor"),
        (ok[0], 4, r"masks must be 3-D \[M, H, W\], got shape \(8, 12\)"),
        (ok[None], 4, r"masks must be 3-D \[M, H, W\], got shape \(1, 2, 8, 12\)"),
        (ok.float(), 4, "masks must be bool or uint8, got torch.float32"),
        (ok.long(), 4, "masks must be bool or uint8, got torch.int64"),
        (ok, 0, "stride must be a positive integer, got 0"),
        (ok, -4, "stride must be a positive integer, got -4"),
        (ok, True, r"stride must be a positive integer, got True \(bool\)"),
        (ok, 4.0, r"stride must be a positive integer, got 4.0 \(float\)"),
        (ok, "4", r"stride must be a positive integer, got '4' \(str\)"),
        (ok, None, r"stride must be a positive integer, got None"),
        (ok, torch.tensor(4), r"stride must be a positive integer, got tensor\(4\) \(Tensor\)"),
        (ok, 8, r"stride 8 does not divide the mask width W = 12"),
        (ok, 12, r"stride 12 does not divide the mask height H = 8"),
        (torch.zeros(2, 9, 8, dtype=torch.bool), 2, r"stride 2 does not divide the mask height H = 9"),
        (torch.zeros(2, 8, 10, dtype=torch.uint8), 4, r"stride 4 does not divide the mask width W = 10"),
    ]
    for masks, stride, msg in cases:
        with pytest.raises(ValueError, match=msg):
            solo.ops.downsample_masks(masks, stride, backend=backend)
    with pytest.raises(ValueError, match="backend must be one of"):
        solo.ops.downsample_masks(ok, 4, backend="numpy")


def _namespaces():
    from solo.ops import _registry

    return [pytest.param(ns, id=ns) for ns in _registry.namespaces()] or [
        pytest.param("solo", marks=pytest.mark.skip(reason="no compiled or triton ops here"))
    ]


@pytest.mark.parametrize("ns", _namespaces())
def test_compiled_op_checks_its_arguments(ns):
    """The registered ops (called directly, bypassing the Python wrapper) refuse bad input with a clear error."""
    op = getattr(torch.ops, ns).downsample_masks
    ok = torch.zeros(2, 8, 12, dtype=torch.bool)
    for masks, stride, msg in [
        (ok[0], 4, "masks must be 3-D"),
        (ok.float(), 4, "masks must be bool or uint8"),
        (ok, 0, "stride must be a positive integer"),
        (ok, 5, "stride 5 must divide"),
    ]:
        with pytest.raises(RuntimeError, match=msg):
            op(masks, stride)


@pytest.mark.parametrize("ns", _namespaces())
def test_opcheck(ns):
    op = getattr(torch.ops, ns).downsample_masks.default
    samples = [
        (blob_masks(5, 16, 24), 4),
        (blob_masks(3, 15, 10, torch.uint8), 5),
        (blob_masks(4, 12, 8, torch.uint8).transpose(1, 2), 2),
        (noise_masks(2, 6, 6), 1),
        (torch.zeros(0, 8, 8, dtype=torch.bool), 8),
    ]
    for masks, stride in samples:
        torch.library.opcheck(op, (masks, stride))


@pytest.mark.parametrize("backend,device", [p for p in all_backend_params() if p.id.split("-")[0] != "reference"])
def test_torch_compile_fullgraph(backend, device):
    masks = blob_masks(7, 32, 48, torch.uint8).to(device)

    def targets(x):
        # SOLO/DSOLO levels use strides 4, 4, 8, 16, 16; SOLOv2 uses 4.
        return [solo.ops.downsample_masks(x, s, backend=backend) for s in (4, 8, 16)] + [
            solo.ops.downsample_masks(x != 0, 2, backend=backend).float().sum((1, 2))
        ]

    torch._dynamo.reset()
    compiled = torch.compile(targets, fullgraph=True, backend="aot_eager")
    for got, exp in zip(compiled(masks), targets(masks)):
        assert got.dtype == exp.dtype
        assert torch.equal(got, exp)


@pytest.mark.needs_ext
def test_torch_compile_inductor():
    torch._dynamo.reset()
    masks = blob_masks(5, 64, 96)

    def f(x):
        return solo.ops.downsample_masks(x, 4, backend="cpu").sum((1, 2))

    torch.testing.assert_close(torch.compile(f, fullgraph=True)(masks), f(masks))


@pytest.mark.parametrize(
    "backend,device", [pytest.param("reference", "cpu", id="reference-cpu")] + backend_params("cpu", triton=False)[1:]
)
@pytest.mark.parametrize("stride", [1, 2, 3, 4, 5, 6, 8, 16, 32])
def test_matches_opencv(backend, device, stride):
    """The reference (and so every backend) equals OpenCV's INTER_LINEAR resize of the uint8 0/1 mask, which SOLO's
    targets come from (SOLO_SPEC.md §7.8). OpenCV is not a dependency: skipped when cv2 is not installed."""
    cv2 = pytest.importorskip("cv2")
    shapes = [(s * stride, t * stride) for s, t in [(1, 1), (1, 13), (7, 1), (5, 9), (16, 24), (31, 17)]]
    if stride in (4, 8, 16):
        shapes.append((800, 1216))  # SOLO's canvas: OpenCV's SIMD paths
    for h, w in shapes:
        masks = torch.cat([blob_masks(7, h, w, torch.uint8) != 0, noise_masks(2, h, w)]).to(torch.uint8)
        got = solo.ops.downsample_masks(masks, stride, backend=backend)
        for i in range(masks.shape[0]):
            exp = cv2.resize(masks[i].numpy(), (w // stride, h // stride), interpolation=cv2.INTER_LINEAR)
            exp = torch.from_numpy(exp).reshape(h // stride, w // stride)
            assert torch.equal(got[i], exp), f"{h}x{w} mask {i}: {int((got[i] != exp).sum())} pixels differ"
