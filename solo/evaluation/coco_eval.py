"""COCO evaluation: run a model over a dataset, RLE-encode its masks, and score segm AP (and bbox AP from the mask
boxes) with pycocotools' COCOeval, gathering the predictions of every process on rank 0.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys

import torch

__all__ = ["METRIC_NAMES", "coco_metrics", "evaluate", "format_table", "predictions_to_coco"]

METRIC_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl")


def _rank_world() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def predictions_to_coco(result: dict, image_id: int, cat_ids) -> list[dict]:
    """One image's model output {masks bool [K, H, W], labels [K], scores [K], boxes [K, 4] x1y1x2y2} -> COCO
    result dicts (RLE ``segmentation`` with str counts, ``bbox`` xywh, ``category_id = cat_ids[label]``)."""
    from pycocotools import mask as mask_util

    masks = result["masks"]
    if masks.shape[0] == 0:
        return []
    # pycocotools wants uint8 [H, W, N] in Fortran order, i.e. the bytes of a C-order [N, W, H] array: one transposing
    # copy in torch, on the masks' device (bool is reinterpreted as uint8, no conversion pass), then a zero-copy
    # numpy view, and one encode call for all the masks of the image.
    m = masks.detach()
    m = m.view(torch.uint8) if m.dtype == torch.bool else (m != 0).view(torch.uint8)
    m = m.transpose(1, 2).contiguous().cpu().numpy().transpose(2, 1, 0)
    rles = mask_util.encode(m)
    labels = result["labels"].detach().cpu().tolist()
    scores = result["scores"].detach().float().cpu().tolist()
    boxes = result.get("boxes")
    if boxes is None:
        from solo.models.detector import mask_boxes

        boxes = mask_boxes(masks)
    boxes = boxes.detach().float().cpu().tolist()
    out = []
    for rle, label, score, (x1, y1, x2, y2) in zip(rles, labels, scores, boxes):
        rle["counts"] = rle["counts"].decode("ascii")
        out.append(
            {
                "image_id": int(image_id),
                "category_id": int(cat_ids[label]),
                "segmentation": rle,
                "bbox": [x1, y1, x2 - x1, y2 - y1],
                "score": float(score),
            }
        )
    return out


def coco_metrics(coco_gt, results: list[dict], img_ids=None, iou_types=("segm", "bbox"), verbose=False) -> dict:
    """COCOeval over ``results`` -> {"segm_AP", "segm_AP50", ..., "bbox_AP", ...} (fractions; 0.0 when there are
    no predictions or no ground truth for a metric)."""
    from pycocotools.cocoeval import COCOeval

    metrics = {f"{t}_{n}": 0.0 for t in iou_types for n in METRIC_NAMES}
    if not results:
        return metrics
    sink = contextlib.nullcontext() if verbose else contextlib.redirect_stdout(io.StringIO())
    with sink:
        coco_dt = coco_gt.loadRes(results)
        for t in iou_types:
            ev = COCOeval(coco_gt, coco_dt, t)
            if img_ids is not None:
                ev.params.imgIds = sorted(set(img_ids))
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
            for n, v in zip(METRIC_NAMES, ev.stats[:6]):
                metrics[f"{t}_{n}"] = max(float(v), 0.0)  # COCOeval reports -1 where there is no ground truth
    return metrics


def format_table(metrics: dict) -> str:
    """A small text table of the metrics in percent."""
    types = sorted({k.split("_", 1)[0] for k in metrics if "_" in k and k.split("_", 1)[1] in METRIC_NAMES})
    head = f"{'':6s}" + "".join(f"{n:>8s}" for n in METRIC_NAMES)
    rows = [head]
    for t in types:
        rows.append(f"{t:6s}" + "".join(f"{100 * metrics.get(f'{t}_{n}', 0.0):8.2f}" for n in METRIC_NAMES))
    return "\n".join(rows)


def _coco_gt(dataset, coco_gt, ann_file):
    if coco_gt is not None:
        return coco_gt
    if getattr(dataset, "coco", None) is not None:
        return dataset.coco
    ann_file = ann_file or getattr(dataset, "ann_file", None)
    if ann_file is None:
        raise ValueError("evaluate: pass coco_gt or ann_file (the dataset has neither .coco nor .ann_file)")
    from pycocotools.coco import COCO

    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(ann_file)


@torch.no_grad()
def evaluate(
    model,
    dataset,
    *,
    device="cpu",
    batch_size: int = 1,
    coco_gt=None,
    ann_file: str | None = None,
    cat_ids=None,
    out_dir: str | None = None,
    max_images: int | None = None,
    progress: bool = False,
    verbose: bool = True,
) -> dict:
    """Evaluate ``model`` on ``dataset`` (items ``(image [3,H,W] float 0-255, {"image_id", ...})``, or a falsy
    skipped entry).

    Images are sharded across processes and the predictions gathered on rank 0, which computes the metrics, prints
    the table (``verbose``) and writes ``<out_dir>/metrics.json`` (and ``predictions.json``). Every rank returns
    the metrics dict (keys ``segm_AP``, ``segm_AP50``, ``segm_AP75``, ``bbox_AP``, ...; fractions in 0..1)."""
    rank, world = _rank_world()
    module = getattr(model, "module", model)
    was_training = module.training
    module.eval()
    device = torch.device(device)
    cat_ids = list(cat_ids if cat_ids is not None else getattr(dataset, "cat_ids", None) or [])
    n = len(dataset) if max_images is None else min(len(dataset), max_images)
    indices = list(range(rank, n, world))
    results: list[dict] = []
    img_ids: list[int] = []
    bar = None
    if progress and rank == 0:
        try:
            from tqdm import tqdm

            bar = tqdm(total=len(indices), desc="eval", file=sys.stderr, dynamic_ncols=True)
        except ImportError:
            bar = None
    for s in range(0, len(indices), batch_size):
        items = [dataset[i] for i in indices[s : s + batch_size]]
        items = [it for it in items if it]  # skipped images (None or solo.data.Skipped) are falsy
        if bar is not None:
            bar.update(len(indices[s : s + batch_size]))
        if not items:
            continue
        outs = module([im.to(device) for im, _ in items])
        for (_, tgt), res in zip(items, outs):
            image_id = int(tgt["image_id"])
            img_ids.append(image_id)
            ids = cat_ids or list(range(1, int(res["labels"].max()) + 2 if len(res["labels"]) else 1))
            results.extend(predictions_to_coco(res, image_id, ids))
    if bar is not None:
        bar.close()
    if was_training:
        module.train()
    if world > 1:
        gathered = [None] * world
        torch.distributed.all_gather_object(gathered, (results, img_ids))
        results = [r for part in gathered for r in part[0]]
        img_ids = [i for part in gathered for i in part[1]]
    metrics = None
    if rank == 0:
        coco_gt = _coco_gt(dataset, coco_gt, ann_file)
        metrics = coco_metrics(coco_gt, results, img_ids)
        metrics["num_images"] = len(set(img_ids))
        metrics["num_predictions"] = len(results)
        if getattr(dataset, "class_names", None):  # which label is which class, from the annotation file
            metrics["class_names"] = [str(n) for n in dataset.class_names]
        if verbose:
            print(format_table(metrics), flush=True)
        if out_dir is not None:
            os.makedirs(out_dir, exist_ok=True)
            from solo.engine.checkpoint import atomic_write_bytes

            atomic_write_bytes(os.path.join(out_dir, "metrics.json"), json.dumps(metrics, indent=2).encode())
            atomic_write_bytes(os.path.join(out_dir, "predictions.json"), json.dumps(results).encode())
    if world > 1:
        box = [metrics]
        torch.distributed.broadcast_object_list(box, src=0)
        metrics = box[0]
    return metrics
