"""Build of solo and its one C++ extension, ``solo._C``.

Environment switches (all optional):
  SOLO_NO_EXT=1          install pure Python (the reference and Triton backends still work)
  SOLO_FORCE_CUDA=1      build the CUDA kernels even when torch has no CUDA runtime here (CI compile check)
  TORCH_CUDA_ARCH_LIST   CUDA architectures; default 7.5 8.0 8.6 8.9 9.0+PTX (and 7.0 with CUDA < 13)
  CUDA_HOME              CUDA toolkit root; found from nvcc on the PATH otherwise
  SOLO_DEBUG=1           -O0 -g instead of -O3

Install with ``pip install --no-build-isolation .``: the build needs the torch you already have, and an isolated
build environment would download a different (multi-GB) torch.
"""

import glob
import os
import re
import shutil
import subprocess
import sys

from setuptools import find_packages, setup

ROOT = os.path.dirname(os.path.abspath(__file__))


def env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def find_cuda_home():
    """Toolkit root: $CUDA_HOME/$CUDA_PATH, else the nvcc on the PATH (following wrapper scripts), else /usr/local/cuda."""
    for var in ("CUDA_HOME", "CUDA_PATH"):
        if os.environ.get(var):
            return os.environ[var]
    candidates = []
    nvcc = shutil.which("nvcc")
    if nvcc:
        nvcc = os.path.realpath(nvcc)
        candidates.append(os.path.dirname(os.path.dirname(nvcc)))
        # Some machines put a small shell wrapper on the PATH that execs the real nvcc elsewhere.
        try:
            with open(nvcc, "rb") as f:
                head = f.read(4096)
            if head.startswith(b"#!"):
                for target in re.findall(rb"(/\S+/bin/nvcc)\b", head):
                    candidates.insert(0, os.path.dirname(os.path.dirname(target.decode())))
        except OSError:
            pass
    candidates += ["/usr/local/cuda"] + sorted(glob.glob("/usr/local/cuda-*"), reverse=True)
    for root in candidates:
        if os.path.exists(os.path.join(root, "bin", "nvcc")) and os.path.exists(
            os.path.join(root, "include", "cuda_runtime.h")
        ):
            return root
    return None


def nvcc_version(cuda_home):
    try:
        out = subprocess.check_output([os.path.join(cuda_home, "bin", "nvcc"), "--version"], text=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    m = re.search(r"release (\d+)\.(\d+)", out)
    return (int(m.group(1)), int(m.group(2))) if m else None


def extensions():
    if env_flag("SOLO_NO_EXT"):
        print("solo setup: SOLO_NO_EXT=1 -> pure-Python install (no solo._C)")
        return [], {}
    cuda_home = find_cuda_home()
    if cuda_home:
        # torch.utils.cpp_extension reads CUDA_HOME when it is imported.
        os.environ["CUDA_HOME"] = cuda_home
    try:
        import torch
        from torch.utils.cpp_extension import BuildExtension, CppExtension, CUDAExtension
    except ImportError as e:
        sys.exit(
            f"solo setup: torch is needed to build solo._C ({e}). Install torch first, then "
            "`pip install --no-build-isolation .` (or SOLO_NO_EXT=1 for a pure-Python install)."
        )

    force_cuda = env_flag("SOLO_FORCE_CUDA")
    torch_cuda = torch.version.cuda is not None
    with_cuda = force_cuda or (torch_cuda and cuda_home is not None)
    if with_cuda and cuda_home is None:
        sys.exit("solo setup: SOLO_FORCE_CUDA=1 but no CUDA toolkit (nvcc) was found; set CUDA_HOME")
    if with_cuda and not torch_cuda:
        sys.exit(
            "solo setup: SOLO_FORCE_CUDA=1 needs a CUDA build of torch (this torch is CPU-only: "
            f"{torch.__version__}); the CUDA kernels alone compile with CMake (see CMakeLists.txt)"
        )

    debug = env_flag("SOLO_DEBUG")
    opt = ["-O0", "-g"] if debug else ["-O3"]
    sources = ["csrc/ops.cpp"] + sorted(glob.glob("csrc/cpu/*.cpp"))
    include_dirs = [os.path.join(ROOT, "csrc", "include"), os.path.join(ROOT, "kernels")]
    # -fopenmp-simd: honour the `omp simd` loop pragmas (no OpenMP runtime). No trapping math / errno: lets the
    # compiler evaluate both sides of a select, so the branch-free loss loops vectorise; we use neither feature.
    # -fopenmp: at::parallel_for is an inline `omp parallel` in torch's headers; without it the CPU kernels run
    # on one thread. libgomp resolves to the copy torch already loaded (same soname).
    extra = {"cxx": opt + ["-fvisibility=hidden", "-fopenmp", "-fno-trapping-math", "-fno-math-errno"]}
    define_macros = []
    arch_list = None
    if with_cuda:
        version = nvcc_version(cuda_home)
        if not os.environ.get("TORCH_CUDA_ARCH_LIST"):
            archs = ["7.5", "8.0", "8.6", "8.9", "9.0+PTX"]
            if version is not None and version[0] < 13:
                archs.insert(0, "7.0")  # V100, the GPU of the original SOLO results; CUDA 13 dropped it
            os.environ["TORCH_CUDA_ARCH_LIST"] = ";".join(archs)
        arch_list = os.environ["TORCH_CUDA_ARCH_LIST"]
        sources += sorted(glob.glob("csrc/cuda/*.cpp")) + sorted(glob.glob("kernels/*.cu"))
        extra["nvcc"] = opt + ["-lineinfo", "--expt-relaxed-constexpr", "-std=c++17"]
        define_macros.append(("SOLO_WITH_CUDA", None))
        # cuBLAS/cuSPARSE headers that torch's CUDA headers include come from the nvidia-* wheels.
        for site in sys.path:
            include_dirs += sorted(glob.glob(os.path.join(site, "nvidia", "*", "include")))
        ext_cls = CUDAExtension
    else:
        ext_cls = CppExtension

    print(
        "solo setup: building solo._C\n"
        f"  torch          {torch.__version__} (CUDA {torch.version.cuda})\n"
        f"  CUDA kernels   {'yes' if with_cuda else 'no'}"
        f"{' (SOLO_FORCE_CUDA=1)' if force_cuda else ''}\n"
        f"  CUDA_HOME      {cuda_home}"
        f" (nvcc {'.'.join(map(str, nvcc_version(cuda_home) or ())) if cuda_home else '-'})\n"
        f"  arch list      {arch_list if with_cuda else '-'}\n"
        f"  optimisation   {' '.join(opt)}\n"
        f"  sources        {len(sources)} files"
    )
    ext = ext_cls(
        name="solo._C",
        sources=sources,
        include_dirs=include_dirs,
        define_macros=define_macros,
        extra_compile_args=extra,
        extra_link_args=["-fopenmp"],
    )
    return [ext], {"build_ext": BuildExtension.with_options(no_python_abi_suffix=False)}


ext_modules, cmdclass = extensions()

setup(
    name="solo",
    version="0.1.0",
    description="Fast, faithful SOLO / Decoupled SOLO / SOLOv2 instance segmentation with fused kernels",
    packages=find_packages(include=["solo", "solo.*"]),
    python_requires=">=3.9",
    install_requires=["torch>=2.4", "numpy"],
    extras_require={"triton": ["triton"], "test": ["pytest", "hypothesis", "expecttest"]},
    ext_modules=ext_modules,
    cmdclass=cmdclass,
    zip_safe=False,
)
