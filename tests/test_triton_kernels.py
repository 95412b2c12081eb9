"""Direct checks of the Triton kernels (torch.ops.solo_triton.*) against float64 pure-torch references.

Without a GPU the kernels run on CPU tensors under TRITON_INTERPRET=1, which must be set before triton is first
imported (tests/conftest.py does it for the whole session; the line below covers running this file alone).
Shapes are kept small because the interpreter runs each Triton program in numpy.
"""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import importlib

import pytest

triton = pytest.importorskip("triton", reason="triton is not installed")
tl = triton.language

try:
    _focal_mod = importlib.import_module("solo.ops._triton_focal_loss")
    _dice_mod = importlib.import_module("solo.ops._triton_dice_loss")
except ImportError as exc:  # pragma: no cover - depends on the environment
    pytest.skip(f"solo triton kernels unavailable: {exc}", allow_module_level=True)

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
if DEVICE == "cpu" and not _focal_mod._is_interpreted():
    pytest.skip(
        "no GPU and triton was imported before TRITON_INTERPRET=1 was set: set it in conftest.py",
        allow_module_level=True,
    )

focal_op = torch.ops.solo_triton.sigmoid_focal_loss_fwd
dice_fwd_op = torch.ops.solo_triton.dice_loss_fwd
dice_bwd_op = torch.ops.solo_triton.dice_loss_bwd

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
# Tolerances of a value stored in `dtype` (gradients) against the float64 reference computed from the same,
# already-rounded inputs: fp32 math inside, so the error is the fp32 arithmetic plus one output rounding.
GRAD_TOL = {
    torch.float32: {"rtol": 1e-4, "atol": 1e-6},
    torch.float16: {"rtol": 2e-3, "atol": 1e-5},
    torch.bfloat16: {"rtol": 1.6e-2, "atol": 1e-5},
    torch.float64: {"rtol": 1e-9, "atol": 1e-12},
}
# Losses and sums are float32 (float64 for float64 logits) whatever the logits dtype.
LOSS_TOL = {"rtol": 1e-5, "atol": 1e-6}
LOSS_TOL64 = {"rtol": 1e-10, "atol": 1e-12}


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ----------------------------------------------------------------------------------------------------------------
# sigmoid focal loss
# ----------------------------------------------------------------------------------------------------------------


def focal_reference(logits: torch.Tensor, labels: torch.Tensor, alpha: float, gamma: float):
    """Elementwise loss [N, C] and its derivative, float64 (torchvision formulation + autograd)."""
    x = logits.detach().to(torch.float64).requires_grad_(True)
    _n, c = x.shape
    t = (labels[:, None] == torch.arange(c, device=labels.device)[None, :]).to(torch.float64)
    p = torch.sigmoid(x)
    q = torch.sigmoid(-x)  # 1 - p without cancellation
    # -log(p) = softplus(-x), -log(1-p) = softplus(x); torch's BCE-with-logits rounds log(1 + 1e-18) to 0.
    sp = torch.nn.functional.softplus
    ce = t * sp(-x) + (1 - t) * sp(x)
    one_minus_pt = q * t + p * (1 - t)
    w = alpha * t + (1 - alpha) * (1 - t)
    loss = w * one_minus_pt.pow(gamma) * ce
    loss = loss * (labels >= 0).to(torch.float64)[:, None]
    (grad,) = torch.autograd.grad(loss.sum(), x) if loss.numel() else (torch.zeros_like(x),)
    return loss.detach(), grad


def _labels(n: int, c: int, seed: int) -> torch.Tensor:
    # Mix of positives 0..C-1, background C and ignored -1.
    labels = torch.randint(-1, c + 1, (n,), generator=_gen(seed))
    return labels.to(DEVICE)


def _logits(shape, dtype, seed, scale=3.0):
    return (torch.randn(shape, generator=_gen(seed), dtype=torch.float64) * scale).to(dtype).to(DEVICE)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("n,c", [(0, 3), (1, 1), (1, 80), (7, 3), (7, 80), (37, 1), (37, 3), (37, 80)])
