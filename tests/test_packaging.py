"""Packaging: the build backend's torch choice, the extension/torch version check at import, the metadata, and the
README's two commands that CI runs."""

from __future__ import annotations

import ast
import importlib.util
import os
import shutil
import subprocess
import sys
import textwrap
import types
from importlib import metadata

import pytest
import torch

from solo.ops import _ext

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _load_module(path: str, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture
def backend(monkeypatch):
    monkeypatch.delenv("SOLO_BUILD_TORCH", raising=False)
    monkeypatch.delenv("SOLO_NO_EXT", raising=False)
    return _load_module(os.path.join(ROOT, "_build", "solo_build_backend.py"), "solo_build_backend_under_test")


def _fake_site(tmp_path, dist_name: str | None, version: str = ""):
    site = tmp_path / "site-packages"
    site.mkdir()
    if dist_name:
        info = site / f"{dist_name}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist_name}\nVersion: {version}\n")
    return [str(site)]


def test_build_backend_builds_against_the_installed_torch(backend, tmp_path, monkeypatch):
    site = _fake_site(tmp_path, "torch", "9.8.7+cu999")
    monkeypatch.setattr(backend, "_target_site_dirs", lambda: site)
    assert backend.installed_torch_version() == "9.8.7"
    assert backend.torch_requirement() == "torch==9.8.7"  # the local label is dropped: any variant of the release
    assert backend._with_torch(["wheel"]) == ["wheel", "torch==9.8.7"]


def test_build_backend_fresh_environment_and_overrides(backend, tmp_path, monkeypatch):
    site = _fake_site(tmp_path, "numpy", "2.0.0")
    monkeypatch.setattr(backend, "_target_site_dirs", lambda: site)
    assert backend.installed_torch_version() is None
    assert backend.torch_requirement() == backend.DEFAULT_TORCH
    assert backend.DEFAULT_TORCH.startswith("torch==")
    monkeypatch.setenv("SOLO_BUILD_TORCH", "2.14.1")
    assert backend.torch_requirement() == "torch==2.14.1"
    monkeypatch.setenv("SOLO_BUILD_TORCH", "torch>=2.5,<3")
    assert backend.torch_requirement() == "torch>=2.5,<3"
    monkeypatch.setenv("SOLO_NO_EXT", "1")  # pure Python: nothing to compile, no torch in the build environment
    assert backend._with_torch(["wheel"]) == ["wheel"]


def test_build_backend_sees_this_environment(backend):
    """Without isolation tricks the target environment is this one: it finds the torch that runs these tests."""
    assert backend.installed_torch_version() == torch.__version__.split("+")[0]


def test_build_mismatch_decision():
    info = types.SimpleNamespace(TORCH_VERSION="2.13.0+cpu", SOURCE_DIR="/nowhere/solo")
    msg = _ext.build_mismatch(info, "2.14.1+cu130")
    assert msg is not None
    assert "built for torch 2.13.0+cpu" in msg and "torch 2.14.1+cu130 is installed" in msg
    assert "pip install --no-build-isolation" in msg and "pip install torch==2.13.0" in msg
    assert _ext.build_mismatch(info, "2.13.0+cu130") is None  # same release, other variant: same C++ ABI
    assert _ext.build_mismatch(info, "2.13.0") is None
    assert _ext.build_mismatch(None, "2.14.1") is None  # no record: try to load, report what loading says
    assert _ext.build_mismatch(types.SimpleNamespace(), "2.14.1") is None


_PROBE = textwrap.dedent(
    """
    import sys, warnings
    # Only the copy is to be imported: an editable install's import hook (setuptools' __editable__ finder, consulted
    # after the path) would otherwise resolve a submodule the copy lacks, such as solo._C, to the source tree's file.
    sys.meta_path[:] = [f for f in sys.meta_path if "__editable__" not in getattr(f, "__module__", type(f).__module__)]
    warnings.simplefilter("always")
    with warnings.catch_warnings(record=True) as caught:
        import solo
    import torch
    import solo.ops
    from solo.ops import reference
    ok, why = solo.ops.available_backends("cpu")["cpu"]
    print("LOADED", "solo._C" in sys.modules, ok)
    print("WHY", why)
    print("WARN", " | ".join(str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)))
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(37, 5, generator=g), torch.randint(-1, 6, (37,), generator=g)
    a = solo.ops.sigmoid_focal_loss(x, y, alpha=0.25, gamma=2.0, reduction="sum")
    b = solo.ops.sigmoid_focal_loss(x, y, alpha=0.25, gamma=2.0, reduction="sum", backend="reference")
    print("SAME", bool(torch.allclose(a, b, rtol=1e-5, atol=1e-6)))
    """
)


