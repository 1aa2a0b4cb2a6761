"""Fetch published weights into torch's hub cache: torchvision's ImageNet files and Places365.

    fetch_torchvision(url)            <hub>/checkpoints/resnet18-f37072fd.pth, cached or fetched
    fetch_places365("resnet18")       <hub>/checkpoints/places365/resnet18_places365.pth.tar

``<hub>`` is ``torch.hub.get_dir()`` (``$TORCH_HOME/hub``), where torchvision keeps its own
downloads, so a file torchvision fetched is used as it is. A download goes to a ``.part`` file
next to its target, resumes an interrupted transfer with an HTTP Range request
(:func:`netdissect.data.download.fetch_resumable`) and is moved into place only once it passed
its check, so the cache never holds half a file or a rejected one:

- torchvision's files carry the first hex digits of their sha256 in their name, checked as
  ``torch.hub.load_state_dict_from_url(check_hash=True)`` does. ``$NETDISSECT_TORCHVISION_MIRROR``
  (a base URL) replaces https://download.pytorch.org/models.
- The Places365 CNNs of the CSAIL authors (alexnet, resnet18, resnet50, densenet161) carry no
  hash in their names: the sha256 of the first download is recorded in
  ``<hub>/checkpoints/places365/manifest.json`` and the file is checked against it on every
  later use. ``$NETDISSECT_PLACES365_URL`` (a base URL) replaces
  http://places2.csail.mit.edu/models_places365/.

Processes that fetch into the same folder at once (the ranks of a distributed run) take turns
through a lock file where the system has ``fcntl``.
"""
from __future__ import annotations

import contextlib
import datetime
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import torch

from netdissect.errors import DownloadError, ModelError, WeightsError
from netdissect.files import atomic_write_json, sha256_file
from netdissect.models.weights import name_hash_prefix

__all__ = ["TORCHVISION_BASE_URL", "TORCHVISION_MIRROR_ENV", "PLACES365_BASE_URL",
           "PLACES365_URL_ENV", "PLACES365_ARCHS", "checkpoints_dir", "torchvision_url",
           "fetch_torchvision", "places365_url", "places365_file", "fetch_places365"]

TORCHVISION_BASE_URL = "https://download.pytorch.org/models"
TORCHVISION_MIRROR_ENV = "NETDISSECT_TORCHVISION_MIRROR"
PLACES365_BASE_URL = "http://places2.csail.mit.edu/models_places365/"
PLACES365_URL_ENV = "NETDISSECT_PLACES365_URL"
#: The architectures whose Places365 weights the CSAIL authors publish as PyTorch checkpoints.
PLACES365_ARCHS: tuple[str, ...] = ("alexnet", "resnet18", "resnet50", "densenet161")
MANIFEST = "manifest.json"


