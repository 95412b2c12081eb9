"""Helpers of tests/test_engine.py: a tiny in-memory dataset and a tiny preset (also used by its subprocesses)."""

from __future__ import annotations

import torch

from solo.configs import get_config

# Command-line arguments of a tiny solo.train run (a few synthetic images at 160x128, no loader workers). They end
# with --cfg-options, so a test may append more KEY=VALUE overrides.
TINY_CLI_ARGS = [
    "--synthetic-num-train",
    "4",
    "--synthetic-num-val",
    "2",
    "--workers",
    "0",
    "--batch-size",
    "2",
    "--no-progress",
    "--cfg-options",
    "model.train_scales=((160,128),)",
    "model.test_scale=(160,128)",
]


def tiny_config(head: str = "solov2"):
    cfg = get_config(f"{head}_synthetic_r18")
    return cfg.override(
        "model.train_scales=((160, 128),)",
        "model.test_scale=(160, 128)",
        "train.warmup_iters=3",
        "train.milestones=(1,)",
        "train.batch_size=2",
        "train.optimizer='sgd'",  # the model-zoo optimizer (the synthetic presets use AdamW: test_adamw_option)
        "train.weight_decay=1e-4",
    )


class TinyShapes(torch.utils.data.Dataset):
    """``n`` images of 96x128 with 1-2 filled rectangles; a random horizontal flip (torch's RNG) when training."""

    class_names = ("a", "b", "c")
    cat_ids = (1, 2, 3)

    def __init__(self, n: int = 6, seed: int = 0, flip_prob: float = 0.5):
        g = torch.Generator().manual_seed(seed)
        self.items = []
        for i in range(n):
            img = torch.rand(3, 96, 128, generator=g) * 60
            k = 1 + i % 2
            masks = torch.zeros(k, 96, 128, dtype=torch.uint8)
            labels = torch.randint(0, 3, (k,), generator=g)
            for j in range(k):
                y0, x0 = (int(v) for v in torch.randint(0, 48, (2,), generator=g))
                h, w = (int(v) for v in torch.randint(16, 48, (2,), generator=g))
                masks[j, y0 : y0 + h, x0 : x0 + w] = 1
                img[:, y0 : y0 + h, x0 : x0 + w] += 100 + 50 * labels[j]
            self.items.append((img, {"masks": masks, "labels": labels, "image_id": i + 1, "orig_size": (96, 128)}))
        self.flip_prob = flip_prob
        self.skipped = {}

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        img, t = self.items[i]
        if self.flip_prob and float(torch.rand(())) < self.flip_prob:
            img = img.flip(-1)
            t = {**t, "masks": t["masks"].flip(-1)}
        return img, t
