"""The extension build of solo: ``solo._C`` (C++ CPU kernels, plus the CUDA kernels when CUDA is present).

Metadata lives in pyproject.toml; this file builds the extension and states the one dependency that depends on the
build: the wheel requires exactly the torch release it was compiled against (torch has no stable C++ ABI), the
way torchvision's wheels do. It also records that release in ``solo/_build_info.py``, which ``import solo`` compares
with the torch it finds before loading the extension.

Environment switches (all optional):
  SOLO_NO_EXT=1          install pure Python (the reference and Triton backends still work)
  SOLO_FORCE_CUDA=1      build the CUDA kernels even when torch has no CUDA runtime here (CI compile check)
  TORCH_CUDA_ARCH_LIST   CUDA architectures; default 7.5 8.0 8.6 8.9 9.0+PTX, plus 7.0 with CUDA < 13 and
                         10.0 12.0 (Blackwell) with CUDA >= 12.8 and torch >= 2.7; one GPU only: e.g. "9.0"
  CUDA_HOME              CUDA toolkit root; found from nvcc on the PATH otherwise
  SOLO_DEBUG=1           -O0 -g instead of -O3
  SOLO_BUILD_TORCH       torch requirement of an isolated build (see _build/solo_build_backend.py)

``pip install .`` builds in an isolated environment with the right torch (the in-tree backend chooses it);
``pip install --no-build-isolation .`` builds against the torch that is installed.
"""

import glob
import os
import re
import shutil
import subprocess
import sys

from setuptools import setup

ROOT = os.path.dirname(os.path.abspath(__file__))


