"""The fused operators of solo. Each has four backends (reference, cpu, cuda, triton) computing one function;
``available_backends()`` says which can run here and why not."""

from solo.ops._backend import BACKENDS, available_backends, resolve_backend
from solo.ops.assign_grid_targets import GridTargets, assign_grid_targets
from solo.ops.dice_loss import decoupled_dice_loss, dice_loss
from solo.ops.downsample_masks import downsample_masks
from solo.ops.focal_loss import sigmoid_focal_loss
from solo.ops.matrix_nms import matrix_nms
from solo.ops.paste_masks import paste_masks

__all__ = [
    "BACKENDS",
    "GridTargets",
    "assign_grid_targets",
    "available_backends",
    "decoupled_dice_loss",
    "dice_loss",
    "downsample_masks",
    "matrix_nms",
    "paste_masks",
    "resolve_backend",
    "sigmoid_focal_loss",
]
