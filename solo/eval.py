"""Evaluate a checkpoint: ``python -m solo.eval --config PRESET --checkpoint PATH [--data-root data/coco]``.

Runs the model over the validation images (COCO ``val2017`` or the built-in synthetic val set), prints the COCO
segm / bbox AP table and writes ``<work-dir>/metrics.json``. Works under ``torchrun`` (predictions are gathered on
rank 0). Same options as ``python -m solo.train`` minus the training ones.
"""

from __future__ import annotations

from solo.train import main

__all__ = ["main_eval"]


def main_eval(argv=None) -> dict | None:
    """Parse ``argv`` (the command line when None) and evaluate; returns the metrics dict."""
    return main(argv, eval_only=True)


if __name__ == "__main__":
    main_eval()
