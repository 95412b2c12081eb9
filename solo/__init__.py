"""solo: fast, faithful SOLO / Decoupled SOLO / SOLOv2 instance segmentation."""

__version__ = "0.1.0"

from solo import ops  # noqa: E402,F401
