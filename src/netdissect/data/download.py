"""Download, verify and unpack the Broden dataset (``netdissect download broden``).

The Broden archives (``broden1_224.zip``, ``broden1_227.zip``, ``broden1_384.zip``) are large
and their original host has been down repeatedly, so this module is written to survive bad
networks and bad mirrors:

- the archive is streamed with ``urllib`` into ``<dest>/<name>.zip.part`` and an interrupted
  download resumes with an HTTP ``Range`` request (a server that ignores the range is handled
  by starting over);
- the size and sha256 are checked against :data:`BRODEN_ARCHIVES` where known; where not, they
  are computed and recorded in ``<dest>/<name>.manifest.json`` with the URL and date;
- every zip entry is checked (no absolute paths, ``..``, drive letters or symlinks) before
  anything is extracted, extraction happens in a hidden folder inside ``dest`` and the result
  is renamed into place only once it is complete and looks like a Broden folder;
- a second call with the dataset already in place returns at once.

The base URL comes from the ``url`` argument, else the ``NETDISSECT_BRODEN_URL`` environment
variable, else :data:`DEFAULT_BASE_URL`. The command is in netdissect/cli/data.py.
"""

from __future__ import annotations

import csv
import datetime
import http.client
import json
import os
import re
import shutil
import stat
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Mapping

from tqdm.auto import tqdm

from netdissect.errors import DownloadError, SettingsError
from netdissect.files import atomic_write_json, sha256_file

__all__ = [
    "ArchiveInfo",
    "BRODEN_ARCHIVES",
    "DEFAULT_BASE_URL",
    "URL_ENV_VAR",
    "DownloadError",
    "DownloadInterrupted",
    "broden_url",
    "check_broden_folder",
    "download_broden",
    "fetch_resumable",
    "safe_extract",
    "mirror_hint",
]

DEFAULT_BASE_URL = "http://netdissect.csail.mit.edu/data/"
URL_ENV_VAR = "NETDISSECT_BRODEN_URL"
USER_AGENT = "netdissect-download/0.1"
CHUNK_BYTES = 1 << 20


@dataclass(frozen=True)
class ArchiveInfo:
    """One downloadable archive: its file name and, where known, its size and sha256."""

    name: str
    size: int | None = None
    sha256: str | None = None

    @property
    def folder(self) -> str:
        """The dataset folder the archive unpacks to, e.g. ``broden1_224``."""
        return self.name[: -len(".zip")] if self.name.endswith(".zip") else self.name


# Sizes and hashes stay None until someone records them from a verified copy (the manifest
# written next to a download holds both); never fill them in from memory.
BRODEN_ARCHIVES: dict[str, ArchiveInfo] = {
    "224": ArchiveInfo("broden1_224.zip"),
    "227": ArchiveInfo("broden1_227.zip"),
    "384": ArchiveInfo("broden1_384.zip"),
}


class DownloadInterrupted(DownloadError):
    """The transfer stopped early; the ``.part`` file is kept and the next call resumes it."""


class _NoSpace(DownloadError):
    """The disk is too full: nothing is wrong with the archive, so it is kept."""


def mirror_hint() -> str:
    return (
        f"If the host is down, pass a mirror with --url (or the url= argument) or set "
        f"{URL_ENV_VAR}; a base URL ending in '/' or a full URL to the .zip both work."
    )


def broden_url(archive: str, url: str | None = None) -> str:
    """Return the URL to fetch ``archive`` from.

    ``url`` (else ``$NETDISSECT_BRODEN_URL``, else :data:`DEFAULT_BASE_URL`) is either a full
    URL whose path ends in ``.zip``, used as is, or a base URL to which the archive name is
    appended.
    """
    base = url or os.environ.get(URL_ENV_VAR) or DEFAULT_BASE_URL
    if urllib.parse.urlsplit(base).path.lower().endswith(".zip"):
        return base
    return base.rstrip("/") + "/" + archive


# ----------------------------------------------------------------------------------------------
# Transfer


def _content_range(value: str | None) -> tuple[int | None, int | None]:
    """Parse ``bytes START-END/TOTAL`` or ``bytes */TOTAL`` into (start, total)."""
    match = re.fullmatch(r"\s*bytes\s+(?:(\d+)-\d+|\*)/(\d+|\*)\s*", value or "")
    if not match:
        return None, None
    start = int(match.group(1)) if match.group(1) is not None else None
    total = int(match.group(2)) if match.group(2) != "*" else None
    return start, total


