"""What a bug report needs: ``python -m solo.collect_env``.

Prints solo's version and location, what ``solo._C`` was built against and whether it loaded, the torch / CUDA /
Triton / Python versions, the devices, and every backend with the reason it can or cannot run here.
"""

from __future__ import annotations

import os
import platform
import sys

__all__ = ["collect_env", "main"]


def _version(dist: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def collect_env() -> list[tuple[str, str]]:
    """(name, value) rows of the report."""
    import torch

    import solo
    from solo.ops import _ext, available_backends

    info = _ext.BUILD_INFO
    rows = [
        ("solo", f"{solo.__version__} at {os.path.dirname(os.path.abspath(solo.__file__))}"),
        (
            "solo._C built for",
            "no build record (pure-Python install or an old build)"
            if info is None
            else f"torch {info.TORCH_VERSION} (CUDA {info.TORCH_CUDA}), CUDA kernels "
            f"{'yes (' + str(info.CUDA_ARCH_LIST) + ')' if info.WITH_CUDA else 'no'}, from {info.SOURCE_DIR}",
        ),
        ("solo._C loaded", "yes" if _ext.has_ext() else f"no: {_ext.EXT_ERROR}"),
        ("torch", f"{torch.__version__} (CUDA {torch.version.cuda}, {torch.get_num_threads()} CPU threads)"),
        ("triton", _version("triton")),
        ("pycocotools", _version("pycocotools")),
        ("python", f"{platform.python_version()} ({sys.executable})"),
        ("platform", f"{platform.platform()}, {os.cpu_count()} CPUs"),
    ]
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            rows.append((f"cuda:{i}", f"{p.name}, sm_{p.major}{p.minor}, {p.total_memory / 2**30:.0f} GiB"))
    else:
        rows.append(("GPU", "none visible to torch"))
    rows += [
        (f"backend {name}", ("usable: " if ok else "not usable: ") + why)
        for name, (ok, why) in available_backends().items()
    ]
    return rows


def main() -> None:
    rows = collect_env()
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")


if __name__ == "__main__":
    main()
