"""The detector (SOLO_SPEC.md §2, §7-§9): presets build, preprocessing, a training step of every head type (finite
losses, gradients everywhere, edge cases, backend parity, autocast) and inference (shapes, empty results, parity)."""

import dataclasses
import os

import pytest
import torch

from solo.configs import DCN_PRESETS, PRESETS, get_config
from solo.models import SOLODetector, build_model
from solo.models import detector as detector_mod
from solo.models.detector import mask_boxes, rescale_size
from solo.ops import available_backends
from tests._model_helpers import small_cfg
from tests.conftest import all_backend_params

HEAD_TYPES = ("solo", "decoupled_solo", "decoupled_solo_light", "solov2", "solov2_light")
TRITON_OK = available_backends("cpu")["triton"][0] and os.environ.get("TRITON_INTERPRET", "0") == "1"


def make_model(head: str, backend: str | None = None, seed: int = 0, **kw) -> SOLODetector:
    torch.manual_seed(seed)
    return build_model(small_cfg(head, **kw), backend=backend)


def clone_model(model: SOLODetector, backend: str) -> SOLODetector:
    other = SOLODetector(model.cfg, backend=backend)
    other.load_state_dict(model.state_dict())
    other.train(model.training)
    return other


def make_batch(sizes=((90, 120), (70, 64)), instances=2, seed=1):
    """Random images of the given sizes with `instances` rectangle-and-blob masks each, labels cycling 0..2."""
    g = torch.Generator().manual_seed(seed)
    images, targets = [], []
    for h, w in sizes:
        images.append(torch.rand(3, h, w, generator=g) * 255)
        masks = torch.zeros(instances, h, w, dtype=torch.uint8)
        for k in range(instances):
            y0 = int(torch.randint(0, h // 2, (1,), generator=g))
            x0 = int(torch.randint(0, w // 2, (1,), generator=g))
            hh = int(torch.randint(6, h - y0, (1,), generator=g))
            ww = int(torch.randint(6, w - x0, (1,), generator=g))
            masks[k, y0 : y0 + hh, x0 : x0 + ww] = 1
        labels = torch.arange(instances, dtype=torch.int64) % 3
        targets.append({"masks": masks, "labels": labels})
    return images, targets


def train_step(model, images, targets):
    model.train()
    model.zero_grad(set_to_none=True)
    losses = model(images, targets)
    losses["loss"].backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
    return losses, grads


def assert_finite_step(losses, grads):
    assert set(losses) == {"loss_cate", "loss_mask", "loss"}
    for k, v in losses.items():
        assert v.dim() == 0 and v.dtype == torch.float32 and torch.isfinite(v), (k, v)
    torch.testing.assert_close(losses["loss"], losses["loss_cate"] + losses["loss_mask"])
    missing = [n for n, g in grads.items() if g is None]
    assert not missing, f"no gradient for {missing[:5]}"
    bad = [n for n, g in grads.items() if not torch.isfinite(g).all()]
    assert not bad, f"non-finite gradient for {bad[:5]}"


def force_detections(model: SOLODetector, seed: int = 3) -> SOLODetector:
    """Re-initialise the output convs so that a random-weight model produces many candidates with structured masks."""
    g = torch.Generator().manual_seed(seed)
    head = model.bbox_head
    with torch.no_grad():
        outs = []
        for name in ("solo_ins_list", "dsolo_ins_list_x", "dsolo_ins_list_y"):
            outs += list(getattr(head, name, []))
        if hasattr(head, "solo_kernel"):
            outs.append(head.solo_kernel)
        for conv in outs:
            # moderate logits (not saturated sigmoids) so that few resized probabilities sit exactly on 0.5
            conv.weight.copy_(
                torch.randn(conv.weight.shape, generator=g)
                * (0.1 if conv is outs[-1] and hasattr(head, "solo_kernel") else 0.5)
            )
            conv.bias.copy_(torch.randn(conv.bias.shape, generator=g))
        cate = head.solo_cate if hasattr(head, "solo_cate") else head.dsolo_cate
        cate.weight.copy_(torch.randn(cate.weight.shape, generator=g) * 0.3)
        cate.bias.zero_()
    return model


# ---------------------------------------------------------------------------------------------------- building


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_builds(name):
    cfg = get_config(name).model
    model = build_model(name)
    assert isinstance(model, SOLODetector) and model.cfg == cfg
    top = [n for n, _ in model.named_children()]
    expected = ["backbone", "neck", "mask_feat_head", "bbox_head"] if "solov2" in cfg.head else ["backbone", "neck"]
    assert top == expected + ([] if "solov2" in cfg.head else ["bbox_head"])
    assert model.bbox_head.num_classes == cfg.num_classes
    assert not any(k.startswith(("pixel_mean", "pixel_std")) for k in model.state_dict())


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_trains_a_step_and_decodes(name):
    """Every preset, at its real architecture (depth, towers, grids, E), trains one step and decodes; only the
    input scale is reduced (to 128 x 96) so the test stays fast on a CPU."""
    cfg = dataclasses.replace(get_config(name).model, train_scales=((128, 96),), test_scale=(128, 96))
    torch.manual_seed(0)
    model = build_model(cfg, backend="cpu" if available_backends("cpu")["cpu"][0] else "reference")
    images, targets = make_batch()
    targets = [{**t, "labels": t["labels"] % cfg.num_classes} for t in targets]
    model.train()
    losses = model(images, targets)
    assert set(losses) == {"loss_cate", "loss_mask", "loss"}
    assert all(torch.isfinite(v) for v in losses.values())
    losses["loss"].backward()
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert trainable and all(p.grad is not None and torch.isfinite(p.grad).all() for p in trainable)
    model.eval()
    with torch.no_grad():
        results = model(images)
    assert len(results) == len(images)
    for res, img in zip(results, images):
        k = res["labels"].shape[0]
        assert res["masks"].shape == (k, *img.shape[1:]) and res["masks"].dtype == torch.bool
        assert res["scores"].shape == (k,) and res["boxes"].shape == (k, 4)


@pytest.mark.parametrize("name", DCN_PRESETS)
def test_dcn_presets_raise(name):
    with pytest.raises(NotImplementedError, match="deformable"):
        build_model(name)
    with pytest.raises(NotImplementedError, match="DCN"):
        SOLODetector(dataclasses.replace(get_config("solov2_r50_1x").model, dcn=True))


def test_build_model_inputs():
    cfg = get_config("solov2_light_448_r18_3x")
    assert build_model(cfg).cfg == cfg.model
    m = build_model(cfg.model, num_classes=7, backend="reference")
    assert m.cfg.num_classes == 7 and m.backend == "reference"
    assert m.bbox_head.solo_cate.weight.shape[0] == 7
    with pytest.raises(TypeError, match="preset name"):
        build_model(3)
    with pytest.raises(ValueError, match="unknown preset"):
        build_model("solo_r1000")


# ---------------------------------------------------------------------------------------------------- preprocessing


def test_rescale_size():
    assert rescale_size(427, 640, (1333, 800)) == (800, 1199)  # SPEC §4 worked example
    assert rescale_size(640, 427, (1333, 800)) == (1199, 800)
    assert rescale_size(500, 2000, (1333, 800)) == (333, 1333)  # long side bound
    assert rescale_size(100, 100, (768, 448)) == (448, 448)


def test_mask_boxes():
    m = torch.zeros(3, 10, 12, dtype=torch.bool)
    m[0, 2:5, 3:9] = True
    m[1, 9, 11] = True
    boxes = mask_boxes(m)
    assert boxes.dtype == torch.float32
    torch.testing.assert_close(boxes, torch.tensor([[3.0, 2, 9, 5], [11, 9, 12, 10], [0, 0, 0, 0]]))
    assert mask_boxes(m[:0]).shape == (0, 4)
    torch.testing.assert_close(mask_boxes(m.to(torch.uint8) * 255), boxes)


def test_preprocess():
    model = make_model("solo")
    model.train()
    images, targets = make_batch(sizes=((90, 120), (60, 40)))
    batch, sizes, masks, counts = model.preprocess(images, targets)
    assert sizes == [(96, 128), (128, 85)]  # 60x40: factor min(128 / 60, 96 / 40)
    assert batch.shape == (2, 3, 128, 128) and masks.shape == (4, 128, 128) and counts == [2, 2]
    assert (batch[0, :, 96:] == 0).all() and (masks[:2, 96:] == 0).all()
    assert (batch[1, :, :, 85:] == 0).all() and (masks[2:, :, 85:] == 0).all()
    mean = torch.tensor(model.cfg.pixel_mean).view(3, 1, 1)
    std = torch.tensor(model.cfg.pixel_std).view(3, 1, 1)
    small = torch.nn.functional.interpolate(images[1][None], size=(128, 85), mode="bilinear", align_corners=False)[0]
    torch.testing.assert_close(batch[1, :, :, :85], (small - mean) / std)
    near = torch.nn.functional.interpolate(targets[0]["masks"][None], size=(96, 128), mode="nearest")[0]
    assert torch.equal(masks[:2, :96], near)
    # canvas padded to a multiple of 32
    b2, s2, _, _ = make_model("solo", test_scale=(100, 70)).eval().preprocess([torch.rand(3, 70, 100)])
    assert s2 == [(70, 100)] and b2.shape[-2:] == (96, 128)


def test_multiscale_training_sizes():
    """Training picks one of train_scales per image at random (torch's generator); eval always uses test_scale."""
    model = make_model("solo", train_scales=((128, 96), (160, 64)), test_scale=(200, 150))
    img = [torch.rand(3, 90, 120)]
    torch.manual_seed(0)
    seen = [tuple(model.train().preprocess(img)[1][0]) for _ in range(30)]
    assert set(seen) == {(96, 128), (64, 85)}
    torch.manual_seed(0)
    assert [tuple(model.preprocess(img)[1][0]) for _ in range(30)] == seen
    assert model.eval().preprocess(img)[1] == [(150, 200)]


def test_bad_inputs():
    model = make_model("solo")
    images, targets = make_batch()
    with pytest.raises(ValueError, match="needs targets"):
        model.train()(images)
    with pytest.raises(ValueError, match="targets"):
        model(images, targets[:1])
    with pytest.raises(ValueError, match=r"\[3, H, W\]"):
        model(
            [torch.rand(1, 30, 30)],
            [{"masks": torch.zeros(0, 30, 30, dtype=torch.uint8), "labels": torch.zeros(0, dtype=torch.int64)}],
        )
    with pytest.raises(ValueError, match="masks"):
        model([images[0]], [{"masks": targets[1]["masks"], "labels": targets[1]["labels"]}])


# ---------------------------------------------------------------------------------------------------- training


@pytest.mark.parametrize("head", HEAD_TYPES)
def test_train_step(head):
    model = make_model(head, backend="cpu")
    losses, grads = train_step(model, *make_batch())
    assert_finite_step(losses, grads)
    assert losses["loss_mask"] > 0 and losses["loss_cate"] > 0
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    assert frozen and all(n.startswith(("backbone.conv1", "backbone.bn1", "backbone.layer1")) for n in frozen)


@pytest.mark.parametrize("head", HEAD_TYPES)
def test_train_no_instances(head):
    model = make_model(head)
    images, targets = make_batch(instances=0)
    losses, grads = train_step(model, images, targets)
    assert_finite_step(losses, grads)
    assert losses["loss_mask"] == 0
    # all cells are background: loss_cate = focal sum / (0 + 1)
    assert losses["loss_cate"] > 0


@pytest.mark.parametrize("head", ["solo", "decoupled_solo", "solov2"])
def test_train_zero_positives(head):
    """Instances that make no positive (an empty mask; a scale outside every range): zero mask loss, no NaN."""
    model = make_model(head, scale_ranges=((1, 2), (1, 2), (1, 2), (1, 2), (1, 2)))
    images, targets = make_batch(instances=2)
    targets[0]["masks"][0].zero_()
    losses, grads = train_step(model, images, targets)
    assert_finite_step(losses, grads)
    assert losses["loss_mask"] == 0
    mask_grads = [g for n, g in grads.items() if "ins_convs" in n or "kernel_convs" in n]
    assert mask_grads and all((g == 0).all() for g in mask_grads)


@pytest.mark.parametrize("head", HEAD_TYPES)
def test_train_one_instance_and_mixed_sizes(head):
    model = make_model(head)
    images, targets = make_batch(sizes=((64, 64),), instances=1)
    assert_finite_step(*train_step(model, images, targets))
    images, targets = make_batch(sizes=((100, 80), (64, 128), (128, 72)), instances=3, seed=5)
    targets[1] = {"masks": targets[1]["masks"][:0], "labels": targets[1]["labels"][:0]}  # an image without instances
    assert_finite_step(*train_step(model, images, targets))


def test_loss_normalisation():
    """loss_cate = focal sum over every cell / (positive cells + 1); loss_mask = 3 x mean Dice over positives."""
    from solo import ops

    model = make_model("solo", backend="reference")
    images, targets = make_batch()
    model.train()
    losses = model(images, targets)
    batch, _, masks, counts = model.preprocess(images, targets)
    labels = torch.cat([t["labels"] for t in targets])
    ids = torch.repeat_interleave(torch.arange(2), torch.tensor(counts))
    cfg = model.cfg
    gt = ops.assign_grid_targets(
        masks, mask_boxes(masks.bool()), labels, ids, 2, cfg.num_grids, cfg.scale_ranges, cfg.sigma, 3, mode="solo"
    )
    masks_out, cates = model.forward_features(batch)
    logits = torch.cat([c.permute(0, 2, 3, 1).reshape(2, -1, 3) for c in cates], 1).reshape(-1, 3)
    npos = int((gt.labels != 3).sum())
    assert npos > 0
    focal = ops.sigmoid_focal_loss(logits, gt.labels.reshape(-1), reduction="sum")
    torch.testing.assert_close(losses["loss_cate"], focal / (npos + 1), rtol=1e-5, atol=1e-7)
    # dice over positives, one per positive cell, at head resolution
    total = sum(s * s for s in cfg.num_grids)
    offsets = torch.tensor([0, 64, 100, 125, 141, 150])
    dice = []
    for c, inst in zip(gt.pos_cells.tolist(), gt.pos_instances.tolist(), strict=True):
        b, cell = divmod(c, total)
        lv = int(torch.searchsorted(offsets, cell, right=True)) - 1
        pred = masks_out[lv][b, cell - offsets[lv]]
        stride = batch.shape[-2] // pred.shape[0]
        tgt = ops.downsample_masks(masks, stride)[inst]
        dice.append(ops.dice_loss(pred[None], tgt[None]))
    torch.testing.assert_close(losses["loss_mask"], torch.cat(dice).mean() * 3, rtol=1e-5, atol=1e-7)


def _parity(head, backend, device="cpu", sizes=((90, 120), (70, 64)), instances=3):
    ref = make_model(head, backend="reference").to(device)
    other = clone_model(ref, backend).to(device)
    batch = make_batch(sizes=sizes, instances=instances)
    l_ref, g_ref = train_step(ref, *batch)
    l_oth, g_oth = train_step(other, *batch)
    for k in l_ref:
        torch.testing.assert_close(l_oth[k], l_ref[k], rtol=1e-5, atol=1e-7)
    # On a GPU the weight gradients of convolutions are accumulated in a run-dependent order.
    tol = 1e-4 if device == "cpu" else 1e-3
    for n, g in g_ref.items():
        scale = g.abs().max().item() + 1e-12
        torch.testing.assert_close(g_oth[n], g, rtol=tol, atol=tol * scale, msg=lambda m, n=n: f"{n}: {m}")


# Every fused backend on its device (cpu on CPU; cuda and triton on a GPU). Triton on CPU runs interpreted: below.
FUSED = [p for p in all_backend_params() if p.values[0] != "reference" and p.values[:2] != ("triton", "cpu")]


@pytest.mark.parametrize("backend,device", FUSED)
@pytest.mark.parametrize("head", HEAD_TYPES)
def test_train_parity(head, backend, device):
    """Same weights and batch: the same losses (1e-5 relative) and gradients as the reference backend."""
    _parity(head, backend, device)


@pytest.mark.skipif(not TRITON_OK, reason="triton interpreter unavailable")
@pytest.mark.parametrize("head", ["solo", "solov2"])
def test_train_parity_triton_interpreted(head):
    _parity(head, "triton", sizes=((64, 64),), instances=2)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("head", ["solo", "decoupled_solo", "solov2"])
def test_train_autocast(head, dtype):
    model = make_model(head, backend="cpu")
    model.train()
    images, targets = make_batch()
    with torch.autocast("cpu", dtype=dtype):
        losses = model(images, targets)
    losses["loss"].backward()
    assert_finite_step(losses, {n: p.grad for n, p in model.named_parameters() if p.requires_grad})


# ---------------------------------------------------------------------------------------------------- inference


def check_results(results, images, num_classes=3, max_per_img=None):
    assert isinstance(results, list) and len(results) == len(images)
    for r, img in zip(results, images, strict=True):
        assert set(r) == {"masks", "labels", "scores", "boxes"}
        k = r["labels"].shape[0]
        assert r["masks"].shape == (k, *img.shape[-2:]) and r["masks"].dtype == torch.bool
        assert r["labels"].dtype == torch.int64 and r["scores"].dtype == torch.float32
        assert r["boxes"].shape == (k, 4) and r["boxes"].dtype == torch.float32
        assert r["scores"].shape == (k,)
        if k:
            assert (r["labels"] >= 0).all() and (r["labels"] < num_classes).all()
            assert (r["scores"][:-1] >= r["scores"][1:]).all()
            torch.testing.assert_close(r["boxes"], mask_boxes(r["masks"]))
            if max_per_img is not None:
                assert k <= max_per_img


@pytest.mark.parametrize("head", HEAD_TYPES)
def test_eval_empty(head):
    """A freshly initialised model scores every cell about 0.01 < score_thr: empty results, right shapes."""
    model = make_model(head).eval()
    images, _ = make_batch(sizes=((90, 120), (70, 64), (33, 47)))
    results = model(images)
    check_results(results, images)
    assert all(r["labels"].numel() == 0 for r in results)


@pytest.mark.parametrize("head", HEAD_TYPES)
def test_eval_detections(head):
    model = force_detections(make_model(head, backend="reference", max_per_img=20)).eval()
    images, _ = make_batch(sizes=((90, 120), (70, 64)))
    results = model(images)
    check_results(results, images, max_per_img=20)
    assert all(r["labels"].numel() > 0 for r in results)


@pytest.mark.parametrize("backend,device", FUSED)
@pytest.mark.parametrize("head", HEAD_TYPES)
def test_eval_parity(head, backend, device):
    model = force_detections(make_model(head, backend="reference", max_per_img=20)).eval().to(device)
    images, _ = make_batch(sizes=((90, 120), (70, 64)))
    ref = model(images)
    out = clone_model(model, backend).to(device)(images)
    check_results(out, images, max_per_img=20)
    for a, b in zip(out, ref, strict=True):
        assert a["masks"].device.type == device
        assert torch.equal(a["labels"], b["labels"])
        torch.testing.assert_close(a["scores"], b["scores"], rtol=1e-5, atol=1e-6)
        # paste_masks' fused backends may differ from the reference where the resized probability is within
        # 1e-5 of the threshold (e.g. exact 0.5 halfway between a 0 and a 1): allow a few such pixels.
        differ = (a["masks"] != b["masks"]).sum().item()
        assert differ <= 1e-3 * a["masks"].numel(), differ
        if differ == 0:
            torch.testing.assert_close(a["boxes"], b["boxes"])


def test_eval_chunked_masks_equal_one_pass(monkeypatch):
    """The bounded-memory candidate pass (chunks of cells, masks rebuilt after the nms_pre cut) gives the same
    results as building every candidate mask at once."""
    model = force_detections(make_model("decoupled_solo", nms_pre=15)).eval()
    images, _ = make_batch(sizes=((90, 120),))
    one = model(images)
    monkeypatch.setattr(detector_mod, "_MASK_CHUNK_ELEMS", 24 * 32 * 7)
    chunked = model(images)
    for a, b in zip(one, chunked, strict=True):
        assert torch.equal(a["labels"], b["labels"]) and torch.equal(a["masks"], b["masks"])
        torch.testing.assert_close(a["scores"], b["scores"])


def test_eval_score_threshold_and_nms_pre():
    model = force_detections(make_model("solo", nms_pre=5, max_per_img=3)).eval()
    images, _ = make_batch(sizes=((90, 120),))
    r = model(images)[0]
    assert 0 < r["labels"].numel() <= 3
    assert (r["scores"] >= model.cfg.update_thr).all()
    none = force_detections(make_model("solo", score_thr=0.9999)).eval()(images)[0]
    assert none["masks"].shape == (0, 90, 120)


@pytest.mark.parametrize("head", ["solo", "decoupled_solo", "solov2"])
def test_eval_autocast(head):
    model = force_detections(make_model(head)).eval()
    images, _ = make_batch()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        results = model(images)
    check_results(results, images)


def test_train_masks_any_nonzero_value():
    """Target masks are binary by nonzero-ness: 0/255 or bool masks give the losses of 0/1 masks."""
    model = make_model("solo", backend="reference")
    images, targets = make_batch()
    ref = model.train()(images, targets)
    for conv in (lambda m: m * 255, lambda m: m.bool()):
        other = [{"masks": conv(t["masks"]), "labels": t["labels"]} for t in targets]
        got = model(images, other)
        for k in ref:
            torch.testing.assert_close(got[k], ref[k])


@pytest.mark.parametrize("head", HEAD_TYPES)
def test_channels_last_model(head):
    """``model.to(memory_format=torch.channels_last)`` (python -m solo.train's default on the CPU): the same losses
    and gradients (to convolution rounding) and the same detections as the contiguous model."""
    ref = make_model(head)
    cl = clone_model(ref, ref.backend).to(memory_format=torch.channels_last)
    assert cl.backbone.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    batch = make_batch(instances=3)
    l_ref, g_ref = train_step(ref, *batch)
    l_cl, g_cl = train_step(cl, *batch)
    for k in l_ref:
        torch.testing.assert_close(l_cl[k], l_ref[k], rtol=1e-4, atol=1e-6)
    for n, g in g_ref.items():
        scale = g.abs().max().item() + 1e-12
        torch.testing.assert_close(g_cl[n], g, rtol=1e-3, atol=1e-3 * scale, msg=lambda m, n=n: f"{n}: {m}")
    ref = force_detections(ref).eval()
    cl = clone_model(ref, ref.backend).to(memory_format=torch.channels_last).eval()
    images, _ = make_batch(sizes=((90, 120), (70, 64)))
    for a, b in zip(cl(images), ref(images), strict=True):
        assert torch.equal(a["labels"], b["labels"])
        torch.testing.assert_close(a["scores"], b["scores"], rtol=1e-4, atol=1e-5)
        assert (a["masks"] != b["masks"]).float().mean() < 1e-3