def _check_free_space(folder: Path, needed: int, what: str) -> None:
    free = shutil.disk_usage(folder).free
    if needed > free:
        raise _NoSpace(
            f"not enough disk space in {folder} to {what}: need {needed:,} bytes, "
            f"{free:,} free. Free some space or choose another --dest."
        )


def _open(url: str, offset: int, timeout: float, hint: str | None = None):
    """Send the GET (with a Range from ``offset`` when > 0); return the response or HTTPError 416.

    ``hint`` (default: the Broden :func:`mirror_hint`) ends the message of a failure.
    """
    hint = mirror_hint() if hint is None else hint
    headers = {"User-Agent": USER_AGENT}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416 and offset:
            return err
        err.close()
        raise DownloadError(
            f"the server answered HTTP {err.code} {err.reason} for {url}. {hint}"
        ) from None
    except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError) as err:
        reason = getattr(err, "reason", err)
        raise DownloadError(f"could not reach {url} ({reason}). {hint}") from None


def _fetch(url: str, part: Path, expected_size: int | None, progress: bool, timeout: float,
           hint: str | None = None) -> None:
    """Bring ``part`` up to the complete file at ``url``, resuming what it already holds.

    Raises :class:`DownloadInterrupted` (keeping ``part``) when the transfer stops early and
    :class:`DownloadError` for everything that a retry would not fix; ``hint`` (default: the
    Broden :func:`mirror_hint`) ends the messages that a mirror could fix.
    """
    hint = mirror_hint() if hint is None else hint
    have = part.stat().st_size if part.exists() else 0
    if expected_size is not None and have > expected_size:
        part.unlink()
        have = 0
    if expected_size is not None and have == expected_size:
        return
    response = _open(url, have, timeout, hint)
    with response:
        status = getattr(response, "status", None) or 200
        if status == 416:
            _, total = _content_range(response.headers.get("Content-Range"))
            if total is None or total == have:
                return  # Already complete; the size and sha256 checks decide.
            part.unlink()  # The part is longer than the file: start over.
            return _fetch(url, part, expected_size, progress, timeout, hint)
        if status == 206:
            start, total = _content_range(response.headers.get("Content-Range"))
            if start != have:
                if not have:
                    raise DownloadError(
                        f"{url} answered a partial file to a plain request; use another mirror. "
                        f"{hint}"
                    )
                part.unlink(missing_ok=True)  # Not the range we asked for: start over.
                return _fetch(url, part, expected_size, progress, timeout, hint)
            mode = "ab"
        else:
            if have and progress:
                tqdm.write(f"{url}: the server does not support resuming; starting over.")
            have, mode = 0, "wb"
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
        if expected_size is not None and total is not None and total != expected_size:
            raise DownloadError(
                f"{url} is {total:,} bytes but {part.name[: -len('.part')]} should be "
                f"{expected_size:,} bytes: refusing a different file. {hint}"
            )
        if total is not None:
            _check_free_space(part.parent, total - have, f"download {url}")
        with open(part, mode) as f, tqdm(
            total=total, initial=have, unit="B", unit_scale=True, unit_divisor=1024,
            desc=part.name[: -len(".part")], disable=not progress, leave=False,
        ) as bar:
            try:
                while chunk := response.read(CHUNK_BYTES):
                    f.write(chunk)
                    bar.update(len(chunk))
            except (OSError, http.client.HTTPException) as err:
                raise DownloadInterrupted(
                    f"the download of {url} was interrupted after {f.tell():,} bytes ({err!r}); "
                    f"run the same command again to resume from {part}."
                ) from None
    size = part.stat().st_size
    if total is not None and size != total:
        raise DownloadInterrupted(
            f"the download of {url} stopped after {size:,} of {total:,} bytes; run the same "
            f"command again to resume from {part}."
        )