def _load_versions():
    """solo/_versions.py, the one statement of the supported torch / Triton releases, loaded without importing solo
    (whose __init__ needs torch)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("_solo_versions", os.path.join(ROOT, "solo", "_versions.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


VERSIONS = _load_versions()


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


def torch_knows_blackwell(torch_version: str) -> bool:
    """torch.utils.cpp_extension accepts 10.0/12.0 in TORCH_CUDA_ARCH_LIST from torch 2.7 (it raises on an
    architecture it does not know, so an older torch with a newer nvcc must not get them)."""
    m = re.match(r"(\d+)\.(\d+)", torch_version)
    return m is not None and (int(m.group(1)), int(m.group(2))) >= (2, 7)


# What every install needs besides torch (whose requirement depends on the build: see torch_requirement).
RUNTIME_REQUIREMENTS = ["numpy>=1.24", "pycocotools>=2.0.7", "pillow>=10", "tqdm>=4.66"]
# A pure-Python install (SOLO_NO_EXT=1) runs with any supported torch.
PURE_PYTHON_TORCH = f"torch{VERSIONS.SUPPORTED_TORCH}"
BUILD_INFO = os.path.join(ROOT, "solo", "_build_info.py")


def public_version(version: str) -> str:
    """``2.13.0+cpu`` -> ``2.13.0``: the release, without the local build label (CPU / CUDA variant)."""
    return version.split("+", 1)[0]


def write_build_info(torch_mod, with_cuda: bool, arch_list) -> None:
    """Record what solo._C is compiled against; solo/ops/_ext.py checks it before loading the library."""
    text = (
        '"""Written by setup.py when solo._C was built: what the extension is compiled against."""\n\n'
        f"TORCH_VERSION = {torch_mod.__version__!r}\n"
        f"TORCH_CUDA = {torch_mod.version.cuda!r}\n"
        f"WITH_CUDA = {with_cuda!r}\n"
        f"CUDA_ARCH_LIST = {arch_list!r}\n"
        f"SOURCE_DIR = {ROOT!r}\n"
    )
    old = None
    if os.path.exists(BUILD_INFO):
        with open(BUILD_INFO) as f:
            old = f.read()
    if old != text:  # unchanged content keeps its timestamp (no needless rebuilds of an editable install)
        with open(BUILD_INFO + ".tmp", "w") as f:
            f.write(text)
        os.replace(BUILD_INFO + ".tmp", BUILD_INFO)


def building_sdist_only() -> bool:
    """True for the source-distribution command, which packs sources and needs no torch."""
    return "sdist" in sys.argv[1:] and "bdist_wheel" not in sys.argv[1:] and "build_ext" not in sys.argv[1:]


def extensions():
    """(ext_modules, cmdclass, torch requirement of the wheel)."""
    if env_flag("SOLO_NO_EXT"):
        print("solo setup: SOLO_NO_EXT=1 -> pure-Python install (no solo._C)")
        if os.path.exists(BUILD_INFO):
            os.remove(BUILD_INFO)
        return [], {}, PURE_PYTHON_TORCH
    if building_sdist_only():
        return [], {}, PURE_PYTHON_TORCH
    if os.environ.get("SOLO_REQUIREMENTS_ONLY"):
        # the build backend asking for the build requirements: torch is not installed yet; the value is the torch
        # requirement the build will use (_build/solo_build_backend.py), and so the one the wheel will pin
        return [], {}, os.environ["SOLO_REQUIREMENTS_ONLY"]
    cuda_home = find_cuda_home()
    if cuda_home:
        # torch.utils.cpp_extension reads CUDA_HOME when it is imported.
        os.environ["CUDA_HOME"] = cuda_home
    try:
        import torch
        from torch.utils.cpp_extension import BuildExtension, CppExtension, CUDAExtension
    except ImportError as e:
        sys.exit(
            f"solo setup: torch is needed to build solo._C ({e}). `pip install .` installs it for the build; "
            "with --no-build-isolation install torch first (e.g. `pip install torch`), or set SOLO_NO_EXT=1 for a "
            "pure-Python install."
        )
    too_old = VERSIONS.below_minimum("torch", torch.__version__, VERSIONS.SUPPORTED_TORCH)
    if too_old:
        sys.exit(
            f"solo setup: {too_old}, so solo._C is not built for it. Install a supported torch first "
            f"(pip install 'torch{VERSIONS.SUPPORTED_TORCH}') and build again; an isolated build (`pip install .`) "
            "uses the torch named by SOLO_BUILD_TORCH when it is set."
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
            if version is not None and version >= (12, 8) and torch_knows_blackwell(torch.__version__):
                # B200/GB200 (sm_100; B300's sm_103 runs it) and RTX 50xx/RTX PRO (sm_120; sm_121 runs it). The
                # compute_90 PTX would run there too, but the driver JIT-compiles every kernel at the first launch
                # of each process (seconds, or minutes with a cold cache) and the code is tuned for Hopper; native
                # code costs two more nvcc passes per .cu file (~+40% of the kernels' compile time).
                archs += ["10.0", "12.0"]
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
    write_build_info(torch, with_cuda, arch_list)
    ext = ext_cls(
        name="solo._C",
        sources=sources,
        include_dirs=include_dirs,
        define_macros=define_macros,
        extra_compile_args=extra,
        extra_link_args=["-fopenmp"],
    )
    build_ext = BuildExtension.with_options(no_python_abi_suffix=False)

    class BuildExtAlsoInSource(build_ext):
        """Also places the built library in the source tree's solo/ (as an editable install does), so that running
        ``python -m solo.train`` from the source folder after ``pip install .`` -- where Python imports the source
        tree's solo, not the installed one -- uses the extension instead of silently falling back to the
        reference ops. The copy is the same file, built for the same torch (checked at import)."""

        def run(self):
            super().run()
            if self.inplace:
                return
            for ext_ in self.extensions:
                built = self.get_ext_fullpath(ext_.name)
                dest = os.path.join(ROOT, *ext_.name.split(".")[:-1], os.path.basename(built))
                if os.path.isdir(os.path.dirname(dest)) and os.path.abspath(built) != os.path.abspath(dest):
                    shutil.copyfile(built, dest + ".tmp")
                    os.replace(dest + ".tmp", dest)
                    print(f"solo setup: also placed {os.path.relpath(dest, ROOT)} in the source tree")

    return [ext], {"build_ext": BuildExtAlsoInSource}, f"torch=={public_version(torch.__version__)}"


ext_modules, cmdclass, torch_requirement = extensions()

setup(
    install_requires=[torch_requirement, *RUNTIME_REQUIREMENTS],
    ext_modules=ext_modules,
    cmdclass=cmdclass,
)