def _copy_package(tmp_path, torch_version: str | None):
    """A copy of the solo package (with its built library) whose build record says ``torch_version``."""
    dst = tmp_path / "pkg" / "solo"
    shutil.copytree(
        os.path.dirname(_ext.__file__).rsplit(os.sep, 1)[0], dst, ignore=shutil.ignore_patterns("__pycache__")
    )
    if torch_version is not None:
        (dst / "_build_info.py").write_text(
            f"TORCH_VERSION = {torch_version!r}\nTORCH_CUDA = None\nWITH_CUDA = False\nCUDA_ARCH_LIST = None\n"
            f"SOURCE_DIR = {ROOT!r}\n"
        )
    return dst.parent


def _python_stdout(code: str, cwd, pythonpath) -> str:
    """Run ``python -c code`` in ``cwd`` with ``PYTHONPATH=pythonpath``; asserts it succeeds, returns its stdout."""
    env = {**os.environ, "PYTHONPATH": str(pythonpath)}
    r = subprocess.run(
        [sys.executable, "-c", code],
        check=False,
        cwd=str(cwd),
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    return r.stdout


def _probe(pkg_dir) -> dict[str, str]:
    out = _python_stdout(_PROBE, pkg_dir, pkg_dir)
    return {line.split(" ", 1)[0]: line.split(" ", 1)[1] for line in out.splitlines() if " " in line}


@pytest.mark.needs_ext
def test_extension_for_another_torch_is_explained_and_not_loaded(tmp_path):
    if not _ext.has_ext():
        pytest.skip(f"needs the compiled extension: {_ext.EXT_ERROR}")
    other = "1.99.0+cpu"
    out = _probe(_copy_package(tmp_path / "other", other))
    assert out["LOADED"] == "False False"  # not even loaded: a library for another torch may crash the process
    for text in (out["WHY"], out["WARN"]):
        assert f"built for torch {other}" in text and f"torch {torch.__version__} is installed" in text
        assert f"pip install --no-build-isolation --no-deps --force-reinstall {ROOT}" in text
    assert out["SAME"] == "True"  # the ops still work, on the reference

    # the same copy with the true record loads the library (so the check above can fail)
    out = _probe(_copy_package(tmp_path / "same", torch.__version__))
    assert out["LOADED"] == "True True" and out["WARN"] == "" and out["SAME"] == "True"


def test_missing_library_with_a_build_record_says_not_built(tmp_path):
    """A build record but no library (deleted, or a copied tree): "not built" and the build command, not Python's
    misleading "circular import" ImportError of a from-import inside a package being imported."""
    pkg = _copy_package(tmp_path / "nolib", torch.__version__)
    for so in (pkg / "solo").glob("_C*"):
        so.unlink()
    out = _probe(pkg)
    assert out["LOADED"] == "False False" and out["SAME"] == "True"
    assert out["WHY"].startswith("solo._C is not built"), out["WHY"]
    assert "circular" not in out["WHY"] and "pip install --no-build-isolation" in out["WHY"]


def test_pyproject_metadata_and_runtime_requirements():
    try:
        import tomllib
    except ImportError:  # Python 3.10
        tomllib = pytest.importorskip("tomli")
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        project = tomllib.load(f)["project"]
    assert project["name"] == "solo"
    assert set(project["dynamic"]) == {"version", "dependencies"}
    assert {"test", "triton", "plot", "dev"} <= set(project["optional-dependencies"])
    # setup.py states the runtime dependencies besides torch; read them without running it
    with open(os.path.join(ROOT, "setup.py")) as f:
        tree = ast.parse(f.read())
    runtime = next(
        ast.literal_eval(node.value)
        for node in tree.body
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "RUNTIME_REQUIREMENTS"
    )
    names = {r.split(">")[0].split("=")[0] for r in runtime}
    assert {"numpy", "pycocotools", "pillow", "tqdm"} <= names


def test_installed_metadata_pins_the_build_torch():
    if _ext.BUILD_INFO is None:
        pytest.skip("solo is not installed from a build of solo._C here (pure-Python install)")
    try:
        requires = metadata.requires("solo") or []
    except metadata.PackageNotFoundError:
        pytest.skip("solo is run from a source tree that is not installed")
    built = _ext.BUILD_INFO.TORCH_VERSION.split("+")[0]
    assert f"torch=={built}" in requires, requires
    assert any(r.startswith("pycocotools") for r in requires)


def test_readme_two_commands_are_what_ci_runs():
    mod = _load_module(os.path.join(ROOT, ".ci", "readme_commands.py"), "readme_commands_under_test")
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        commands = mod.readme_commands(f.read())
    assert len(commands) == 2
    assert commands[0].startswith("pip install . ") and commands[0].endswith("python -m solo.train")
    assert '".[test]"' in commands[1] and commands[1].endswith("python -m pytest -q")
    with open(os.path.join(ROOT, ".ci", "run")) as f:
        assert "readme_commands.py README.md" in f.read()
    with pytest.raises(ValueError, match="two commands"):
        mod.readme_commands("# README\nno such section\n")


def test_collect_env_reports_build_and_backends():
    r = subprocess.run(
        [sys.executable, "-m", "solo.collect_env"], check=False, capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert r.returncode == 0, r.stderr
    out = r.stdout
    torch_row = next(line for line in out.splitlines() if line.split()[0] == "torch")
    assert torch_row.split()[1] == torch.__version__
    loaded = next(line for line in out.splitlines() if line.startswith("solo._C loaded"))
    assert loaded.split()[2] == ("yes" if _ext.has_ext() else "no:")
    for name in ("reference", "cpu", "cuda", "triton"):
        assert any(line.startswith(f"backend {name} ") for line in out.splitlines()), out
    assert "usable: pure PyTorch" in out


# --- the supported torch / Triton range: stated once, in solo/_versions.py -------------------------------------------


def _versions_module():
    return _load_module(os.path.join(ROOT, "solo", "_versions.py"), "solo_versions_under_test")


def test_version_parsing_and_lower_bounds():
    v = _versions_module()
    assert v.release("2.11.0+cu130") == (2, 11, 0) and v.release("2.12.0a0+git1234") == (2, 12, 0)
    assert v.release("3.6.0") == (3, 6, 0) and v.release("3.10") == (3, 10)
    assert v.minimum(">=2.11") == (2, 11)
    with pytest.raises(ValueError):
        v.minimum("==2.11")
    assert v.below_minimum("torch", "2.11.0+cu130", ">=2.11") is None
    assert v.below_minimum("torch", "2.11.0a0+gitabc", ">=2.11") is None  # a pre-release of the lower end counts
    assert v.below_minimum("torch", "2.13.0", ">=2.11") is None
    assert v.below_minimum("torch", "2.10.1", ">=2.11") == "torch 2.10.1 is installed, but solo supports torch>=2.11"
    assert v.below_minimum("triton", "3.5.1", ">=3.6") == "triton 3.5.1 is installed, but solo supports triton>=3.6"
    # this environment is a supported one (CI: the pinned releases; the compatibility check: the lower ends)
    assert v.below_minimum("torch", torch.__version__, v.SUPPORTED_TORCH) is None


def test_declared_lower_bounds_match_the_single_source():
    """pyproject's triton extra and setup.py's torch requirement come from solo/_versions.py, not from copies."""
    import solo._versions as runtime_versions

    try:
        import tomllib
    except ImportError:  # Python 3.10
        tomllib = pytest.importorskip("tomli")
    v = _versions_module()
    assert (v.SUPPORTED_TORCH, v.SUPPORTED_TRITON) == (
        runtime_versions.SUPPORTED_TORCH,
        runtime_versions.SUPPORTED_TRITON,
    )
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        extras = tomllib.load(f)["project"]["optional-dependencies"]
    assert extras["triton"] == [f"triton{v.SUPPORTED_TRITON}"]
    # setup.py states no torch or triton version of its own: the pure-Python requirement is the supported range
    with open(os.path.join(ROOT, "setup.py")) as f:
        source = f.read()
    tree = ast.parse(source)
    pure = next(
        node.value
        for node in tree.body
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "PURE_PYTHON_TORCH"
    )
    assert ast.unparse(pure) == "f'torch{VERSIONS.SUPPORTED_TORCH}'"
    for literal in (node.value for node in ast.walk(tree) if isinstance(node, ast.Constant)):
        if isinstance(literal, str):
            assert not any(f"{name}>=" in literal for name in ("torch", "triton")), literal


def test_build_backend_refuses_an_installed_torch_below_the_range(backend, tmp_path, monkeypatch):
    v = _versions_module()
    lower = ".".join(map(str, v.minimum(v.SUPPORTED_TORCH)))
    site = _fake_site(tmp_path, "torch", f"{lower}.0+cu130")
    monkeypatch.setattr(backend, "_target_site_dirs", lambda: site)
    assert backend.torch_requirement() == f"torch=={lower}.0"  # the lower end itself builds
    old = f"{v.minimum(v.SUPPORTED_TORCH)[0]}.{v.minimum(v.SUPPORTED_TORCH)[1] - 1}.0"
    monkeypatch.setattr(backend, "installed_torch_version", lambda: old)
    with pytest.raises(SystemExit, match=f"torch {old} is installed, but solo supports torch{v.SUPPORTED_TORCH}"):
        backend.torch_requirement()
    monkeypatch.setenv("SOLO_BUILD_TORCH", "2.13.0")  # the way out the message names
    assert backend.torch_requirement() == "torch==2.13.0"


_FAKE_TORCH = {
    "__init__.py": "__version__ = {version!r}\nclass version:\n    cuda = None\n",
    "utils/__init__.py": "",
    "utils/cpp_extension.py": "BuildExtension = CppExtension = CUDAExtension = None\n",
}


def test_source_build_refuses_a_torch_below_the_range(tmp_path):
    """setup.py (run as the build runs it) stops with the installed and the required versions, before compiling."""
    v = _versions_module()
    src = tmp_path / "src"
    (src / "solo").mkdir(parents=True)
    shutil.copy(os.path.join(ROOT, "setup.py"), src)
    shutil.copy(os.path.join(ROOT, "solo", "_versions.py"), src / "solo")
    old = "2.10.0+cpu"
    fake = tmp_path / "fake_torch"
    for rel, text in _FAKE_TORCH.items():
        (fake / "torch" / rel).parent.mkdir(parents=True, exist_ok=True)
        (fake / "torch" / rel).write_text(text.format(version=old))
    env = {k: val for k, val in os.environ.items() if k not in ("SOLO_NO_EXT", "SOLO_REQUIREMENTS_ONLY")}
    env["PYTHONPATH"] = str(fake)
    r = subprocess.run(
        [sys.executable, "setup.py", "build_ext"],
        cwd=str(src),
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert r.returncode != 0
    assert f"torch {old} is installed, but solo supports torch{v.SUPPORTED_TORCH}" in r.stderr, r.stderr[-2000:]
    assert f"pip install 'torch{v.SUPPORTED_TORCH}'" in r.stderr
    assert not (src / "solo" / "_build_info.py").exists()  # refused before recording a build


def test_import_warns_under_a_torch_below_the_range(tmp_path):
    probe = (
        "import warnings, torch\n"
        "torch.__version__ = '2.10.0+cpu'\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    warnings.simplefilter('always')\n"
        "    import solo\n"
        "print('|'.join(str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)))\n"
    )
    out = _python_stdout(probe, tmp_path, ROOT)
    v = _versions_module()
    assert f"torch 2.10.0+cpu is installed, but solo supports torch{v.SUPPORTED_TORCH}" in out


def test_triton_backend_refused_below_the_range(monkeypatch):
    triton = pytest.importorskip("triton")
    from solo.ops import _backend

    v = _versions_module()
    assert _backend._triton_status() == (True, f"triton {triton.__version__}")
    monkeypatch.setattr(triton, "__version__", "3.5.1")
    ok, why = _backend._triton_status()
    assert not ok and why == f"triton 3.5.1 is installed, but solo supports triton{v.SUPPORTED_TRITON}: " + (
        f"pip install 'triton{v.SUPPORTED_TRITON}'"
    )
    assert _backend.backend_status("triton", "cpu") == (False, why)
