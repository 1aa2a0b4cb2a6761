"""Lists the experiments under a report folder in its overview page, from their records.

An experiment folder is one holding experiment.json, the common record every experiment
writes (netdissect.experiments.record: kind, layer, one-line summary, figure, tables).
`find_experiments` looks for records in the report folder and up to `DEPTH` folders below it;
the overview page lists them between two HTML comments (`pages.EXPERIMENTS_BEGIN` /
`EXPERIMENTS_END`).  `refresh_overviews`, called once an experiment has written its files,
rewrites only that part of the overview pages at or up to `DEPTH` folders above the
experiment, so a report that exists lists the new experiment without its strips or layer
pages being rebuilt.
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from netdissect.errors import ResultError
from netdissect.files import atomic_write_text, confined
from netdissect.report.pages import EXPERIMENTS_BEGIN, EXPERIMENTS_END, experiments_section

__all__ = ["Experiment", "find_experiments", "overview_pages_above", "refresh_overviews", "DEPTH"]

DEPTH = 3  # experiment folders are looked for this many levels below a report folder
SKIP = {"strips", "figures"}  # report folders that never hold experiments


@dataclass
class Experiment:
    """One experiment as the overview shows it; paths relative to the report folder, and
    only to files that exist."""

    kind: str  # rotate, compare, ablate, ...
    folder: str  # posix path relative to the report folder ("." for the folder itself)
    layer: str
    summary: str  # one line of plain text
    figure: str = ""  # the figure's PNG ("" when there is none)
    figure_link: str = ""  # what the figure links to: its SVG, else ""
    tables: list[str] = field(default_factory=list)

    @property
    def links(self) -> list[str]:
        """Every file of the experiment worth a link: its tables, then its figure files."""
        return [*self.tables, *(f for f in (self.figure, self.figure_link) if f)]


def _folders(root: Path, depth: int):
    """`root` and its subfolders up to `depth` levels down, skipping hidden and report folders."""
    yield root
    if depth == 0:
        return
    try:
        entries = sorted(os.scandir(root), key=lambda e: e.name)
    except OSError:
        return
    for entry in entries:
        if entry.is_dir(follow_symlinks=False) and not entry.name.startswith(".") \
                and entry.name not in SKIP:
            yield from _folders(Path(entry.path), depth - 1)


def _existing(folder: Path, name: str) -> bool:
    """Whether `name` (from a record) is a file inside `folder`."""
    try:
        return bool(name) and confined(folder, name).is_file()
    except (ValueError, OSError):
        return False


def read_experiment(folder: Path, root: Path) -> Experiment | None:
    """The experiment recorded in `folder`, its paths made relative to `root`; None (and a
    warning naming the file) when the record cannot be read."""
    from netdissect.experiments.record import read_record

    try:
        record = read_record(folder)
    except ResultError as e:
        warnings.warn(f"not listed in the report overview: {e}", stacklevel=3)
        return None
    rel = folder.relative_to(root).as_posix()
    prefix = "" if rel == "." else rel + "/"
    png, svg = (f"{record.figure}.{ext}" for ext in ("png", "svg"))
    has_png = bool(record.figure) and _existing(folder, png)
    return Experiment(record.kind, rel, record.layer, record.summary,
                      figure=prefix + png if has_png else "",
                      figure_link=prefix + svg if has_png and _existing(folder, svg) else "",
                      tables=[prefix + t for t in record.tables if _existing(folder, t)])


def find_experiments(root: str | os.PathLike) -> list[Experiment]:
    """Every experiment in `root` or up to `DEPTH` folders below it, in path order."""
    # imported here: importing the report need not load the experiments package
    from netdissect.experiments.record import RECORD_FILE

    root = Path(root)
    found = []
    for folder in _folders(root, DEPTH):
        if (folder / RECORD_FILE).is_file():
            experiment = read_experiment(folder, root)
            if experiment is not None:
                found.append(experiment)
    return found


def overview_pages_above(folder: str | os.PathLike) -> list[Path]:
    """The report overview pages (index.html with the experiments markers) in `folder` and up
    to `DEPTH` folders above it: the pages that list an experiment written to `folder`."""
    folder = Path(folder).resolve()
    pages = []
    for root in [folder, *folder.parents][:DEPTH + 1]:
        page = root / "index.html"
        try:
            if page.is_file() and EXPERIMENTS_BEGIN in page.read_text(encoding="utf-8"):
                pages.append(page)
        except (OSError, UnicodeDecodeError):
            continue
    return pages


def refresh_overviews(folder: str | os.PathLike) -> list[Path]:
    """Rewrite the experiments part of every overview page that lists `folder` (see
    `overview_pages_above`); returns the pages rewritten.  A page that cannot be rewritten
    only gets a warning: the experiment's own files are already written."""
    done = []
    for page in overview_pages_above(folder):
        try:
            text = page.read_text(encoding="utf-8")
            start = text.index(EXPERIMENTS_BEGIN)
            end = text.index(EXPERIMENTS_END, start)
            section = experiments_section(find_experiments(page.parent))
            atomic_write_text(page, text[:start] + section + text[end + len(EXPERIMENTS_END):])
            done.append(page)
        except (OSError, ValueError) as e:
            warnings.warn(f"{page}: could not list the experiment in this report ({e}); "
                          f"run `netdissect report` on its results to rebuild it.", stacklevel=2)
    return done
