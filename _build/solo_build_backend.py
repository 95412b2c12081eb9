"""PEP 517 build backend of solo: setuptools' own, plus the one build requirement it cannot state statically.

``solo._C`` is a C++ (and CUDA) extension of torch, so the build needs torch, and the wheel only works with the very
torch it was compiled against (torch has no stable C++ ABI across releases). A fixed ``torch`` entry in
``[build-system] requires`` cannot say *which* torch, so this backend adds it at build time:

1. ``$SOLO_BUILD_TORCH`` when set: a requirement such as ``torch==2.14.1`` (the wheel then requires the torch it got);
2. else the torch already installed in the environment that pip installs into: a build in an isolated environment
   gets the same release (``torch==X.Y.Z``), so ``pip install .`` over an existing torch neither replaces it nor
   builds for another one (a torch older than solo supports, ``solo/_versions.py``, is refused with the reason);
3. else (a fresh environment) the release solo is tested with, :data:`DEFAULT_TORCH`.

``setup.py`` then pins the wheel's runtime requirement to the torch that was in the build environment, so pip installs
the same release beside it. With ``pip install --no-build-isolation .`` none of this runs: the build uses the torch
that is installed, whatever it is.
"""

from __future__ import annotations

import importlib.util
import os
import re
import site
import sys
from importlib import metadata

from setuptools import build_meta as _setuptools

# The rest of the PEP 517 interface (build_wheel, build_sdist, prepare_metadata_..., ...) is setuptools' own.
from setuptools.build_meta import *

# The torch release this version of solo is tested with (CI); a fresh `pip install .` builds against it.
DEFAULT_TORCH = "torch==2.13.0"


def _load_versions():
    """solo/_versions.py (the supported torch / Triton releases), without importing solo."""
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "solo", "_versions.py")
    spec = importlib.util.spec_from_file_location("_solo_versions", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


VERSIONS = _load_versions()


def _target_site_dirs() -> list[str]:
    """The site-packages folders of the environment being installed into.

    pip runs this backend with the target interpreter but hides its site-packages behind the isolated build
    environment's; ``sys.prefix`` still names the target, so ``site.getsitepackages()`` does too.
    """
    dirs = [d for d in site.getsitepackages() if os.path.isdir(d)]
    user = site.getusersitepackages() if site.ENABLE_USER_SITE is not False else None
    if user and os.path.isdir(user) and not os.environ.get("PYTHONNOUSERSITE") and sys.prefix == sys.base_prefix:
        dirs.append(user)
    return dirs


def installed_torch_version() -> str | None:
    """Public version (no local label such as ``+cpu``) of the torch installed in the target environment, if any."""
    for dist in metadata.distributions(path=_target_site_dirs()):
        if (dist.metadata["Name"] or "").lower() == "torch":
            return re.split(r"\+", dist.version, maxsplit=1)[0]
    return None


def torch_requirement() -> str:
    """The torch requirement of the build environment (see the module docstring for the order)."""
    spec = os.environ.get("SOLO_BUILD_TORCH", "").strip()
    if spec:
        return spec if spec.lower().startswith("torch") else f"torch=={spec}"
    installed = installed_torch_version()
    if not installed:
        return DEFAULT_TORCH
    too_old = VERSIONS.below_minimum("torch", installed, VERSIONS.SUPPORTED_TORCH)
    if too_old:
        # Building for it would fail in setup.py after installing it into the build environment: say so now.
        raise SystemExit(
            f"solo build backend: {too_old}, and a build uses the installed torch. Upgrade it first "
            f"(pip install 'torch{VERSIONS.SUPPORTED_TORCH}'), or name the torch to build against with "
            f"SOLO_BUILD_TORCH (e.g. SOLO_BUILD_TORCH={DEFAULT_TORCH.split('==')[1]}; pip then installs it too)."
        )
    return f"torch=={installed}"


def _with_torch(requires: list[str]) -> list[str]:
    if os.environ.get("SOLO_NO_EXT", "").strip().lower() in ("1", "true", "yes", "on"):
        return requires  # pure-Python install: nothing to compile, no torch needed to build
    req = torch_requirement()
    print(f"solo build backend: building against {req}", file=sys.stderr, flush=True)
    return [*requires, req]


def _setuptools_requires(hook, config_settings) -> list[str]:
    """setuptools' own answer, which runs setup.py (and writes solo.egg-info) before torch is installed: tell it
    not to import torch yet, and which torch the wheel will require."""
    os.environ["SOLO_REQUIREMENTS_ONLY"] = torch_requirement()
    try:
        return hook(config_settings)
    finally:
        del os.environ["SOLO_REQUIREMENTS_ONLY"]


def get_requires_for_build_wheel(config_settings=None):
    return _with_torch(_setuptools_requires(_setuptools.get_requires_for_build_wheel, config_settings))


def get_requires_for_build_editable(config_settings=None):
    return _with_torch(_setuptools_requires(_setuptools.get_requires_for_build_editable, config_settings))
