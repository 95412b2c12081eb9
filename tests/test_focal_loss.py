"""solo.ops.sigmoid_focal_loss: every backend against a float64 reference, gradients, opcheck, compile, errors."""

import pytest
import torch

import solo.ops
from solo.ops import reference
from tests.conftest import all_backend_params, backend_params, set_cpu_isa

# Gradients come back in the logits' dtype: one rounding of that dtype on top of fp32 arithmetic.
GRAD_TOL = {
    torch.float32: (1e-5, 1e-7),
    torch.float16: (2e-3, 1e-6),
    torch.bfloat16: (1.6e-2, 1e-5),
    torch.float64: (1e-10, 1e-13),
}
LOSS_TOL = {torch.float64: (1e-10, 1e-13)}  # losses: fp32 arithmetic for every other input dtype
INTERPRETED = {"triton"}  # on CPU: keep shapes small


def make_inputs(n, c, device, dtype, scale=4.0, ignore=0.1, background=0.7):
    """Logits with large magnitudes (saturated sigmoids) and a label mix: ignored, background, classes."""
    x = (torch.randn(n, c, dtype=torch.float64) * scale).to(dtype)
    r = torch.rand(n)
    labels = torch.randint(0, max(c, 1), (n,))
    labels = torch.where(r < background, torch.full_like(labels, c), labels)
    labels = torch.where(r < ignore, torch.full_like(labels, -1), labels)
    return x.to(device), labels.to(device)


def reference64(x, labels, alpha, gamma, reduction):
    """Float64 reference loss and its gradient with respect to the (already rounded) logits."""
    x64 = x.detach().to(torch.float64).requires_grad_(True)
    loss = reference.sigmoid_focal_loss(x64, labels, alpha, gamma, reduction)
    (g,) = torch.autograd.grad(loss.sum(), x64) if x.numel() else (torch.zeros_like(x64),)
    return loss.detach(), g


def check(backend, device, n, c, dtype, reduction="sum", alpha=0.25, gamma=2.0, **kw):
    x, labels = make_inputs(n, c, device, dtype, **kw)
    x.requires_grad_(True)
    loss = solo.ops.sigmoid_focal_loss(x, labels, alpha, gamma, reduction, backend=backend)
    expected_dtype = torch.float64 if dtype == torch.float64 else torch.float32
    assert loss.dtype == expected_dtype
    assert loss.shape == ((n, c) if reduction == "none" else ())
    exp_loss, exp_grad = reference64(x, labels, alpha, gamma, reduction)
    rtol, atol = LOSS_TOL.get(dtype, (2e-5, 1e-6))
    torch.testing.assert_close(
        loss.to(torch.float64).cpu(), exp_loss.cpu(), rtol=rtol, atol=atol * max(1, n * c) ** 0.5
    )
    (g,) = torch.autograd.grad(loss.sum(), x)
    assert g.dtype == dtype and g.shape == x.shape
    rtol, atol = GRAD_TOL[dtype]
    torch.testing.assert_close(g.to(torch.float64).cpu(), exp_grad.cpu(), rtol=rtol, atol=atol)
    return loss, g


@pytest.mark.parametrize("backend,device", all_backend_params())
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
@pytest.mark.parametrize("n,c", [(0, 80), (1, 1), (7, 3), (37, 80)])
def test_parity_small(backend, device, dtype, reduction, n, c):
    check(backend, device, n, c, dtype, reduction)


@pytest.mark.needs_ext
@pytest.mark.parametrize("isa", ["baseline", "auto"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.float64])
@pytest.mark.parametrize("gamma", [2.0, 1.5])
def test_cpu_instruction_set_variants(monkeypatch, isa, dtype, gamma):
    """The CPU kernel has a baseline and an AVX2+FMA build of its loops (csrc/cpu/isa.h): both must be right.
    SOLO_CPU_ISA=baseline forces the baseline one; "auto" takes AVX2 where the CPU has it."""
    set_cpu_isa(monkeypatch, isa)
    for reduction in ("none", "sum"):
        check("cpu", "cpu", 173, 80, dtype, reduction, gamma=gamma)


@pytest.mark.parametrize("backend,device", all_backend_params(triton=False))
@pytest.mark.parametrize("n", [7744, 61952])
def test_parity_solo_sizes(backend, device, n):
    """2 and 16 images of SOLO's 3872 grid cells, 80 classes."""
    check(backend, device, n, 80, torch.float32, "sum", ignore=0.0, background=0.98)


@pytest.mark.parametrize("backend,device", all_backend_params())
@pytest.mark.parametrize("alpha,gamma", [(0.25, 0.0), (0.5, 1.0), (0.25, 1.5), (0.75, 3.0)])
def test_other_alpha_gamma(backend, device, alpha, gamma):
    check(backend, device, 13, 5, torch.float32, "none", alpha=alpha, gamma=gamma)