def checkpoints_dir() -> Path:
    """torch's hub cache of weight files: ``torch.hub.get_dir()/checkpoints``."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def torchvision_url(url: str) -> str:
    """``url`` with :data:`TORCHVISION_BASE_URL` replaced by ``$NETDISSECT_TORCHVISION_MIRROR``."""
    mirror = os.environ.get(TORCHVISION_MIRROR_ENV)
    if mirror and url.startswith(TORCHVISION_BASE_URL + "/"):
        return mirror.rstrip("/") + url[len(TORCHVISION_BASE_URL):]
    return url


def fetch_torchvision(url: str, progress: bool | None = None) -> Path:
    """torchvision's weights file ``url`` in the hub cache, downloaded (with its hash checked)
    when it is not there yet.

    The file name's hash prefix is checked before the file is moved into the cache; a file that
    fails is deleted and WeightsError says so. ``progress`` (default: stderr is a terminal)
    shows a progress bar. A file already in the cache is returned unchecked here:
    :func:`~netdissect.models.weights.load_weights` checks its hash when it loads it.
    """
    name = os.path.basename(urlparse(url).path)
    folder = checkpoints_dir()
    path = folder / name
    if path.is_file():
        return path
    source = torchvision_url(url)
    hint = (f"Set {TORCHVISION_MIRROR_ENV} to a mirror of {TORCHVISION_BASE_URL}, or download "
            f"{name} elsewhere and put it into {folder} (or pass it as --weights FILE).")
    with _folder_lock(folder):
        if path.is_file():  # fetched by another process meanwhile
            return path
        part = _download(source, path, progress, hint)
        sha256, prefix = sha256_file(part), name_hash_prefix(name)
        if prefix and not sha256.startswith(prefix):
            part.unlink()
            raise WeightsError(
                f"the file downloaded from {source} is not torchvision's {name}: its sha256 "
                f"{sha256[:16]}... does not start with {prefix}, the hash in its name (a corrupted "
                f"transfer or a wrong mirror). It was deleted; run again to download it anew. "
                f"{hint}")
        os.replace(part, path)
    return path


def places365_url(arch: str) -> str:
    """Where the Places365 weights of ``arch`` are fetched from (``$NETDISSECT_PLACES365_URL``
    or :data:`PLACES365_BASE_URL`, plus the file name)."""
    base = os.environ.get(PLACES365_URL_ENV) or PLACES365_BASE_URL
    return base.rstrip("/") + "/" + places365_file(arch)


def places365_file(arch: str) -> str:
    """The published file name of the Places365 weights of ``arch``; ModelError for others."""
    if arch not in PLACES365_ARCHS:
        raise ModelError(
            f"no Places365 weights are published for {arch!r}: weights='places365' works for "
            f"{', '.join(PLACES365_ARCHS)}. For another model pass a weights FILE, 'imagenet' "
            "or 'random'.")
    return f"{arch}_places365.pth.tar"


def fetch_places365(arch: str, progress: bool | None = None) -> Path:
    """The Places365 checkpoint of ``arch`` in ``<hub>/checkpoints/places365``, downloaded (and
    its sha256 recorded in the folder's manifest) when it is not there yet.

    A file already there is checked against the sha256 the manifest recorded (a file found
    without a record is recorded as it is). Raises ModelError for an architecture without
    published Places365 weights, DownloadError when the download fails and WeightsError when
    the file changed since it was recorded. ``progress`` (default: stderr is a terminal) shows
    a progress bar.
    """
    name = places365_file(arch)
    folder = checkpoints_dir() / "places365"
    path = folder / name
    source = places365_url(arch)
    hint = (f"Set {PLACES365_URL_ENV} to a mirror holding {name}, or download it elsewhere and "
            f"pass it as --weights FILE (or put it into {folder}).")
    with _folder_lock(folder):
        manifest = _read_manifest(folder / MANIFEST)
        entry = manifest.get(name)
        if path.is_file():
            sha256 = sha256_file(path)
            if entry is None:
                _record(folder, manifest, name, source, path, sha256, "found in the cache")
            elif sha256 != entry.get("sha256"):
                raise WeightsError(
                    f"{path} changed since it was recorded in {folder / MANIFEST}: its sha256 is "
                    f"{sha256}, expected {entry.get('sha256')} (from {entry.get('url')}). Delete "
                    f"{path} to download it again, or restore the original file.")
            return path
        part = _download(source, path, progress, hint)
        head = _head(part)
        if not (head.startswith(b"\x80") or head == b"PK\x03\x04"):
            part.unlink()
            raise DownloadError(
                f"{source} did not send a PyTorch checkpoint (the file starts with {head!r}, "
                f"perhaps an error page); it was deleted. {hint}")
        sha256 = sha256_file(part)
        os.replace(part, path)
        _record(folder, manifest, name, source, path, sha256, "downloaded")
    return path


def _download(source: str, path: Path, progress: bool | None, hint: str) -> Path:
    """Bring ``<path>.part`` up to the complete file at ``source`` and return it."""
    from netdissect.data.download import fetch_resumable

    if progress is None:
        progress = sys.stderr.isatty()
    path.parent.mkdir(parents=True, exist_ok=True)
    print(f"Downloading {source} to {path}", file=sys.stderr)
    return fetch_resumable(source, path.with_name(path.name + ".part"), progress=progress,
                           hint=hint)


def _head(path: Path) -> bytes:
    """The first 4 bytes of ``path``."""
    with open(path, "rb") as f:
        return f.read(4)


def _read_manifest(path: Path) -> dict[str, dict]:
    """The manifest at ``path`` (file name -> record); empty when there is none."""
    if not path.is_file():
        return {}
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise WeightsError(
            f"cannot read {path} ({err}); delete it and the weight files next to it to download "
            "them again.") from None
    if not isinstance(manifest, dict) or not all(isinstance(v, dict) for v in manifest.values()):
        raise WeightsError(f"{path} is not a netdissect weights manifest; delete it and the "
                           "weight files next to it to download them again.")
    return manifest


def _record(folder: Path, manifest: dict[str, dict], name: str, url: str, path: Path,
            sha256: str, how: str) -> None:
    """Record ``name``'s sha256 in the folder's manifest, written atomically."""
    manifest = {**manifest, name: {
        "url": url,
        "size": path.stat().st_size,
        "sha256": sha256,
        "how": how,
        "recorded": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }}
    try:
        atomic_write_json(folder / MANIFEST, manifest, indent=2)
    except OSError as err:
        raise WeightsError(
            f"cannot record the sha256 of {path} in {folder / MANIFEST} ({err}); make {folder} "
            "writable, or pass the file as --weights FILE.") from None


@contextlib.contextmanager
def _folder_lock(folder: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``folder/.netdissect-fetch.lock`` (no lock without fcntl or
    when the folder is read-only)."""
    try:
        import fcntl
    except ImportError:  # Windows
        yield
        return
    try:
        folder.mkdir(parents=True, exist_ok=True)
        handle = open(folder / ".netdissect-fetch.lock", "a")
    except OSError:
        yield
        return
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