def fetch_resumable(url: str, part: str | Path, *, expected_size: int | None = None,
                    progress: bool = True, timeout: float = 60, retries: int = 3,
                    hint: str | None = None) -> Path:
    """Download ``url`` into ``part``, resuming what it holds (HTTP Range); return ``part``.

    An interrupted transfer is resumed up to ``retries`` times; after that
    :class:`DownloadInterrupted` is raised and ``part`` is kept, so a later call resumes it.
    ``hint`` (default: the Broden :func:`mirror_hint`) ends the error messages. The caller
    checks the complete file and moves it into place.
    """
    part = Path(part)
    for attempt in range(retries + 1):
        try:
            _fetch(url, part, expected_size, progress, timeout, hint)
            return part
        except DownloadInterrupted as err:
            if attempt == retries:
                raise
            if progress:
                tqdm.write(f"{err} Retrying now ({attempt + 1}/{retries}).")
    return part


# ----------------------------------------------------------------------------------------------
# Extraction


def _unsafe_reason(info: zipfile.ZipInfo) -> str | None:
    """Say why a zip entry must not be extracted, or None when it is a plain file or folder."""
    name = info.filename
    parts = re.split(r"[\\/]", name)
    if name.startswith(("/", "\\")):
        return "absolute path"
    if re.match(r"^[A-Za-z]:", name) or any(":" in p for p in parts):
        return "drive letter"
    if ".." in parts:
        return "'..' component"
    file_type = stat.S_IFMT(info.external_attr >> 16)
    if file_type == stat.S_IFLNK:
        return "symbolic link"
    if file_type not in (0, stat.S_IFREG, stat.S_IFDIR):
        return "special file"
    return None


def _content_root(names: list[str]) -> str:
    """Return the folder inside the archive that holds ``index.csv`` ('' for the top)."""
    if "index.csv" in names:
        return ""
    tops = {PurePosixPath(n).parts[0] for n in names if PurePosixPath(n).parts}
    if len(tops) == 1:
        top = tops.pop()
        if f"{top}/index.csv" in names:
            return top
    raise DownloadError(
        "the archive holds no index.csv at its top or in a single top folder: it is not a "
        f"Broden release. {mirror_hint()}"
    )


def safe_extract(archive: str | Path, target: str | Path) -> Path:
    """Unpack a Broden zip into the new folder ``target``, atomically and safely.

    Every entry is checked before anything is written; the archive is extracted into a hidden
    folder next to ``target``, checked with :func:`check_broden_folder`, and renamed to
    ``target`` only when complete. The archive may hold the dataset under one top folder
    (``broden1_224/index.csv``, as the official ones) or at its top (``index.csv``).
    """
    archive, target = Path(archive), Path(target)
    if target.exists():
        raise DownloadError(f"{target} already exists; remove it to extract again.")
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as err:
        raise DownloadError(f"{archive} is not a readable zip archive ({err}).") from None
    with zf:
        members = zf.infolist()
        for info in members:
            reason = _unsafe_reason(info)
            if reason:
                raise DownloadError(
                    f"refusing to extract {archive}: entry {info.filename!r} is a {reason}. "
                    "The archive is not a genuine Broden release; use another --url."
                )
        root = _content_root([info.filename for info in members])
        _check_free_space(target.parent, sum(i.file_size for i in members), f"extract {archive}")
        staging = target.parent / f".{target.name}.extracting"
        if staging.exists():
            shutil.rmtree(staging)  # Left by an extraction that was killed.
        try:
            staging.mkdir()
            zf.extractall(staging, members)
            content = staging / root if root else staging
            check_broden_folder(content)
            os.replace(content, target)
        except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError) as err:
            raise DownloadError(f"{archive} is damaged ({err}).") from None
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return target


# ----------------------------------------------------------------------------------------------
# Checking the result


def check_broden_folder(folder: str | Path) -> None:
    """Check that ``folder`` is a readable Broden dataset; raise DownloadError if not.

    Reads it with the Broden reader (every CSV file, every index row, paths confined to
    ``images/``) and checks that every image and label plane the index names exists.
    """
    from netdissect.data.broden import BrodenError, load_broden

    folder = Path(folder)
    advice = (
        f"The dataset in {folder} is incomplete or not in Broden format: delete it and run "
        f"`netdissect download broden` again (with --url for another mirror if this recurs)."
    )
    try:
        broden = load_broden(folder)
    except BrodenError as err:
        raise DownloadError(f"{err} {advice}") from None
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise DownloadError(f"cannot read the dataset in {folder} ({err}). {advice}") from None
    missing = broden.check_files()
    if missing:
        raise DownloadError(f"{len(missing)} file(s) named in {folder / 'index.csv'} are missing, "
                            f"e.g. {folder / 'images' / missing[0]}. {advice}")