@pytest.mark.parametrize("backend,device", all_backend_params())
def test_extreme_logits_stay_finite(backend, device):
    """|x| up to 1e4: the naive log(sigmoid) would give inf or NaN."""
    x = torch.tensor([[-1e4, -100.0, -30.0, -17.0, 0.0, 17.0, 30.0, 100.0, 1e4]] * 3, device=device)
    labels = torch.tensor([0, 8, 9], device=device)  # positive at -1e4, positive at 1e4, background
    x.requires_grad_(True)
    loss = solo.ops.sigmoid_focal_loss(x, labels, reduction="none", backend=backend)
    (g,) = torch.autograd.grad(loss.sum(), x)
    assert torch.isfinite(loss).all() and torch.isfinite(g).all()
    exp_loss, exp_grad = reference64(x, labels, 0.25, 2.0, "none")
    torch.testing.assert_close(loss.double().cpu(), exp_loss.cpu(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(g.double().cpu(), exp_grad.cpu(), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("backend,device", all_backend_params())
def test_ignored_rows_have_no_loss_and_zero_grad(backend, device):
    x, labels = make_inputs(11, 4, device, torch.float32)
    labels[::2] = -1
    labels[1] = -7
    x.requires_grad_(True)
    loss = solo.ops.sigmoid_focal_loss(x, labels, reduction="none", backend=backend)
    (g,) = torch.autograd.grad(loss.sum(), x)
    ignored = (labels < 0).cpu()
    assert (loss.cpu()[ignored] == 0).all() and (g.cpu()[ignored] == 0).all()
    assert (loss.cpu()[~ignored] > 0).all()
    # mean divides by the non-ignored elements only
    mean = solo.ops.sigmoid_focal_loss(x, labels, reduction="mean", backend=backend)
    torch.testing.assert_close(mean, loss.sum() / (int((~ignored).sum()) * 4), rtol=1e-6, atol=0)


@pytest.mark.parametrize("backend,device", all_backend_params())
def test_all_ignored_mean_is_zero(backend, device):
    x = torch.randn(5, 3, device=device, requires_grad=True)
    labels = torch.full((5,), -1, device=device)
    loss = solo.ops.sigmoid_focal_loss(x, labels, reduction="mean", backend=backend)
    loss.backward()
    assert loss.item() == 0 and (x.grad == 0).all()


@pytest.mark.parametrize("backend,device", all_backend_params())
@pytest.mark.parametrize("layout", ["transposed", "strided"])
def test_non_contiguous(backend, device, layout):
    x, labels = make_inputs(19, 6, device, torch.float32)
    if layout == "transposed":
        xs = x.t().contiguous().t()
    else:
        xs = torch.zeros(19, 12, device=device)[:, ::2]
        xs.copy_(x)
    assert not xs.is_contiguous()
    lab = torch.stack([labels, labels], 1)[:, 0]
    xs.requires_grad_(True)
    loss = solo.ops.sigmoid_focal_loss(xs, lab, reduction="sum", backend=backend)
    (g,) = torch.autograd.grad(loss, xs)
    exp_loss, exp_grad = reference64(x, labels, 0.25, 2.0, "sum")
    torch.testing.assert_close(loss.double().cpu(), exp_loss.cpu(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(g.double().cpu(), exp_grad.cpu(), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("backend,device", all_backend_params())
def test_no_grad_and_detached(backend, device):
    x, labels = make_inputs(9, 4, device, torch.float32)
    with torch.no_grad():
        a = solo.ops.sigmoid_focal_loss(x.requires_grad_(True), labels, backend=backend)
    b = solo.ops.sigmoid_focal_loss(x.detach(), labels, backend=backend)
    assert not a.requires_grad and not b.requires_grad
    torch.testing.assert_close(a, b)


@pytest.mark.parametrize("backend,device", all_backend_params())
def test_sum_is_deterministic(backend, device):
    x, labels = make_inputs(3001, 7, device, torch.float32)
    a = solo.ops.sigmoid_focal_loss(x, labels, backend=backend)
    b = solo.ops.sigmoid_focal_loss(x, labels, backend=backend)
    assert torch.equal(a, b)


@pytest.mark.needs_ext
def test_cpu_sum_independent_of_thread_count():
    x, labels = make_inputs(20000, 80, "cpu", torch.float32)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        a = solo.ops.sigmoid_focal_loss(x, labels, backend="cpu")
    finally:
        torch.set_num_threads(threads)
    b = solo.ops.sigmoid_focal_loss(x, labels, backend="cpu")
    assert torch.equal(a, b)


@pytest.mark.parametrize("backend,device", backend_params("cpu"))
def test_gradcheck_float64(backend, device):
    if backend == "triton":
        pytest.skip("triton computes in fp32 (float64 support is for the reference and cpu backends)")
    x, labels = make_inputs(6, 4, device, torch.float64, scale=2.0)
    x.requires_grad_(True)
    for reduction in ("none", "sum", "mean"):
        torch.autograd.gradcheck(
            lambda t, reduction=reduction: solo.ops.sigmoid_focal_loss(
                t, labels, 0.25, 2.0, reduction, backend=backend
            ),
            (x,),
        )
    torch.autograd.gradcheck(lambda t: solo.ops.sigmoid_focal_loss(t, labels, 0.4, 1.5, "sum", backend=backend), (x,))


def _namespaces():
    from solo.ops import _registry

    return [pytest.param(ns, id=ns) for ns in _registry.namespaces()] or [
        pytest.param("solo", marks=pytest.mark.skip(reason="no compiled or triton ops here"))
    ]


@pytest.mark.parametrize("ns", _namespaces())
def test_opcheck(ns):
    op = getattr(torch.ops, ns).sigmoid_focal_loss_fwd.default
    device = "cuda" if CUDA_FOR(ns) else "cpu"
    x, labels = make_inputs(10, 5, device, torch.float32)
    for reduction in (0, 1):
        for compute_grad in (False, True):
            xr = x.clone().requires_grad_(compute_grad)
            torch.library.opcheck(op, (xr, labels, 0.25, 2.0, reduction, compute_grad))


def CUDA_FOR(ns):
    return torch.cuda.is_available() and (ns == "solo_triton" or solo.ops.available_backends("cuda")["cuda"][0])


@pytest.mark.parametrize("backend,device", [p for p in all_backend_params() if p.id.split("-")[0] != "reference"])
def test_torch_compile_fullgraph(backend, device):
    x, labels = make_inputs(64, 8, device, torch.float32)

    def step(logits, lab):
        return solo.ops.sigmoid_focal_loss(logits, lab, 0.25, 2.0, "mean", backend=backend) * 3

    torch._dynamo.reset()
    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    a, b = compiled(xa, labels), step(xb, labels)
    a.backward()
    b.backward()
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(xa.grad, xb.grad)


@pytest.mark.needs_ext
def test_torch_compile_inductor_training_step():
    """A small head + loss under the default (inductor) compiler, fullgraph: the op is traced, not a graph break."""
    torch._dynamo.reset()
    lin = torch.nn.Linear(16, 80)
    feats = torch.randn(128, 16)
    labels = make_inputs(128, 80, "cpu", torch.float32)[1]

    def step(f, lab):
        return solo.ops.sigmoid_focal_loss(lin(f), lab, reduction="sum", backend="cpu")

    compiled = torch.compile(step, fullgraph=True)
    loss_c = compiled(feats, labels)
    loss_c.backward()
    g_c = lin.weight.grad.clone()
    lin.weight.grad = None
    loss_e = step(feats, labels)
    loss_e.backward()
    torch.testing.assert_close(loss_c, loss_e, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(g_c, lin.weight.grad, rtol=1e-5, atol=1e-6)


# --- errors -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["reference", pytest.param("cpu", marks=pytest.mark.needs_ext)])
def test_bad_inputs_name_the_argument(backend):
    x = torch.randn(4, 3)
    lab = torch.tensor([0, 1, 3, -1])
    f = solo.ops.sigmoid_focal_loss
    with pytest.raises(ValueError, match="logits must be 2-D"):
        f(x[0], lab, backend=backend)
    with pytest.raises(ValueError, match="labels must be int64"):
        f(x, lab.int(), backend=backend)
    with pytest.raises(ValueError, match="labels must have shape"):
        f(x, lab[:3], backend=backend)
    with pytest.raises(ValueError, match="logits must be float"):
        f(x.int(), lab, backend=backend)
    with pytest.raises(ValueError, match="reduction must be one of"):
        f(x, lab, reduction="avg", backend=backend)
    with pytest.raises(ValueError, match="gamma must be"):
        f(x, lab, gamma=-1.0, backend=backend)
    with pytest.raises(ValueError, match="got a label 4"):
        f(x, torch.tensor([0, 4, 1, 1]), backend=backend)
    with pytest.raises(ValueError, match="backend must be one of"):
        f(x, lab, backend="fast")
    with pytest.raises(ValueError, match="logits must be a torch.Tensor"):
        f(x.tolist(), lab, backend=backend)


@pytest.mark.needs_ext
def test_cpp_kernel_checks_labels_itself():
    with pytest.raises(RuntimeError, match=r"labels\[1\] = 9"):
        torch.ops.solo.sigmoid_focal_loss_fwd(torch.randn(2, 3), torch.tensor([0, 9]), 0.25, 2.0, 1, False)
    with pytest.raises(RuntimeError, match="reduction must be 0"):
        torch.ops.solo.sigmoid_focal_loss_fwd(torch.randn(2, 3), torch.tensor([0, 1]), 0.25, 2.0, 2, False)


@pytest.mark.needs_cuda
def test_device_mismatch():
    with pytest.raises(ValueError, match="labels is on"):
        solo.ops.sigmoid_focal_loss(torch.randn(2, 3, device="cuda"), torch.tensor([0, 1]))
