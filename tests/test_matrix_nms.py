"""solo.ops.matrix_nms: every backend against the float64 reference, edge cases, bad arguments, opcheck, compile."""

import functools
import math

import pytest
import torch

import solo.ops
from solo.ops import reference
from tests.conftest import SESSION_SEED, all_backend_params, backend_params

# Output is float32: a few float32 roundings of the decay factor.
RTOL, ATOL = 1e-5, 1e-7


def blob_masks(n, h, w, generator=None):
    """SOLO-like instance masks: overlapping ellipses and rectangles, exact duplicates, near-duplicates (a few pixels
    removed), nested masks (a part of an earlier mask), empty masks, single pixels."""
    g = generator
    yy = torch.arange(h, dtype=torch.float64).view(h, 1)
    xx = torch.arange(w, dtype=torch.float64).view(1, w)
    size = torch.tensor([h, w], dtype=torch.float64)
    masks = torch.zeros(n, h, w, dtype=torch.bool)
    for i in range(n):
        kind = int(torch.randint(0, 9, (1,), generator=g))
        if kind in (2, 3, 4) and i == 0:
            kind = 0
        cy, cx = (torch.rand(2, dtype=torch.float64, generator=g) * size).tolist()
        ry, rx = (1 + torch.rand(2, dtype=torch.float64, generator=g) * size / 3).tolist()
        if kind in (0, 6):  # ellipse (kind 6: a large one)
            s = 2.0 if kind == 6 else 1.0
            masks[i] = ((yy - cy) / (s * ry)) ** 2 + ((xx - cx) / (s * rx)) ** 2 <= 1
        elif kind == 1:  # rectangle
            masks[i] = ((yy - cy).abs() <= ry) & ((xx - cx).abs() <= rx)
        elif kind == 2:  # exact duplicate of an earlier mask
            masks[i] = masks[int(torch.randint(0, i, (1,), generator=g))]
        elif kind == 3:  # nested: an earlier mask cut by a rectangle
            masks[i] = (
                masks[int(torch.randint(0, i, (1,), generator=g))] & ((yy - cy).abs() <= ry) & ((xx - cx).abs() <= rx)
            )
        elif kind == 4:  # near-duplicate: an earlier mask with up to 3 pixels removed
            m = masks[int(torch.randint(0, i, (1,), generator=g))].clone().view(-1)
            on = m.nonzero().view(-1)
            if on.numel() > 3:
                m[on[torch.randint(0, on.numel(), (3,), generator=g)]] = False
            masks[i] = m.view(h, w)
        elif kind == 5:  # a single pixel
            masks[i, int(cy), int(cx)] = True
        elif kind == 7:
            pass  # empty
        else:  # speckle
            masks[i] = torch.rand(h, w, generator=g) > 0.7
    return masks


def make_inputs(n, h, w, *, labels="mixed", ties=True, generator=None):
    masks = blob_masks(n, h, w, generator)
    if labels == "mixed":
        lab = torch.randint(0, 3, (n,), generator=generator) * 1000 - 7  # few classes, arbitrary label values
    else:
        lab = torch.full((n,), 5, dtype=torch.int64)
    if ties:  # exact ties in the scores
        scores = (torch.randint(1, 9, (n,), generator=generator).float() / 8).sort(descending=True).values
    else:
        scores = torch.rand(n, generator=generator).sort(descending=True).values
    return masks, lab, scores


def expected(masks, labels, scores, kernel, sigma, areas=None):
    return reference.matrix_nms(
        masks.cpu(),
        labels.cpu(),
        scores.cpu(),
        kernel,
        sigma,
        None if areas is None else areas.cpu(),
        dtype=torch.float64,
    )


def check(got, exp, rtol=RTOL, atol=ATOL):
    assert got.dtype == torch.float32 and got.shape == exp.shape
    torch.testing.assert_close(got.double().cpu(), exp, rtol=rtol, atol=atol)


def tol_for(backend, kernel):
    # The reference backend runs in float32 and forms 1 - IoU from a rounded IoU: in the linear kernel the
    # near-duplicates (1 - IoU ~ 1e-3) leave it with ~1e-4 relative error. The fused backends form 1 - IoU from
    # exact counts (matrix_nms.h).
    if backend == "reference" and kernel == "linear":
        return 2e-3, 1e-6
    return RTOL, ATOL


