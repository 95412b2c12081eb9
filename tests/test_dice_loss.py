"""solo.ops.dice_loss / decoupled_dice_loss: every backend against a float64 reference, gradients, opcheck, compile."""

import pytest
import torch

import solo.ops
from solo.ops import reference
from tests.conftest import all_backend_params, backend_params, set_cpu_isa

GRAD_TOL = {
    torch.float32: (2e-5, 1e-9),
    torch.float16: (2e-3, 1e-8),
    torch.bfloat16: (1.6e-2, 1e-7),
    torch.float64: (1e-10, 1e-15),
}


def blob_masks(p, h, w):
    """Instance masks that look like SOLO targets: filled ellipses and rectangles of random size, some empty,
    some single pixels, some full."""
    yy = torch.arange(h, dtype=torch.float64).view(h, 1)
    xx = torch.arange(w, dtype=torch.float64).view(1, w)
    masks = torch.zeros(p, h, w, dtype=torch.bool)
    for i in range(p):
        kind = i % 6
        cy, cx = torch.rand(2, dtype=torch.float64) * torch.tensor([h, w])
        ry, rx = 1 + torch.rand(2, dtype=torch.float64) * torch.tensor([h, w]) / 3
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
        else:
            masks[i] = torch.rand(h, w) > 0.5
    return masks


def make_inputs(p, h, w, device, dtype, target_dtype=torch.bool, decoupled=False, scale=3.0):
    t = blob_masks(p, h, w)
    t = t.to(target_dtype) if target_dtype != torch.float32 else t.float() * torch.rand(p, h, w)  # soft targets
    x = (torch.randn(p, h, w, dtype=torch.float64) * scale).to(dtype).to(device)
    y = (torch.randn(p, h, w, dtype=torch.float64) * scale).to(dtype).to(device) if decoupled else None
    return x, y, t.to(device)


def reference64(x, y, t, eps, reduction):
    x64 = x.detach().double().requires_grad_(True)
    if y is None:
        loss = reference.dice_loss(x64, t, eps, reduction)
        inputs = (x64,)
    else:
        y64 = y.detach().double().requires_grad_(True)
        loss = reference.decoupled_dice_loss(x64, y64, t, eps, reduction)
        inputs = (x64, y64)
    grads = torch.autograd.grad(loss.sum(), inputs) if x.numel() else tuple(torch.zeros_like(i) for i in inputs)
    return loss.detach(), grads


def run(backend, x, y, t, eps=1e-3, reduction="none"):
    if y is None:
        return solo.ops.dice_loss(x, t, eps, reduction, backend=backend)
    return solo.ops.decoupled_dice_loss(x, y, t, eps, reduction, backend=backend)


def check(backend, p, h, w, device, dtype, target_dtype=torch.bool, decoupled=False, reduction="none", eps=1e-3):
    x, y, t = make_inputs(p, h, w, device, dtype, target_dtype, decoupled)
    x.requires_grad_(True)
    if y is not None:
        y.requires_grad_(True)
    loss = run(backend, x, y, t, eps, reduction)
    assert loss.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
    assert loss.shape == ((p,) if reduction == "none" else ())
    exp_loss, exp_grads = reference64(x, y, t, eps, reduction)
    tol = (1e-10, 1e-12) if dtype == torch.float64 else (2e-5, 2e-6)
    torch.testing.assert_close(loss.double().cpu(), exp_loss.cpu(), rtol=tol[0], atol=tol[1])
    inputs = (x,) if y is None else (x, y)
    grads = torch.autograd.grad(loss.sum(), inputs) if p else tuple(torch.zeros_like(i) for i in inputs)
    rtol, atol = GRAD_TOL[dtype]
    # Gradients are O(1/L); scale the absolute tolerance by the largest reference gradient. The gradient is returned in
    # the input's dtype, so a value below the smallest normal number is rounded on fp16's subnormal grid (spacing
    # 2^-24): half of that spacing is the least error the cast itself allows (a 1-pixel mask's gradient is ~1e-6).
    atol = max(atol, 2.0**-25 if dtype == torch.float16 else 0.0)
    for g, e in zip(grads, exp_grads):
        assert g.dtype == dtype and g.shape == x.shape
        scale = float(e.abs().max()) if e.numel() else 1.0
        torch.testing.assert_close(g.double().cpu(), e.cpu(), rtol=rtol, atol=max(atol, rtol * scale))