# ----------------------------------------------------------------------------------------------
# The whole download


def _verify_archive(path: Path, info: ArchiveInfo, url: str) -> tuple[int, str]:
    """Check a complete archive's size and sha256 against ``info``; delete it on a mismatch."""
    size, digest = path.stat().st_size, sha256_file(path)
    problem = None
    if info.size is not None and size != info.size:
        problem = f"its size is {size:,} bytes, expected {info.size:,}"
    elif info.sha256 is not None and digest != info.sha256.lower():
        problem = f"its sha256 is {digest}, expected {info.sha256.lower()}"
    elif not zipfile.is_zipfile(path):
        problem = "it is not a zip archive"
    if problem:
        path.unlink()
        raise DownloadError(
            f"the file downloaded from {url} is corrupted or not the expected archive: "
            f"{problem}. It was deleted; run the command again, or use another mirror. "
            f"{mirror_hint()}"
        )
    return size, digest


def download_broden(
    variant: str = "224",
    dest: str | Path = "dataset",
    url: str | None = None,
    progress: bool = True,
    timeout: float = 60,
    *,
    known: Mapping[str, ArchiveInfo] | None = None,
    retries: int = 3,
    keep_archive: bool = False,
) -> Path:
    """Download, verify and unpack Broden; return the dataset folder ``<dest>/broden1_<variant>``.

    ``variant`` is a key of ``known`` (default :data:`BRODEN_ARCHIVES`: "224", "227", "384").
    ``url`` overrides the base URL or names the .zip itself (see :func:`broden_url`).
    ``retries`` is how many times an interrupted transfer is resumed before giving up; the
    ``.part`` file stays, so a later call resumes too. The archive is deleted after a
    successful extraction unless ``keep_archive``. Size and sha256 go to
    ``<dest>/broden1_<variant>.manifest.json``. Every failure raises :class:`DownloadError`.
    """
    if timeout <= 0:
        raise SettingsError(f"--timeout must be above 0 seconds, got {timeout}")
    table = BRODEN_ARCHIVES if known is None else known
    if variant not in table:
        raise DownloadError(f"unknown Broden variant {variant!r}; choose one of {sorted(table)}.")
    info = table[variant]
    dest = Path(dest)
    folder = dest / info.folder
    manifest_path = dest / f"{info.folder}.manifest.json"

    if folder.exists():
        check_broden_folder(folder)
        if info.sha256 and manifest_path.is_file():
            recorded = json.loads(manifest_path.read_text(encoding="utf-8")).get("sha256")
            if recorded and recorded != info.sha256.lower():
                raise DownloadError(
                    f"{folder} was unpacked from an archive with sha256 {recorded}, but "
                    f"{info.name} should have {info.sha256.lower()}: delete {folder} and "
                    f"{manifest_path} to download it again."
                )
        return folder

    source = broden_url(info.name, url)
    dest.mkdir(parents=True, exist_ok=True)
    archive = dest / info.name
    if not archive.exists():
        part = dest / f"{info.name}.part"
        if progress:
            tqdm.write(f"Downloading {source} to {archive}")
        fetch_resumable(source, part, expected_size=info.size, progress=progress,
                        timeout=timeout, retries=retries)
        size, digest = _verify_archive(part, info, source)
        os.replace(part, archive)
    else:
        size, digest = _verify_archive(archive, info, source)  # Kept from an earlier run.

    if progress:
        tqdm.write(f"Extracting {archive} to {folder}")
    try:
        safe_extract(archive, folder)
    except _NoSpace:
        raise
    except DownloadError as err:
        if not keep_archive:
            archive.unlink()
            raise DownloadError(f"{err} ({archive} was deleted.)") from None
        raise
    atomic_write_json(manifest_path, indent=2, value={
        "archive": info.name,
        "variant": variant,
        "folder": info.folder,
        "url": source,
        "size": size,
        "sha256": digest,
        "verified_against_table": info.sha256 is not None,
        "downloaded": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    })
    if not keep_archive:
        archive.unlink()
    return folder
