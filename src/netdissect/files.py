"""Every file netdissect writes goes through here: atomically, so never half a file.

    atomic_write_bytes / atomic_write_text / atomic_write_json / atomic_torch_save
    atomic_write_files({path: bytes})   several files as one: all renamed, or none
    write_csv(path, rows)         dict rows with a header, columns in first-seen order
    sha256_file(path)             hex digest, read in chunks
    new_figure(...), save_figure(fig, stem)   matplotlib's object API (no pyplot, no backend
                                  switch), saved as STEM.png and STEM.svg
    confined(root, relative)      a path from a data file, refused if it leaves `root`

A write goes to a temporary file in the target folder and is renamed over the target, so a
crash or a full disk leaves the previous file (or none), never a truncated one.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import tempfile
from pathlib import Path

__all__ = ["atomic_write_bytes", "atomic_write_files", "atomic_write_text", "atomic_write_json",
           "atomic_torch_save", "json_bytes", "torch_bytes", "csv_bytes", "write_csv", "sha256_file", "new_figure", "save_figure", "confined", "FIGURE_DPI"]

FIGURE_DPI = 150
_CHUNK = 1 << 20


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` through a temporary file and a rename: never half a file."""
    atomic_write_files({path: data})


def atomic_write_files(contents: dict) -> None:
    """Write several files as one ({path: bytes}): every file goes to a temporary name first,
    and only when all are written are they renamed into place.  A failure on the way (a full
    disk) leaves every target as it was: no new results mixed with old ones."""
    written: list[tuple[str, Path]] = []
    try:
        for path, data in contents.items():
            path = Path(path)
            written.append((_write_temp(path, data), path))
    except BaseException:
        for tmp, _ in written:
            if os.path.exists(tmp):
                os.unlink(tmp)
        raise
    for tmp, path in written:
        os.replace(tmp, path)


def _write_temp(path: Path, data: bytes) -> str:
    """`data` in a new temporary file next to `path`; its name."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; results are ordinary files
    except BaseException:
        os.unlink(tmp)
        raise
    return tmp


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, value, indent: int = 1) -> None:
    atomic_write_bytes(path, json_bytes(value, indent))


def atomic_torch_save(path: str | os.PathLike, value) -> None:
    """`torch.save` through a temporary file (read back with `weights_only=True`)."""
    atomic_write_bytes(path, torch_bytes(value))


def json_bytes(value, indent: int = 1) -> bytes:
    """`value` as the JSON text netdissect writes (UTF-8, a final newline)."""
    return (json.dumps(value, indent=indent) + "\n").encode("utf-8")


def torch_bytes(value) -> bytes:
    """`value` as `torch.save` writes it."""
    import torch

    buffer = io.BytesIO()
    torch.save(value, buffer)
    return buffer.getvalue()


def csv_bytes(rows: list[dict], fieldnames: list[str] | None = None) -> bytes:
    """`rows` (dicts) as CSV with a header; columns in first-seen order unless given."""
    if fieldnames is None:
        fieldnames = []
        for row in rows:
            fieldnames += [k for k in row if k not in fieldnames]
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=fieldnames, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return text.getvalue().encode("utf-8")


def write_csv(path: str | os.PathLike, rows: list[dict], fieldnames: list[str] | None = None) -> Path:
    """Write `rows` (dicts) as CSV with a header, atomically; columns in first-seen order."""
    atomic_write_bytes(path, csv_bytes(rows, fieldnames))
    return Path(path)


def sha256_file(path: str | os.PathLike) -> str:
    """The hex sha256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def new_figure(width: float = 6.0, height: float = 4.0, nrows: int = 1, ncols: int = 1):
    """A matplotlib Figure and its axes (an nrows x ncols array), without pyplot: no display,
    no global backend switch, safe in notebooks and threads."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    return fig, fig.subplots(nrows, ncols, squeeze=False)


def save_figure(fig, stem: str | os.PathLike, dpi: int = FIGURE_DPI) -> list[Path]:
    """Save `fig` as STEM.png (at `dpi`) and STEM.svg, atomically; returns both paths."""
    stem = Path(stem)
    paths = []
    for fmt in ("png", "svg"):
        buffer = io.BytesIO()
        fig.savefig(buffer, format=fmt, dpi=dpi, bbox_inches="tight")
        path = stem.with_suffix(f".{fmt}")
        atomic_write_bytes(path, buffer.getvalue())
        paths.append(path)
    return paths


def confined(root: str | os.PathLike, relative: str, resolved: dict[str, str] | None = None) -> Path:
    """`root / relative`, or ValueError when `relative` is absolute or leads out of `root`
    (through `..` or a symbolic link).  Callers turn the error into their own, naming the file
    and row the path came from.  `resolved`: a dict the caller keeps while it checks many
    paths, to resolve each folder (and the root) once rather than once per file."""
    root = Path(root)
    if os.path.isabs(relative):
        raise ValueError(f"path {relative!r} leaves {root}; refusing to read it.")
    resolved = {} if resolved is None else resolved

    def real(path: str) -> str:
        if path not in resolved:
            resolved[path] = os.path.realpath(path)
        return resolved[path]

    folder, name = os.path.split(os.path.join(os.fspath(root), relative))
    target = os.path.join(real(folder), name)
    if name in ("", ".", "..") or os.path.islink(target):
        target = os.path.realpath(target)
    real_root = real(os.fspath(root))
    if os.path.commonpath([real_root, target]) != real_root:
        raise ValueError(f"path {relative!r} leaves {root}; refusing to read it.")
    return root / relative