@pytest.mark.parametrize("backend,device", all_backend_params())
@pytest.mark.parametrize("kernel", ["gaussian", "linear"])
@pytest.mark.parametrize("labels", ["mixed", "single"])
@pytest.mark.parametrize("n,h,w", [(0, 6, 5), (1, 7, 9), (2, 11, 13), (37, 24, 21), (130, 9, 15)])
def test_parity_small(backend, device, kernel, labels, n, h, w):
    masks, lab, scores = make_inputs(n, h, w, labels=labels)
    got = solo.ops.matrix_nms(masks.to(device), lab.to(device), scores.to(device), kernel, backend=backend)
    check(got, expected(masks, lab, scores, kernel, 2.0), *tol_for(backend, kernel))


@functools.cache
def _solo_size_case(labels):
    """N = 500 masks at SOLO's stride-4 size 200 x 304 and the float64 answers (computed once per session)."""
    g = torch.Generator().manual_seed(SESSION_SEED + (labels == "single"))
    masks, lab, scores = make_inputs(500, 200, 304, labels=labels, ties=False, generator=g)
    exp = {k: expected(masks, lab, scores, k, 2.0) for k in ("gaussian", "linear")}
    return masks, lab, scores, exp


@pytest.mark.parametrize("backend,device", backend_params("cpu", triton=False) + backend_params("cuda"))
@pytest.mark.parametrize("kernel", ["gaussian", "linear"])
@pytest.mark.parametrize("labels", ["mixed", "single"])
def test_parity_solo_size(backend, device, kernel, labels):
    masks, lab, scores, exp = _solo_size_case(labels)
    got = solo.ops.matrix_nms(masks.to(device), lab.to(device), scores.to(device), kernel, backend=backend)
    check(got, exp[kernel], *tol_for(backend, kernel))


@pytest.mark.parametrize("backend,device", all_backend_params())
@pytest.mark.parametrize("sigma", [0.0, 0.5, 2.0, 7.5])
def test_sigmas(backend, device, sigma):
    masks, lab, scores = make_inputs(29, 12, 10)
    got = solo.ops.matrix_nms(masks.to(device), lab.to(device), scores.to(device), "gaussian", sigma, backend=backend)
    check(got, expected(masks, lab, scores, "gaussian", sigma))
    if sigma == 0.0:
        torch.testing.assert_close(got.cpu(), scores)  # exp(0) = 1: nothing decays


@pytest.mark.parametrize("backend,device", all_backend_params())
@pytest.mark.parametrize("kernel", ["gaussian", "linear"])
@pytest.mark.parametrize("areas_kind", ["int64", "int32", "float32", "float64", "scaled"])
def test_given_areas(backend, device, kernel, areas_kind):
    """Areas are used as given: the counts themselves (any dtype) or larger float values."""
    masks, lab, scores = make_inputs(31, 10, 14)
    counts = masks.flatten(1).sum(1)
    areas = {
        "int64": counts,
        "int32": counts.int(),
        "float32": counts.float(),
        "float64": counts.double(),
        "scaled": counts.float() * 1.5 + torch.rand(31) * 4,
    }[areas_kind]
    got = solo.ops.matrix_nms(
        masks.to(device), lab.to(device), scores.to(device), kernel, 2.0, areas.to(device), backend=backend
    )
    # float32 areas in the fused backends: the oracle gets the same float32 values.
    exp = expected(masks, lab, scores, kernel, 2.0, areas.float() if areas.dtype == torch.float64 else areas)
    check(got, exp, *tol_for(backend, kernel))


