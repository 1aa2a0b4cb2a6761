"""The summary record every experiment writes next to its outputs: `experiment.json`.

    {"kind": "rotate", "layer": "conv5", "summary": "one line of plain text",
     "figure": "rotate", "tables": ["rotate.json", "rotate.csv"]}

`figure` is the stem of STEM.png / STEM.svg and `tables` the files worth linking, both
relative to the experiment's folder.  A report lists an experiment from this record alone, so
each experiment's own files (rotate.json, ablate.json, ...) keep a layout that only that
experiment defines.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from netdissect.errors import ResultError
from netdissect.files import atomic_write_json

__all__ = ["ExperimentRecord", "RECORD_FILE", "write_record", "read_record"]

RECORD_FILE = "experiment.json"


@dataclass
class ExperimentRecord:
    """What a report shows of one experiment."""

    kind: str  # rotate, compare, ablate, ...
    layer: str
    summary: str  # one line of plain text
    figure: str = ""  # stem of the PNG/SVG figure, relative to the experiment folder
    tables: list[str] = field(default_factory=list)  # files relative to the experiment folder


def write_record(folder: str | os.PathLike, record: ExperimentRecord) -> Path:
    """Write `folder`/experiment.json (atomically); returns its path."""
    path = Path(folder) / RECORD_FILE
    atomic_write_json(path, asdict(record))
    return path


def read_record(folder: str | os.PathLike) -> ExperimentRecord:
    """The record in `folder`; ResultError naming the file when it is missing or malformed."""
    path = Path(folder) / RECORD_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        record = ExperimentRecord(kind=str(data["kind"]), layer=str(data["layer"]),
                                  summary=str(data["summary"]), figure=str(data.get("figure") or ""),
                                  tables=[str(t) for t in data.get("tables") or []])
    except FileNotFoundError:
        raise ResultError(f"{path}: missing; {folder} holds no experiment output.") from None
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise ResultError(f"{path}: not an experiment record ({type(e).__name__}: {e}); run the "
                          "experiment again to rewrite it.") from None
    return record
