"""ImageNet-pretrained backbone weights: resolve a spec to a local file (downloading it once into torch.hub's cache),
check its hash, load it into a :class:`~solo.models.backbone.ResNet`.

A spec (``ModelConfig.backbone_weights``, ``python -m solo.train --backbone-weights``) is one of

* ``torchvision://resnet18|34|50|101``: the torchvision ImageNet file that the original SOLO's
  ``pretrained='torchvision://resnetXX'`` names (:data:`TORCHVISION_URLS`);
* an ``http://``, ``https://`` or ``file://`` URL: downloaded (copied) into the cache on first use;
* a local path: used where it is;
* ``None`` / ``"none"``: no pretrained weights (train from scratch).

The cache is torch.hub's: ``<torch.hub.get_dir()>/checkpoints`` (``$TORCH_HOME/hub/checkpoints``, by default
``~/.cache/torch/hub/checkpoints``), shared with torchvision. A file already there (downloaded earlier, or put
there by hand on an offline machine) is not downloaded again. A file name of the form ``<name>-<hex>.<ext>`` carries
the first hex digits of the file's SHA-256 (torch.hub's convention); that prefix is checked on every use, so an
incomplete or replaced file is caught before it is loaded.
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass

__all__ = [
    "TORCHVISION_URLS",
    "PretrainedWeightsError",
    "WeightsFile",
    "cache_dir",
    "file_sha256",
    "load_backbone_weights",
    "parse_weights_spec",
    "resolve_weights",
]

# The torchvision ImageNet files behind the original SOLO's ``pretrained='torchvision://resnetXX'``. The original
# (mmdet v1 / mmcv 0.2.x, SOLO_SPEC.md §3) resolves ``torchvision://`` through the ``model_urls`` of the torchvision
# of its time, which are these first-generation ("V1") files; the models of its model zoo were trained from them.
# torchvision's current ``IMAGENET1K_V1`` URLs name other files for ResNet-18/34/101 (resnet18-f37072fd,
# resnet34-b627a593, resnet101-63fe2227): the same weights re-saved, by torchvision's account; ResNet-50's V1 file
# is unchanged (its V2 file, resnet50-0676ba61, was trained with a newer recipe and is not what SOLO used). Any of
# them can be given as an explicit URL.
TORCHVISION_URLS: dict[str, str] = {
    "resnet18": "https://download.pytorch.org/models/resnet18-5c106cde.pth",
    "resnet34": "https://download.pytorch.org/models/resnet34-333f7ec4.pth",
    "resnet50": "https://download.pytorch.org/models/resnet50-19c8e357.pth",
    "resnet101": "https://download.pytorch.org/models/resnet101-5d3b4d8f.pth",
}

# torch.hub's name convention: "<name>-<first hex digits of the SHA-256>.<ext>" (resnet50-19c8e357.pth)
_HASH_NAME = re.compile(r"^.+-([0-9a-f]{6,64})\.[A-Za-z0-9.]+$")


class PretrainedWeightsError(RuntimeError):
    """The backbone weights cannot be had (offline, missing file) or are bad (hash, truncated, wrong model)."""


@dataclass(frozen=True)
class WeightsFile:
    """A resolved spec: ``path`` the local file; ``url`` where it came from (None for a local path);
    ``sha256`` its full SHA-256; ``checked_prefix`` the hash prefix of the file name it matched (None: the name
    carries none); ``downloaded`` whether this call fetched it."""

    spec: str
    path: str
    url: str | None
    sha256: str
    checked_prefix: str | None
    downloaded: bool

    def describe(self) -> str:
        """One log line: where from, where, and the hash check."""
        src = f"{self.spec} -> " if self.spec != self.path else ""
        how = "downloaded to" if self.downloaded else ("cached" if self.url else "local file")
        if self.checked_prefix:
            check = f"sha256 {self.sha256[:16]}... matches the hash prefix {self.checked_prefix} of the file name"
        else:
            check = f"sha256 {self.sha256[:16]}... (the file name carries no hash to check)"
        return f"{src}{how} {self.path} ({check})"


def cache_dir() -> str:
    """The download cache: ``<torch.hub.get_dir()>/checkpoints`` (``$TORCH_HOME/hub/checkpoints``)."""
    import torch.hub

    return os.path.join(torch.hub.get_dir(), "checkpoints")


def parse_weights_spec(spec: str | None) -> tuple[str, str | None] | None:
    """``(kind, url)`` for a spec: kind ``"url"`` (with the URL; ``torchvision://`` resolved) or ``"path"``
    (url None); None for no weights (``None``, ``""``, ``"none"``). ``ValueError`` for an unknown
    ``torchvision://`` name or an unsupported URL scheme."""
    if spec is None or str(spec).strip().lower() in ("", "none"):
        return None
    spec = str(spec).strip()
    if spec.startswith("torchvision://"):
        name = spec[len("torchvision://") :]
        if name not in TORCHVISION_URLS:
            raise ValueError(f"unknown torchvision weights {spec!r}; known: {sorted(TORCHVISION_URLS)}")
        return "url", TORCHVISION_URLS[name]
    scheme = urllib.parse.urlparse(spec).scheme
    if scheme in ("http", "https", "file"):
        return "url", spec
    if "://" in spec:
        raise ValueError(f"backbone weights {spec!r}: unsupported scheme {scheme!r} (http, https, file, torchvision)")
    return "path", None


def file_sha256(path: str) -> str:
    """Hex SHA-256 of a file (read in 1 MiB chunks: a ResNet-101 file is 170 MB)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _check_hash(path: str, name: str, what: str, fix: str = "delete it and retry") -> tuple[str, str | None]:
    """(sha256, checked prefix or None) of the file ``path``; raises when it is empty or its hash does not match
    the prefix in ``name`` (its file name). ``what`` names the file in the messages, ``fix`` says what to do."""
    size = os.path.getsize(path)
    if size == 0:
        raise PretrainedWeightsError(f"{what} is empty (0 bytes): an interrupted download? {fix[0].upper()}{fix[1:]}")
    digest = file_sha256(path)
    m = _HASH_NAME.match(name)
    if m is None:
        return digest, None
    prefix = m.group(1)
    if not digest.startswith(prefix):
        raise PretrainedWeightsError(
            f"{what}: wrong hash: its sha256 is {digest[: len(prefix)]}... but the file name says {prefix} "
            f"({size} bytes: an incomplete download, or another file under this name); {fix}"
        )
    return digest, prefix


def resolve_weights(
    spec: str | None,
    *,
    download: bool = True,
    progress: bool = False,
    log: Callable[[str], None] | None = None,
) -> WeightsFile | None:
    """The local file of ``spec`` (see the module docstring), downloaded into :func:`cache_dir` when it is a URL
    whose file is not there yet (``download=False``: raise instead). The hash prefix in the file name is checked.
    None for no weights. Raises :class:`PretrainedWeightsError` naming the URL, the cache file and the problem."""
    parsed = parse_weights_spec(spec)
    if parsed is None:
        return None
    kind, url = parsed
    if kind == "path":
        path = os.path.abspath(os.path.expanduser(str(spec)))
        if not os.path.isfile(path):
            raise PretrainedWeightsError(f"backbone weights file not found: {path}")
        digest, prefix = _check_hash(path, os.path.basename(path), f"backbone weights file {path}")
        return WeightsFile(str(spec), path, None, digest, prefix, False)

    name = os.path.basename(urllib.parse.urlparse(url).path)
    if not name:
        raise PretrainedWeightsError(f"backbone weights URL {url!r} names no file")
    folder = cache_dir()
    path = os.path.join(folder, name)
    downloaded = False
    if not os.path.isfile(path):
        if not download:
            raise PretrainedWeightsError(f"backbone weights {url} are not in the cache: {path} does not exist")
        import torch.hub

        os.makedirs(folder, exist_ok=True)
        if log is not None:
            log(f"backbone weights: downloading {url} to {path}")
        # Into a name of our own first, checked, then renamed: a failed or wrong download never sits in the cache
        # under the real name, and processes downloading at once (several nodes on a shared disk) do not collide.
        tmp = f"{path}.{os.getpid()}.download"
        # download_url_to_file takes no timeout: without one, a host that never answers (a firewall dropping packets)
        # would hang the run instead of giving the offline error. 60 s without a byte, for this download only.
        old_timeout = socket.getdefaulttimeout()
        socket.setdefaulttimeout(60.0 if old_timeout is None else old_timeout)
        try:
            torch.hub.download_url_to_file(url, tmp, hash_prefix=None, progress=progress)
            digest, prefix = _check_hash(
                tmp, name, f"backbone weights downloaded from {url} (for {path})", "not kept in the cache"
            )
            os.replace(tmp, path)
        except PretrainedWeightsError:
            raise
        except OSError as e:  # urllib.error.URLError is an OSError: offline, unknown host, missing file:// source
            raise PretrainedWeightsError(
                f"cannot download the backbone weights {url} ({type(e).__name__}: {e}); the cache folder is {folder} "
                f"(file {path})"
            ) from None
        finally:
            socket.setdefaulttimeout(old_timeout)
            if os.path.exists(tmp):
                os.remove(tmp)
        downloaded = True
    else:
        digest, prefix = _check_hash(path, name, f"cached backbone weights {path} (from {url})")
    return WeightsFile(str(spec), path, url, digest, prefix, downloaded)


def load_backbone_weights(backbone, weights: WeightsFile | str) -> int:
    """Load a resolved file into ``backbone`` (a :class:`~solo.models.backbone.ResNet`) with
    ``ResNet.load_torchvision_weights``; returns the number of tensors loaded. A bad file raises
    :class:`PretrainedWeightsError` naming the file and what is wrong (truncated, not a ResNet, another depth)."""
    path = weights.path if isinstance(weights, WeightsFile) else os.fspath(weights)
    try:
        return backbone.load_torchvision_weights(path)
    except (ValueError, FileNotFoundError) as e:
        raise PretrainedWeightsError(str(e)) from None
