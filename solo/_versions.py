"""The torch and Triton releases solo supports: the one place that states them.

``setup.py`` (the torch check of a source build and the requirement of a pure-Python install), the ``triton`` extra
of ``pyproject.toml`` (checked by tests/test_packaging.py), ``import solo`` (a warning under an older torch) and the
triton backend (refused under an older Triton) all read these constants. ``setup.py`` loads this file on its own,
before torch may be importable, so it imports nothing but the standard library.

The lower ends are what solo is tested with besides the pinned CI releases (.ci/constraints.txt): torch 2.11 and
Triton 3.6, the releases of the GPU test machine. Code that needs something newer than these keeps a fallback (e.g.
the Triton 3.6 interpreter fix in ``solo/ops/_triton_common.py``).
"""

from __future__ import annotations

import re

__all__ = ["SUPPORTED_TORCH", "SUPPORTED_TRITON", "below_minimum", "minimum", "release"]

# PEP 440 specifiers, lower bound only (">=X.Y"): the wheel of solo._C pins the exact torch it was built with.
SUPPORTED_TORCH = ">=2.11"
SUPPORTED_TRITON = ">=3.6"


def release(version: str) -> tuple[int, ...]:
    """The numeric release of a version string: ``2.11.0+cu130`` -> (2, 11, 0), ``2.12.0a0+git1234`` -> (2, 12, 0),
    ``3.6.0`` -> (3, 6, 0)."""
    out = []
    for part in version.split("+", 1)[0].split("."):
        m = re.match(r"\d+", part)
        if m is None:
            break
        out.append(int(m.group()))
        if m.end() != len(part):  # "0a0", "0rc1": the pre-release suffix ends the release
            break
    return tuple(out)


def minimum(spec: str) -> tuple[int, ...]:
    """The lower end of a ``>=X.Y`` specifier as a release tuple."""
    if not spec.startswith(">=") or not release(spec[2:]):
        raise ValueError(f"expected a '>=X.Y' specifier, got {spec!r}")
    return release(spec[2:])


def below_minimum(name: str, version: str, spec: str) -> str | None:
    """Why ``name`` ``version`` is not supported (older than ``spec``), in words; None when it is supported.

    A pre-release of the lower end (``2.11.0a0``) counts as that release.
    """
    if release(version) >= minimum(spec):
        return None
    return f"{name} {version} is installed, but solo supports {name}{spec}"