@pytest.mark.parametrize("backend,device", all_backend_params())
@pytest.mark.parametrize("mask_dtype", [torch.bool, torch.uint8])
@pytest.mark.parametrize("score_dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_dtypes(backend, device, mask_dtype, score_dtype):
    masks, lab, scores = make_inputs(23, 8, 19)
    m = masks.to(mask_dtype)
    if mask_dtype == torch.uint8:  # any nonzero byte is inside
        m = m * torch.randint(1, 256, m.shape, dtype=torch.uint8)
    s = scores.to(score_dtype)
    for kernel in ("gaussian", "linear"):
        got = solo.ops.matrix_nms(m.to(device), lab.to(device), s.to(device), kernel, backend=backend)
        check(got, expected(masks, lab, s.double(), kernel, 2.0), *tol_for(backend, kernel))


@pytest.mark.parametrize("backend,device", all_backend_params())
def test_non_contiguous(backend, device):
    masks, lab, scores = make_inputs(40, 16, 12)
    big = torch.stack([masks, ~masks], 1)  # [N, 2, H, W]: masks[:, 0] is a view with a mask stride of 2 HW
    cases = [
        big[:, 0],  # only the mask stride differs (each H x W block contiguous)
        masks.transpose(1, 2),  # [N, W, H] view: pixel order differs, IoU does not
        masks[:, :1].expand(40, 16, 12),  # a stride-0 row dimension
    ]
    s_big = torch.stack([scores, scores], 1)
    for m in cases:
        assert not m.is_contiguous()
        got = solo.ops.matrix_nms(m.to(device), lab[::1].to(device), s_big[:, 1].to(device), "linear", backend=backend)
        check(got, expected(m.contiguous(), lab, scores, "linear", 2.0), *tol_for(backend, "linear"))


@pytest.mark.parametrize("backend,device", all_backend_params())
def test_special_cases(backend, device):
    """Exact duplicates, all-empty masks, masks without pixels at all, the partial last bit word."""
    h, w = 13, 17  # 221 pixels: 3 full 64-bit words and a partial one
    masks, lab, _scores = make_inputs(6, h, w, labels="single")
    dup = torch.cat([masks[:1]] * 4 + [masks])  # a chain of exact duplicates: D = comp = 1 (linear 0/0 -> 0)
    lab_d = torch.cat([lab[:1]] * 4 + [lab])
    s_d = torch.linspace(1, 0.1, dup.shape[0])
    corner = torch.zeros(3, h, w, dtype=torch.bool)
    corner[:, -1, -1] = True  # only the last pixel: the partial word
    corner[1, -1, -3:] = True
    cases = [
        (dup, lab_d, s_d),
        (torch.zeros(5, h, w, dtype=torch.bool), torch.zeros(5, dtype=torch.int64), torch.linspace(1, 0, 5)),
        (torch.zeros(4, 0, 5, dtype=torch.bool), torch.zeros(4, dtype=torch.int64), torch.linspace(1, 0, 4)),
        (corner, torch.zeros(3, dtype=torch.int64), torch.tensor([0.9, 0.8, 0.8])),
    ]
    for m, lb, s in cases:
        for kernel in ("gaussian", "linear"):
            got = solo.ops.matrix_nms(m.to(device), lb.to(device), s.to(device), kernel, backend=backend)
            exp = expected(m, lb, s, kernel, 2.0)
            assert torch.isfinite(exp).all()
            check(got, exp, *tol_for(backend, kernel))
    # The duplicates of the top mask decay to 0 in the linear kernel.
    got = solo.ops.matrix_nms(dup.to(device), lab_d.to(device), s_d.to(device), "linear", backend=backend).cpu()
    if masks[0].any():
        assert got[0] == s_d[0] and (got[1:4] == 0).all()


@pytest.mark.parametrize("backend,device", all_backend_params())
def test_deterministic(backend, device):
    masks, lab, scores = make_inputs(45, 20, 33)
    args = (masks.to(device), lab.to(device), scores.to(device), "gaussian", 2.0)
    assert torch.equal(solo.ops.matrix_nms(*args, backend=backend), solo.ops.matrix_nms(*args, backend=backend))


@pytest.mark.needs_ext
@pytest.mark.parametrize("isa", ["default", "popcnt"])
def test_cpu_isa_versions_agree(isa, monkeypatch):
    """The CPU kernel's baseline, POPCNT and AVX-512 builds of the pair loop give identical results."""
    masks, lab, scores = make_inputs(90, 40, 50)
    best = torch.ops.solo.matrix_nms(masks, lab, scores, None, 1, 2.0)
    monkeypatch.setenv("SOLO_CPU_ISA", isa)
    assert torch.equal(torch.ops.solo.matrix_nms(masks, lab, scores, None, 1, 2.0), best)


@pytest.mark.parametrize("backend", ["reference", pytest.param("cpu", marks=pytest.mark.needs_ext)])
def test_unsorted_scores_are_an_error_on_cpu(backend):
    masks, lab, _ = make_inputs(4, 5, 5)
    with pytest.raises(ValueError, match=r"scores must be sorted in descending order, got scores\[2\]"):
        solo.ops.matrix_nms(masks, lab, torch.tensor([0.9, 0.5, 0.6, 0.1]), backend=backend)


@pytest.mark.needs_ext
def test_cpu_op_checks_score_order():
    """The C++ op checks the order itself (the Python check is skipped under torch.compile)."""
    masks, lab, _ = make_inputs(3, 5, 5)
    with pytest.raises(RuntimeError, match="scores must be sorted in descending order"):
        torch.ops.solo.matrix_nms(masks, lab, torch.tensor([0.1, 0.5, 0.2]), None, 0, 2.0)


@pytest.mark.needs_cuda
def test_unsorted_scores_on_cuda_checked_only_on_request(monkeypatch):
    masks, lab, _ = make_inputs(4, 5, 5)
    s = torch.tensor([0.9, 0.5, 0.6, 0.1], device="cuda")
    solo.ops.matrix_nms(masks.cuda(), lab.cuda(), s)  # index order is the priority order: no sync, no error
    monkeypatch.setenv("SOLO_CHECK_VALUES", "1")
    with pytest.raises(ValueError, match="scores must be sorted"):
        solo.ops.matrix_nms(masks.cuda(), lab.cuda(), s)


@pytest.mark.parametrize("backend", ["reference", pytest.param("cpu", marks=pytest.mark.needs_ext)])
def test_bad_arguments_name_the_argument(backend):
    masks, lab, scores = make_inputs(4, 5, 6)

    def call(m=masks, lb=lab, s=scores, kernel="gaussian", sigma=2.0, areas=None):
        return solo.ops.matrix_nms(m, lb, s, kernel, sigma, areas, backend=backend)

    bad = [
        ({"m": masks.numpy()}, "masks must be a torch.Tensor"),
        ({"m": masks[0]}, r"masks must be 3-D \[N, H, W\]"),
        ({"m": masks.float()}, "masks must be bool or uint8"),
        ({"lb": lab.int()}, "labels must be int64"),
        ({"lb": lab[:3]}, r"labels must have shape \[4\]"),
        ({"lb": lab.view(4, 1)}, r"labels must have shape \[4\]"),
        ({"s": scores.long()}, "scores must be float16, bfloat16, float32 or float64"),
        ({"s": scores[:2]}, r"scores must have shape \[4\]"),
        ({"s": [0.9, 0.8, 0.7, 0.6]}, "scores must be a torch.Tensor"),
        ({"areas": torch.ones(4, dtype=torch.bool)}, "areas must be an integer or floating point tensor"),
        ({"areas": torch.ones(3)}, r"areas must have shape \[4\]"),
        ({"areas": [1, 2, 3, 4]}, "areas must be a torch.Tensor"),
        ({"kernel": "box"}, "kernel must be 'gaussian' or 'linear'"),
        ({"kernel": 0}, "kernel must be 'gaussian' or 'linear'"),
        ({"sigma": float("nan")}, "sigma must be a finite number >= 0"),
        ({"sigma": float("inf")}, "sigma must be a finite number >= 0"),
        ({"sigma": -1.0}, "sigma must be a finite number >= 0"),
    ]
    for kwargs, msg in bad:
        with pytest.raises(ValueError, match=msg):
            call(**kwargs)
    with pytest.raises(ValueError, match="backend must be one of"):
        solo.ops.matrix_nms(masks, lab, scores, backend="numpy")


@pytest.mark.needs_ext
def test_cpp_op_checks_arguments():
    masks, lab, scores = make_inputs(4, 5, 6)
    op = torch.ops.solo.matrix_nms
    cases = [
        ((masks[0], lab, scores, None, 0, 2.0), "masks must be 3-D"),
        ((masks.float(), lab, scores, None, 0, 2.0), "masks must be bool or uint8"),
        ((masks, lab.int(), scores, None, 0, 2.0), "labels must be int64"),
        ((masks, lab, scores[:3], None, 0, 2.0), r"scores must have shape \[4\]"),
        ((masks, lab, scores.long(), None, 0, 2.0), "scores must be floating point"),
        ((masks, lab, scores, torch.ones(4, dtype=torch.bool), 0, 2.0), "areas must be an integer or floating"),
        ((masks, lab, scores, None, 2, 2.0), "kernel must be 0"),
        ((masks, lab, scores, None, 0, -1.0), "sigma must be a finite number"),
    ]
    for args, msg in cases:
        with pytest.raises(RuntimeError, match=msg):
            op(*args)


@pytest.mark.needs_cuda
def test_device_mismatch():
    masks, lab, scores = make_inputs(4, 5, 6)
    with pytest.raises(ValueError, match="labels is on"):
        solo.ops.matrix_nms(masks.cuda(), lab, scores.cuda())
    with pytest.raises(ValueError, match="areas is on"):
        solo.ops.matrix_nms(masks.cuda(), lab.cuda(), scores.cuda(), areas=torch.ones(4))


def _namespaces():
    from solo.ops import _registry

    return [pytest.param(ns, id=ns) for ns in _registry.namespaces()] or [
        pytest.param("solo", marks=pytest.mark.skip(reason="no compiled or triton ops here"))
    ]


@pytest.mark.parametrize("ns", _namespaces())
def test_opcheck(ns):
    op = getattr(torch.ops, ns).matrix_nms.default
    masks, lab, scores = make_inputs(9, 7, 11)
    torch.library.opcheck(op, (masks, lab, scores, None, 0, 2.0))
    torch.library.opcheck(op, (masks.to(torch.uint8), lab, scores.double(), masks.flatten(1).sum(1), 1, 0.5))
    torch.library.opcheck(op, (masks[:0], lab[:0], scores[:0], None, 0, 2.0))


@pytest.mark.parametrize("backend,device", [p for p in all_backend_params() if p.id.split("-")[0] != "reference"])
def test_torch_compile_fullgraph(backend, device):
    masks, lab, scores = make_inputs(21, 9, 8)
    masks, lab, scores = masks.to(device), lab.to(device), scores.to(device)

    def post(m, lb, s):
        decayed = solo.ops.matrix_nms(m, lb, s, "gaussian", 2.0, backend=backend)
        return decayed * (decayed >= 0.05)  # SOLO's update_thr, without a data-dependent shape

    torch._dynamo.reset()
    compiled = torch.compile(post, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(masks, lab, scores), post(masks, lab, scores))


@pytest.mark.needs_ext
def test_torch_compile_inductor():
    masks, lab, scores = make_inputs(17, 10, 10)
    torch._dynamo.reset()
    f = torch.compile(lambda s: solo.ops.matrix_nms(masks, lab, s * 0.5, "linear", backend="cpu"), fullgraph=True)
    torch.testing.assert_close(f(scores), solo.ops.matrix_nms(masks, lab, scores * 0.5, "linear", backend="cpu"))


def test_original_formula_on_a_hand_example():
    """Two same-class masks with IoU 1/3 and a third of another class: decay = exp(-2 / 9) and 1 - 1/3."""
    m = torch.zeros(3, 1, 4, dtype=torch.bool)
    m[0, 0, :2] = True
    m[1, 0, 1:3] = True
    m[2, 0, :] = True
    lab = torch.tensor([1, 1, 2])
    s = torch.tensor([0.9, 0.8, 0.7])
    for backend, ok in solo.ops.available_backends("cpu").items():
        if not ok[0]:
            continue
        got = solo.ops.matrix_nms(m, lab, s, backend=backend).double()
        assert math.isclose(got[1].item(), 0.8 * math.exp(-2 / 9), rel_tol=1e-6), backend
        assert got[0].item() == pytest.approx(0.9) and got[2].item() == pytest.approx(0.7)
        got = solo.ops.matrix_nms(m, lab, s, "linear", backend=backend).double()
        assert math.isclose(got[1].item(), 0.8 * (2 / 3), rel_tol=1e-6), backend


@pytest.mark.parametrize("backend,device", [p for p in backend_params("cpu") if p.values[0] == "triton"])
@pytest.mark.parametrize("kernel", ["gaussian", "linear"])
def test_triton_fp16_mma_variant_is_exact(backend, device, kernel, monkeypatch):
    """Before sm_80 the intersections use 0/1 fp16 operands with fp32 accumulation (no int8 MMA there): forced here
    on the interpreter, with a small K-split cap so several splits (and the atomics) run, it must equal the int8
    variant exactly and the float64 reference to the usual tolerance."""
    from solo.ops import _triton_matrix_nms as m

    masks, lab, scores = make_inputs(70, 20, 33)
    int8 = solo.ops.matrix_nms(masks, lab, scores, kernel, backend=backend)
    monkeypatch.setattr(m, "device_capability", lambda t: 75)
    monkeypatch.setattr(m, "_FP16_MAX_K", 2 * m._BLOCK_K)
    assert m._use_fp16_mma(m.device_capability(masks))
    fp16 = solo.ops.matrix_nms(masks, lab, scores, kernel, backend=backend)
    assert torch.equal(fp16, int8)
    check(fp16, expected(masks, lab, scores, kernel, 2.0), *tol_for(backend, kernel))