@pytest.mark.parametrize("reduction", [0, 1])
def test_focal_matches_reference(n, c, dtype, reduction):
    alpha, gamma = 0.25, 2.0
    x = _logits((n, c), dtype, seed=n * 131 + c)
    labels = _labels(n, c, seed=n + 7 * c)
    loss, grad = focal_op(x, labels, alpha, gamma, reduction, True)
    ref_loss, ref_grad = focal_reference(x, labels, alpha, gamma)

    assert loss.dtype == torch.float32 and grad.dtype == dtype
    assert grad.shape == (n, c)
    if reduction == 0:
        assert loss.shape == (n, c)
        torch.testing.assert_close(loss.double().cpu(), ref_loss.cpu(), **LOSS_TOL)
    else:
        assert loss.shape == ()
        torch.testing.assert_close(loss.double().cpu(), ref_loss.sum().cpu(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(grad.double().cpu(), ref_grad.cpu(), **GRAD_TOL[dtype])


@pytest.mark.parametrize("gamma", [0.0, 1.0, 1.5, 2.0, 3.0])
@pytest.mark.parametrize("alpha", [0.25, 0.6])
def test_focal_gamma_alpha(gamma, alpha):
    x = _logits((13, 9), torch.float32, seed=3)
    labels = _labels(13, 9, seed=4)
    loss, grad = focal_op(x, labels, alpha, gamma, 0, True)
    ref_loss, ref_grad = focal_reference(x, labels, alpha, gamma)
    torch.testing.assert_close(loss.double().cpu(), ref_loss.cpu(), **LOSS_TOL)
    torch.testing.assert_close(grad.double().cpu(), ref_grad.cpu(), **GRAD_TOL[torch.float32])


def test_focal_float64():
    x = _logits((11, 5), torch.float64, seed=5)
    labels = _labels(11, 5, seed=6)
    for gamma in (2.0, 1.5):
        loss, grad = focal_op(x, labels, 0.3, gamma, 0, True)
        ref_loss, ref_grad = focal_reference(x, labels, 0.3, gamma)
        assert loss.dtype == torch.float64 and grad.dtype == torch.float64
        torch.testing.assert_close(loss.cpu(), ref_loss.cpu(), **LOSS_TOL64)
        torch.testing.assert_close(grad.cpu(), ref_grad.cpu(), **GRAD_TOL[torch.float64])
        total, _ = focal_op(x, labels, 0.3, gamma, 1, False)
        torch.testing.assert_close(total.cpu(), ref_loss.sum().cpu(), **LOSS_TOL64)


def test_focal_extreme_logits_are_finite_and_accurate():
    # |x| up to 100: the naive log(sigmoid) gives -inf / NaN here in fp32.
    vals = torch.tensor([-100.0, -40.0, -17.5, -5.0, -1e-3, 0.0, 1e-3, 5.0, 17.5, 40.0, 100.0])
    x = vals[None, :].repeat(3, 1).to(DEVICE)
    labels = torch.tensor([0, 9, 11], device=DEVICE)  # positive at -100, positive at 40, all background
    for gamma in (2.0, 1.5, 0.0):
        loss, grad = focal_op(x, labels, 0.25, gamma, 0, True)
        ref_loss, ref_grad = focal_reference(x, labels, 0.25, gamma)
        assert torch.isfinite(loss).all() and torch.isfinite(grad).all()
        torch.testing.assert_close(loss.double().cpu(), ref_loss.cpu(), rtol=1e-5, atol=1e-30)
        torch.testing.assert_close(grad.double().cpu(), ref_grad.cpu(), rtol=1e-5, atol=1e-30)


def test_focal_ignored_and_background_rows():
    x = _logits((4, 6), torch.float32, seed=8)
    labels = torch.tensor([-1, 6, -5, 2], device=DEVICE)
    loss, grad = focal_op(x, labels, 0.25, 2.0, 0, True)
    assert (loss[0] == 0).all() and (grad[0] == 0).all()
    assert (loss[2] == 0).all() and (grad[2] == 0).all()
    assert (loss[1] > 0).all() and (grad[1] > 0).all()  # background: every class negative, gradient pushes x down
    assert grad[3, 2] < 0
    all_ignored = torch.full((4,), -1, device=DEVICE)
    total, grad = focal_op(x, all_ignored, 0.25, 2.0, 1, True)
    assert total.item() == 0.0 and (grad == 0).all()


def test_focal_non_contiguous_inputs():
    base = _logits((80, 40), torch.float16, seed=9)
    x = base.t()[::2]  # [20, 80], strides (2, 40)
    labels_base = _labels(40, 80, seed=10)
    labels = labels_base[::2]
    assert not x.is_contiguous() and not labels.is_contiguous()
    loss, grad = focal_op(x, labels, 0.25, 2.0, 0, True)
    ref_loss, ref_grad = focal_reference(x, labels, 0.25, 2.0)
    assert grad.is_contiguous()
    torch.testing.assert_close(loss.double().cpu(), ref_loss.cpu(), **LOSS_TOL)
    torch.testing.assert_close(grad.double().cpu(), ref_grad.cpu(), **GRAD_TOL[torch.float16])


@pytest.mark.parametrize("reduction", [0, 1])
def test_focal_without_grad(reduction):
    x = _logits((7, 3), torch.bfloat16, seed=11)
    labels = _labels(7, 3, seed=12)
    loss, grad = focal_op(x, labels, 0.25, 2.0, reduction, False)
    assert grad.shape == (0,) and grad.dtype == torch.bfloat16
    ref_loss, _ = focal_reference(x, labels, 0.25, 2.0)
    expected = ref_loss if reduction == 0 else ref_loss.sum()
    torch.testing.assert_close(loss.double().cpu(), expected.cpu(), rtol=1e-5, atol=1e-6)


def test_focal_empty():
    for n, c in ((0, 80), (5, 0)):
        x = torch.empty((n, c), device=DEVICE)
        labels = torch.zeros((n,), dtype=torch.int64, device=DEVICE)
        loss, grad = focal_op(x, labels, 0.25, 2.0, 1, True)
        assert loss.shape == () and loss.item() == 0.0 and grad.shape == (n, c)
        loss, grad = focal_op(x, labels, 0.25, 2.0, 0, False)
        assert loss.shape == (n, c) and grad.shape == (0,)


def test_focal_sum_is_deterministic():
    x = _logits((37, 80), torch.float32, seed=13)
    labels = _labels(37, 80, seed=14)
    a, _ = focal_op(x, labels, 0.25, 2.0, 1, False)
    b, _ = focal_op(x, labels, 0.25, 2.0, 1, False)
    assert torch.equal(a, b)


def test_focal_rejects_bad_inputs():
    x = _logits((4, 3), torch.float32, seed=15)
    with pytest.raises(RuntimeError, match="int64"):
        focal_op(x, torch.zeros(4, dtype=torch.int32, device=DEVICE), 0.25, 2.0, 1, True)
    with pytest.raises(RuntimeError, match="labels"):
        focal_op(x, torch.zeros(5, dtype=torch.int64, device=DEVICE), 0.25, 2.0, 1, True)
    with pytest.raises(RuntimeError, match="logits"):
        focal_op(x.to(torch.int32), torch.zeros(4, dtype=torch.int64, device=DEVICE), 0.25, 2.0, 1, True)
    with pytest.raises(RuntimeError, match="reduction"):
        focal_op(x, torch.zeros(4, dtype=torch.int64, device=DEVICE), 0.25, 2.0, 2, True)


# ----------------------------------------------------------------------------------------------------------------
# Dice loss
# ----------------------------------------------------------------------------------------------------------------

EPS = 1e-3


def dice_reference(logits, targets, y_logits, eps, grad_loss):
    """Loss [P], sums [P, 3] and gradients, float64 via autograd."""
    x = logits.detach().to(torch.float64).requires_grad_(True)
    y = y_logits.detach().to(torch.float64).requires_grad_(True) if y_logits is not None else None
    t = targets.to(torch.float64)
    p = torch.sigmoid(x) if y is None else torch.sigmoid(x) * torch.sigmoid(y)
    a = (p * t).sum(1)
    b = (p * p).sum(1)
    c = (t * t).sum(1)
    loss = 1 - 2 * a / ((b + eps) + (c + eps))
    inputs = (x,) if y is None else (x, y)
    if loss.numel() and x.numel():
        grads = torch.autograd.grad(loss, inputs, grad_loss.to(torch.float64))
    else:
        grads = tuple(torch.zeros_like(v) for v in inputs)
    gx = grads[0]
    gy = grads[1] if y is not None else None
    return loss.detach(), torch.stack([a, b, c], 1).detach(), gx, gy


def _targets(shape, dtype, seed):
    if dtype in (torch.bool, torch.uint8):
        return (torch.rand(shape, generator=_gen(seed)) > 0.5).to(dtype).to(DEVICE)
    # Soft targets in [0, 1].
    return torch.rand(shape, generator=_gen(seed)).to(dtype).to(DEVICE)


def _check_dice(x, t, y, grad_loss, dtype):
    loss, sums = dice_fwd_op(x, t, y, EPS)
    acc = torch.float64 if dtype == torch.float64 else torch.float32
    assert loss.dtype == acc and sums.dtype == acc
    assert loss.shape == (x.shape[0],) and sums.shape == (x.shape[0], 3)
    ref_loss, ref_sums, ref_gx, ref_gy = dice_reference(x, t, y, EPS, grad_loss)
    loss_tol = LOSS_TOL64 if dtype == torch.float64 else LOSS_TOL
    torch.testing.assert_close(loss.double().cpu(), ref_loss.cpu(), **loss_tol)
    torch.testing.assert_close(sums.double().cpu(), ref_sums.cpu(), **loss_tol)

    gx, gy = dice_bwd_op(grad_loss, x, t, y, sums, EPS)
    assert gx.dtype == dtype and gx.shape == x.shape
    torch.testing.assert_close(gx.double().cpu(), ref_gx.cpu(), **GRAD_TOL[dtype])
    if y is None:
        assert gy.shape == (0,)
    else:
        assert gy.dtype == dtype and gy.shape == x.shape
        torch.testing.assert_close(gy.double().cpu(), ref_gy.cpu(), **GRAD_TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("p,length", [(0, 17), (1, 1), (1, 300), (3, 17), (5, 1), (5, 300)])
@pytest.mark.parametrize("decoupled", [False, True], ids=["plain", "decoupled"])
def test_dice_matches_reference(p, length, dtype, decoupled):
    seed = p * 1000 + length
    x = _logits((p, length), dtype, seed)
    y = _logits((p, length), dtype, seed + 1) if decoupled else None
    t = _targets((p, length), torch.bool, seed + 2)
    g = torch.randn(p, generator=_gen(seed + 3)).to(DEVICE)
    _check_dice(x, t, y, g, dtype)


@pytest.mark.parametrize("tdtype", [torch.bool, torch.uint8, torch.float32, torch.float16, torch.bfloat16], ids=str)
def test_dice_target_dtypes(tdtype):
    x = _logits((3, 37), torch.float32, 21)
    t = _targets((3, 37), tdtype, 22)
    g = torch.randn(3, generator=_gen(23)).to(DEVICE)
    _check_dice(x, t, None, g, torch.float32)
    _check_dice(x, t, _logits((3, 37), torch.float32, 24), g, torch.float32)


def test_dice_float64():
    x = _logits((3, 50), torch.float64, 31)
    y = _logits((3, 50), torch.float64, 32)
    t = _targets((3, 50), torch.float32, 33)
    g = torch.randn(3, generator=_gen(34), dtype=torch.float64).to(DEVICE)
    _check_dice(x, t, None, g, torch.float64)
    _check_dice(x, t, y, g, torch.float64)


def test_dice_non_contiguous_inputs_and_expanded_grad():
    xb = _logits((40, 6), torch.float16, 41)
    yb = _logits((6, 80), torch.float16, 42)
    x = xb.t()  # [6, 40]
    y = yb[:, ::2]  # [6, 40]
    t = _targets((40, 6), torch.uint8, 43).t()
    g = torch.ones((), device=DEVICE).expand(6)  # what loss.sum() sends back
    assert not (x.is_contiguous() or y.is_contiguous() or t.is_contiguous() or g.is_contiguous())
    _check_dice(x, t, None, g, torch.float16)
    _check_dice(x, t, y, g, torch.float16)


def test_dice_long_rows_split_and_many_rows():
    # L > 8192 exercises several split programs per row (and > 16 of them the finalize loop); P > 64 several
    # finalize programs.
    x = _logits((2, 8192 * 17 + 5), torch.float32, 51, scale=1.0)
    t = _targets(x.shape, torch.bool, 52)
    g = torch.randn(2, generator=_gen(53)).to(DEVICE)
    _check_dice(x, t, None, g, torch.float32)
    x = _logits((70, 3), torch.float32, 54)
    t = _targets(x.shape, torch.bool, 55)
    g = torch.randn(70, generator=_gen(56)).to(DEVICE)
    _check_dice(x, t, _logits((70, 3), torch.float32, 57), g, torch.float32)


def test_dice_empty_rows():
    for p, length in ((0, 0), (0, 5), (3, 0)):
        x = torch.empty((p, length), device=DEVICE)
        t = torch.empty((p, length), dtype=torch.bool, device=DEVICE)
        loss, sums = dice_fwd_op(x, t, None, EPS)
        assert loss.shape == (p,) and sums.shape == (p, 3)
        assert (loss == 1).all() and (sums == 0).all()
        gx, gy = dice_bwd_op(torch.ones(p, device=DEVICE), x, t, x, sums, EPS)
        assert gx.shape == (p, length) and gy.shape == (p, length)


def test_dice_is_deterministic():
    x = _logits((3, 8192 * 2 + 1), torch.float32, 61, scale=1.0)
    t = _targets(x.shape, torch.bool, 62)
    a = dice_fwd_op(x, t, None, EPS)
    b = dice_fwd_op(x, t, None, EPS)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_dice_rejects_bad_inputs():
    x = _logits((3, 5), torch.float32, 71)
    t = _targets((3, 5), torch.bool, 72)
    with pytest.raises(RuntimeError, match="targets"):
        dice_fwd_op(x, t[:, :4], None, EPS)
    with pytest.raises(RuntimeError, match="y_logits"):
        dice_fwd_op(x, t, x.half(), EPS)
    with pytest.raises(RuntimeError, match="targets"):
        dice_fwd_op(x, t.to(torch.int32), None, EPS)


@triton.jit
def _strided_sum_kernel(x_ptr, out_ptr, n, BLOCK: tl.constexpr):
    # A loop bounded by a runtime scalar argument, the pattern of the loss kernels (range(0, n_split, BLOCK_S)).
    acc = tl.zeros([BLOCK], dtype=tl.float32)
    for start in range(0, n, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        acc += tl.load(x_ptr + offs, mask=offs < n, other=0.0)
    tl.store(out_ptr, tl.sum(acc, axis=0))


@pytest.mark.parametrize("n", [1, 5, 16, 37])
def test_runtime_scalar_as_loop_bound(n):
    """Triton 3.6's interpreter cannot turn a scalar argument into a Python int under NumPy 2.4; solo's fix
    (solo/ops/_triton_common.py) is installed only where the interpreter has that bug."""
    from solo.ops import _triton_common

    x = torch.arange(n, dtype=torch.float32, device=DEVICE)
    out = torch.zeros(1, dtype=torch.float32, device=DEVICE)
    _strided_sum_kernel[(1,)](x, out, n, BLOCK=16)
    assert out.item() == n * (n - 1) / 2
    if DEVICE == "cpu":  # the fix is there exactly when Triton's own interpreter needs it, and it works
        from triton.runtime import interpreter

        assert _triton_common.INTERPRETER_INDEX_FIX == _triton_common._interpreter_scalar_index_is_broken()
        assert not _triton_common._interpreter_scalar_index_is_broken(interpreter._patch_lang_tensor)
