"""Argument checks shared by the public ops: clear ValueErrors naming the argument, never a crash."""

from __future__ import annotations

import math

import torch

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
REDUCTIONS = ("none", "sum", "mean")


def tensor(fn: str, name: str, value) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        # ValueError, not TypeError: every bad argument of the ops raises ValueError (DESIGN.md), so one except catches all
        raise ValueError(f"{fn}: {name} must be a torch.Tensor, got {type(value).__name__}")  # noqa: TRY004
    return value


def floating(fn: str, name: str, t: torch.Tensor) -> None:
    if t.dtype not in FLOAT_DTYPES:
        raise ValueError(f"{fn}: {name} must be float16, bfloat16, float32 or float64, got {t.dtype}")


def same_device(fn: str, ref_name: str, ref: torch.Tensor, **others: torch.Tensor) -> None:
    for name, t in others.items():
        if t.device != ref.device:
            raise ValueError(
                f"{fn}: {name} is on {t.device} but {ref_name} is on {ref.device}; move both to one device"
            )


def reduction(fn: str, value: str) -> None:
    if value not in REDUCTIONS:
        raise ValueError(f"{fn}: reduction must be one of {REDUCTIONS}, got {value!r}")


def finite_number(fn: str, name: str, value, minimum: float | None = None) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{fn}: {name} must be a number, got {value!r}") from None
    if not math.isfinite(v) or (minimum is not None and v < minimum):
        bound = f" >= {minimum}" if minimum is not None else ""
        raise ValueError(f"{fn}: {name} must be a finite number{bound}, got {value!r}")
    return v