@pytest.mark.parametrize("backend,device", all_backend_params())
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("decoupled", [False, True], ids=["plain", "decoupled"])
@pytest.mark.parametrize("p,h,w", [(0, 8, 8), (1, 1, 1), (1, 13, 17), (7, 5, 3), (13, 11, 29)])
def test_parity_small(backend, device, dtype, decoupled, p, h, w):
    check(backend, p, h, w, device, dtype, decoupled=decoupled)


@pytest.mark.parametrize("backend,device", all_backend_params())
@pytest.mark.parametrize("target_dtype", [torch.bool, torch.uint8, torch.float16, torch.float32])
@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
def test_target_dtypes_and_reductions(backend, device, target_dtype, reduction):
    check(
        backend,
        6,
        9,
        14,
        device,
        torch.float32,
        target_dtype,
        decoupled=target_dtype == torch.uint8,
        reduction=reduction,
    )


@pytest.mark.needs_ext
@pytest.mark.parametrize("isa", ["baseline", "auto"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("decoupled", [False, True], ids=["plain", "decoupled"])
def test_cpu_instruction_set_variants(monkeypatch, isa, dtype, decoupled):
    """The CPU kernels have a baseline and an AVX2+FMA build of their loops (csrc/cpu/isa.h): both must be right.
    SOLO_CPU_ISA=baseline forces the baseline one; "auto" takes AVX2 where the CPU has it."""
    set_cpu_isa(monkeypatch, isa)
    check("cpu", 5, 67, 131, "cpu", dtype, decoupled=decoupled)
    check("cpu", 3, 9, 7, "cpu", dtype, target_dtype=torch.float32, decoupled=decoupled, reduction="sum")


@pytest.mark.parametrize("backend,device", all_backend_params(triton=False))
@pytest.mark.parametrize("p,decoupled", [(1, False), (100, False), (37, True), (500, False)])
def test_parity_solo_sizes(backend, device, p, decoupled):
    """Up to 500 instances at SOLO's stride-4 mask size 200 x 304."""
    check(backend, p, 200, 304, device, torch.float32, decoupled=decoupled)


@pytest.mark.parametrize("backend,device", all_backend_params())
def test_eps_and_trailing_dims(backend, device):
    """Sums run over every trailing dimension; eps enters both squared sums."""
    x = torch.randn(3, 2, 5, 7, device=device)
    t = torch.rand(3, 2, 5, 7, device=device) > 0.5
    for eps in (0.0, 1e-3, 1.0):
        got = solo.ops.dice_loss(x, t, eps, backend=backend)
        exp = reference.dice_loss(x.double().flatten(1), t.flatten(1), eps)
        torch.testing.assert_close(got.double(), exp, rtol=2e-6, atol=1e-7)


@pytest.mark.parametrize("backend,device", all_backend_params())
def test_empty_target_and_saturated_logits(backend, device):
    """An empty target: the loss tends to 1 - 0 = 1 and stays finite; saturated logits give finite gradients."""
    x = torch.tensor([[-50.0, -30.0, 30.0, 50.0], [100.0, 100.0, 100.0, 100.0]], device=device, requires_grad=True)
    t = torch.tensor([[0, 0, 0, 0], [1, 1, 1, 1]], dtype=torch.bool, device=device)
    loss = solo.ops.dice_loss(x, t, backend=backend)
    (g,) = torch.autograd.grad(loss.sum(), x)
    assert torch.isfinite(loss).all() and torch.isfinite(g).all()
    exp, (eg,) = reference64(x, None, t, 1e-3, "none")
    torch.testing.assert_close(loss.double(), exp, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(g.double(), eg, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("backend,device", all_backend_params())
@pytest.mark.parametrize("decoupled", [False, True], ids=["plain", "decoupled"])
def test_non_contiguous(backend, device, decoupled):
    x, y, t = make_inputs(5, 12, 10, device, torch.float32, decoupled=decoupled)
    xs = x.transpose(1, 2).contiguous().transpose(1, 2)
    ys = None if y is None else y.transpose(1, 2).contiguous().transpose(1, 2)
    ts = torch.stack([t, t], 0)[1]  # a view with an offset
    ts = ts.transpose(1, 2).contiguous().transpose(1, 2)
    assert not xs.is_contiguous() and not ts.is_contiguous()
    xs.requires_grad_(True)
    if ys is not None:
        ys.requires_grad_(True)
    loss = run(backend, xs, ys, ts)
    # an expanded (stride-0) incoming gradient, as from .sum() backward
    inputs = (xs,) if ys is None else (xs, ys)
    grads = torch.autograd.grad(loss.sum(), inputs)
    exp_loss, exp_grads = reference64(x, y, t, 1e-3, "none")
    torch.testing.assert_close(loss.double(), exp_loss, rtol=2e-5, atol=2e-6)
    for g, e in zip(grads, exp_grads):
        torch.testing.assert_close(g.double(), e, rtol=2e-5, atol=1e-8)


@pytest.mark.parametrize("backend,device", all_backend_params())
def test_weighted_incoming_gradient(backend, device):
    """Backward with a non-uniform gradient per instance (e.g. a weighted mean)."""
    x, _, t = make_inputs(4, 6, 6, device, torch.float32)
    x.requires_grad_(True)
    w = torch.tensor([0.5, -2.0, 3.0, 0.0], device=device)
    (g,) = torch.autograd.grad((solo.ops.dice_loss(x, t, backend=backend) * w).sum(), x)
    x64 = x.detach().double().requires_grad_(True)
    (e,) = torch.autograd.grad((reference.dice_loss(x64, t) * w.double()).sum(), x64)
    torch.testing.assert_close(g.double(), e, rtol=2e-5, atol=1e-8)


@pytest.mark.parametrize("backend,device", all_backend_params())
def test_deterministic(backend, device):
    x, y, t = make_inputs(3, 64, 200, device, torch.float32, decoupled=True)
    assert torch.equal(run(backend, x, y, t), run(backend, x, y, t))


@pytest.mark.parametrize("backend,device", backend_params("cpu"))
@pytest.mark.parametrize("decoupled", [False, True], ids=["plain", "decoupled"])
def test_gradcheck_float64(backend, device, decoupled):
    x, y, t = make_inputs(3, 4, 5, device, torch.float64, target_dtype=torch.float32, decoupled=decoupled, scale=1.0)
    if decoupled:
        f = lambda a, b: solo.ops.decoupled_dice_loss(a, b, t, backend=backend)
        torch.autograd.gradcheck(f, (x.requires_grad_(True), y.requires_grad_(True)))
    else:
        for reduction in ("none", "mean"):
            f = lambda a, reduction=reduction: solo.ops.dice_loss(a, t, reduction=reduction, backend=backend)
            torch.autograd.gradcheck(f, (x.requires_grad_(True),))


def _namespaces():
    from solo.ops import _registry

    return [pytest.param(ns, id=ns) for ns in _registry.namespaces()] or [
        pytest.param("solo", marks=pytest.mark.skip(reason="no compiled or triton ops here"))
    ]


@pytest.mark.parametrize("ns", _namespaces())
@pytest.mark.parametrize("decoupled", [False, True], ids=["plain", "decoupled"])
def test_opcheck(ns, decoupled):
    ops = getattr(torch.ops, ns)
    x, y, t = make_inputs(4, 5, 6, "cpu", torch.float32, decoupled=decoupled)
    x, t = x.flatten(1).requires_grad_(True), t.flatten(1)
    y = None if y is None else y.flatten(1).requires_grad_(True)
    torch.library.opcheck(ops.dice_loss_fwd.default, (x, t, y, 1e-3))
    _loss, sums = ops.dice_loss_fwd(x.detach(), t, None if y is None else y.detach(), 1e-3)
    torch.library.opcheck(
        ops.dice_loss_bwd.default, (torch.rand(4), x.detach(), t, None if y is None else y.detach(), sums, 1e-3)
    )


@pytest.mark.parametrize("backend,device", [p for p in all_backend_params() if p.id.split("-")[0] != "reference"])
def test_torch_compile_fullgraph(backend, device):
    x, y, t = make_inputs(6, 10, 12, device, torch.float32, decoupled=True)

    def step(a, b, tt):
        return solo.ops.dice_loss(a, tt, reduction="mean", backend=backend) + solo.ops.decoupled_dice_loss(
            a, b, tt, reduction="sum", backend=backend
        )

    torch._dynamo.reset()
    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    xa, ya = x.clone().requires_grad_(True), y.clone().requires_grad_(True)
    xb, yb = x.clone().requires_grad_(True), y.clone().requires_grad_(True)
    a, b = compiled(xa, ya, t), step(xb, yb, t)
    a.backward()
    b.backward()
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(xa.grad, xb.grad)
    torch.testing.assert_close(ya.grad, yb.grad)


@pytest.mark.needs_ext
def test_torch_compile_inductor():
    torch._dynamo.reset()
    conv = torch.nn.Conv2d(4, 3, 3, padding=1)
    feats = torch.randn(2, 4, 16, 16)
    t = blob_masks(6, 16, 16).view(2, 3, 16, 16)

    def step(f):
        return solo.ops.dice_loss(conv(f), t, reduction="mean", backend="cpu")

    loss_c = torch.compile(step, fullgraph=True)(feats)
    loss_c.backward()
    g_c = conv.weight.grad.clone()
    conv.weight.grad = None
    loss_e = step(feats)
    loss_e.backward()
    torch.testing.assert_close(loss_c, loss_e)
    torch.testing.assert_close(g_c, conv.weight.grad, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("backend", ["reference", pytest.param("cpu", marks=pytest.mark.needs_ext)])
def test_bad_inputs_name_the_argument(backend):
    x = torch.randn(3, 4, 5)
    t = torch.rand(3, 4, 5) > 0.5
    with pytest.raises(ValueError, match="targets must have the shape"):
        solo.ops.dice_loss(x, t[:2], backend=backend)
    with pytest.raises(ValueError, match="targets must be bool, uint8 or floating"):
        solo.ops.dice_loss(x, t.long(), backend=backend)
    with pytest.raises(ValueError, match="logits must be float"):
        solo.ops.dice_loss(x.long(), t, backend=backend)
    with pytest.raises(ValueError, match="reduction must be one of"):
        solo.ops.dice_loss(x, t, reduction="max", backend=backend)
    with pytest.raises(ValueError, match="eps must be"):
        solo.ops.dice_loss(x, t, eps=float("nan"), backend=backend)
    with pytest.raises(ValueError, match="y_logits must have the shape"):
        solo.ops.decoupled_dice_loss(x, x[:, :2], t, backend=backend)
    with pytest.raises(ValueError, match="y_logits must have the dtype"):
        solo.ops.decoupled_dice_loss(x, x.double(), t, backend=backend)
    with pytest.raises(ValueError, match="logits must have shape"):
        solo.ops.dice_loss(torch.tensor(1.0), torch.tensor(True), backend=backend)


@pytest.mark.needs_cuda
def test_device_mismatch():
    with pytest.raises(ValueError, match="targets is on"):
        solo.ops.dice_loss(torch.randn(2, 3, device="cuda"), torch.ones(2, 3, dtype=torch.bool))
