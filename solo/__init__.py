"""solo: fast, faithful SOLO / Decoupled SOLO / SOLOv2 instance segmentation."""

__version__ = "0.1.0"


def _warn_if_torch_unsupported() -> None:
    """A torch older than the supported range may lack APIs solo uses (torch.library, torch.compile): say so up
    front rather than fail somewhere later. A source build refuses such a torch outright (setup.py)."""
    import warnings

    import torch

    from solo._versions import SUPPORTED_TORCH, below_minimum

    why = below_minimum("torch", torch.__version__, SUPPORTED_TORCH)
    if why:
        warnings.warn(f"{why}; upgrade it: pip install 'torch{SUPPORTED_TORCH}'", RuntimeWarning, stacklevel=3)


_warn_if_torch_unsupported()

from solo import ops  # noqa: F401
