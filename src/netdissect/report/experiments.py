"""Experiments in a report's overview: the rotate / compare / ablate outputs under the report folder.

An experiment folder is one holding rotate.json, compare.json or ablate.json (written by
`netdissect rotate`, `compare` and `ablate`).  `find_experiments` looks for them in the report
folder and up to `DEPTH` folders below it and reads a one-line summary of each; the overview
page lists them between two HTML comments (`pages.EXPERIMENTS_BEGIN` / `EXPERIMENTS_END`).
`refresh_overviews`, called by each experiment after it has written its files, rewrites only
that part of the overview pages at or up to `DEPTH` folders above the experiment, so a report
that exists lists the new experiment without its strips or layer pages being rebuilt.
"""
from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

from netdissect.report.pages import EXPERIMENTS_BEGIN, EXPERIMENTS_END, experiments_section
from netdissect.files import atomic_write_text

DEPTH = 3  # experiment folders are looked for this many levels below a report folder
SKIP = {"strips", "figures"}  # report folders that never hold experiments


@dataclass
class Experiment:
    """One experiment folder as the overview shows it; paths relative to the report folder."""

    kind: str  # rotate, compare or ablate
    folder: str  # posix path relative to the report folder ("." for the folder itself)
    layer: str
    summary: str  # one line of plain text
    figure: str  # stem of the PNG/SVG figure, relative to the report folder
    files: list[str]  # tables, relative to the report folder


def _rotate(data: dict) -> tuple[str, str]:
    powers = sorted(data["powers"], key=lambda p: p["a"])
    text = ", ".join(f"a={p['a']:g}: {p['unique_detectors_total']}" for p in powers)
    return "rotate", f"Unique detectors by rotation power ({text}); seed {data['seed']}."


def _compare(data: dict) -> tuple[str, str]:
    runs = ", ".join(f"{r['run']}: {r['unique_detectors_total']}" for r in data["runs"])
    pairs = "; ".join(f"{s['from']} → {s['to']}: {s['kept']} kept, {s['changed']} changed, "
                      f"{s['gained']} gained, {s['lost']} lost" for s in data["unit_status"])
    return "unique_detectors", f"Unique detectors ({runs}). Unit concepts {pairs}."


def _ablate(data: dict) -> tuple[str, str]:
    curves = [(name, c["curve"]) for name, c in data["classes"].items() if c.get("curve")]
    parts = [f"{name}: {curve[0]['baseline']:.2f} → {curve[-1]['removed_top']:.2f} without its "
             f"top {curve[-1]['removed']} units ({curve[-1]['removed_random']:.2f} without "
             f"{curve[-1]['removed']} random units)" for name, curve in curves[:3]]
    more = f"; {len(curves) - 3} more classes in the tables" if len(curves) > 3 else ""
    return "ablate", (f"Balanced accuracy {data['balanced_accuracy']:.3f}. "
                      + "; ".join(parts) + more + ".")


# file written by each experiment -> (kind, its summary function, its tables); a summary
# function takes the file's JSON and returns (the stem of its figure, a one-line summary)
KINDS = {
    "rotate.json": ("rotate", _rotate, ["rotate.json", "rotate.csv"]),
    "compare.json": ("compare", _compare, ["compare.json", "counts.csv", "units.csv", "changes.csv"]),
    "ablate.json": ("ablate", _ablate, ["ablate.json", "ablate_curve.csv", "ablate_units.csv",
                                        "unit_drops.csv"]),
}


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


def read_experiment(folder: Path, root: Path, file: str) -> Experiment | None:
    """The experiment whose `file` (e.g. rotate.json) is in `folder`, or None with a warning
    when the file cannot be read as that experiment's output."""
    kind, summarise, tables = KINDS[file]
    path = folder / file
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        figure, summary = summarise(data)
        layer = str(data["layer"])
    except (OSError, ValueError, KeyError, TypeError, IndexError) as e:
        warnings.warn(f"{path}: not listed in the report overview, it could not be read as "
                      f"`netdissect {kind}` output ({type(e).__name__}: {e}); run the experiment "
                      "again to rewrite it.", stacklevel=3)
        return None
    rel = folder.relative_to(root).as_posix()
    prefix = "" if rel == "." else rel + "/"
    return Experiment(kind, rel, layer, summary,
                      prefix + figure if (folder / f"{figure}.png").is_file() else "",
                      [prefix + t for t in tables if (folder / t).is_file()])


def find_experiments(root: str | os.PathLike) -> list[Experiment]:
    """Every experiment in `root` or up to `DEPTH` folders below it, in path order."""
    root = Path(root)
    found = []
    for folder in _folders(root, DEPTH):
        for file in KINDS:
            if (folder / file).is_file():
                experiment = read_experiment(folder, root, file)
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
