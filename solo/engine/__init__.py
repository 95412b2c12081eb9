"""Training engine: atomic checkpoints and a small hook-based trainer."""

from solo.engine.checkpoint import find_latest, load_checkpoint, save_checkpoint

__all__ = ["find_latest", "load_checkpoint", "save_checkpoint"]
