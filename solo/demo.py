"""Run a trained model on images: ``python -m solo.demo --checkpoint PATH --input IMAGE_OR_FOLDER --out DIR``.

For every image writes ``<out>/<name>.png`` (the image with its masks overlaid, labelled with class and score) and
``<out>/<name>.json`` ({"image", "height", "width", "instances": [{"label", "class_name", "score", "box" (x1, y1,
x2, y2), "segmentation" (COCO RLE)}]}). Runs on the CPU by default; needs Pillow and pycocotools.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np
import torch

__all__ = ["draw_overlay", "list_images", "main"]

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")


def list_images(path: str) -> list[str]:
    """``path`` itself, or the images of folder ``path`` (sorted)."""
    if os.path.isdir(path):
        return sorted(os.path.join(path, n) for n in os.listdir(path) if n.lower().endswith(IMAGE_EXTS))
    if not os.path.isfile(path):
        raise SystemExit(f"--input {path!r} is neither an image nor a folder")
    return [path]


def _colour(i: int) -> tuple[int, int, int]:
    rng = np.random.RandomState(i * 7919 + 17)
    return tuple(int(c) for c in rng.randint(40, 256, 3))


def draw_overlay(image: np.ndarray, result: dict, class_names, alpha: float = 0.5):
    """``image`` uint8 [H, W, 3]; ``result`` {masks bool [K, H, W], labels [K], scores [K], boxes [K, 4]} -> a PIL
    image with the masks blended in and each instance's box, class and score drawn."""
    from PIL import Image, ImageDraw

    out = image.astype(np.float32).copy()
    masks = result["masks"].cpu().numpy()
    for k in range(len(masks)):
        c = np.array(_colour(int(result["labels"][k])), dtype=np.float32)
        out[masks[k]] = out[masks[k]] * (1 - alpha) + c * alpha
    pil = Image.fromarray(out.clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(pil)
    for k in range(len(masks)):
        label = int(result["labels"][k])
        x1, y1, x2, y2 = (float(v) for v in result["boxes"][k])
        col = _colour(label)
        draw.rectangle([x1, y1, max(x1, x2 - 1), max(y1, y2 - 1)], outline=col, width=2)
        name = class_names[label] if class_names and label < len(class_names) else str(label)
        draw.text((x1 + 2, max(0.0, y1 - 11)), f"{name} {float(result['scores'][k]):.2f}", fill=col)
    return pil


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m solo.demo", description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True, help="a checkpoint written by solo.train (or a work dir)")
    p.add_argument("--input", required=True, help="an image or a folder of images")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--config", default=None, help="preset name (default: the config stored in the checkpoint)")
    p.add_argument("--score-thr", type=float, default=0.3, help="draw and write instances scoring at least this")
    p.add_argument("--device", default="cpu")
    p.add_argument("--backend", default=None, help="solo.ops backend (default auto)")
    p.add_argument("--cfg-options", nargs="*", default=[], metavar="KEY=VALUE")
    return p


@torch.no_grad()
def main(argv=None) -> list[str]:
    args = build_parser().parse_args(argv)
    from PIL import Image
    from pycocotools import mask as mask_util

    from solo.configs import get_config
    from solo.engine.checkpoint import CheckpointReadError, load_checkpoint
    from solo.models import build_model
    from solo.train import config_from_dict

    if not os.path.exists(args.checkpoint):
        raise SystemExit(f"--checkpoint {args.checkpoint!r} does not exist")
    try:
        ckpt = load_checkpoint(args.checkpoint)
    except CheckpointReadError as e:  # names the file and why (truncated, empty, not a checkpoint ...)
        raise SystemExit(f"--checkpoint: {e}") from None
    state = ckpt["model"] if isinstance(ckpt.get("model"), dict) else ckpt
    if args.config is not None:
        cfg = get_config(args.config)
    elif ckpt.get("config"):
        cfg = config_from_dict(ckpt["config"])
    else:
        raise SystemExit("--config is needed: the checkpoint does not store its config")
    cfg = cfg.override(*args.cfg_options)
    class_names = ckpt.get("class_names")
    model = build_model(cfg, backend=args.backend)
    model.load_state_dict(state)
    model.to(args.device).eval()
    os.makedirs(args.out, exist_ok=True)
    written = []
    for path in list_images(args.input):
        try:
            with Image.open(path) as im:
                arr = np.asarray(im.convert("RGB"))
        except OSError as e:
            print(f"skipping {path}: cannot read it ({e})", file=sys.stderr)
            continue
        image = torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1))).float().to(args.device)
        res = model([image])[0]
        keep = res["scores"] >= args.score_thr
        res = {k: v[keep].cpu() for k, v in res.items()}
        stem = os.path.splitext(os.path.basename(path))[0]
        draw_overlay(arr, res, class_names).save(os.path.join(args.out, stem + ".png"))
        instances = []
        if len(res["masks"]):
            rles = mask_util.encode(np.asfortranarray(res["masks"].numpy().astype(np.uint8).transpose(1, 2, 0)))
            for k, rle in enumerate(rles):
                label = int(res["labels"][k])
                instances.append(
                    {
                        "label": label,
                        "class_name": class_names[label] if class_names and label < len(class_names) else None,
                        "score": float(res["scores"][k]),
                        "box": [float(v) for v in res["boxes"][k]],
                        "segmentation": {"size": list(rle["size"]), "counts": rle["counts"].decode("ascii")},
                    }
                )
        with open(os.path.join(args.out, stem + ".json"), "w") as f:
            json.dump({"image": path, "height": arr.shape[0], "width": arr.shape[1], "instances": instances}, f)
        written.append(os.path.join(args.out, stem + ".png"))
        print(f"{path}: {len(instances)} instances -> {args.out}/{stem}.png, .json")
    return written


if __name__ == "__main__":
    main()
