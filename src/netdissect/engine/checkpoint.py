"""Long runs survive interruptions: saved state, SIGTERM, resume, and reuse of finished layers.

With an output folder, the state of the statistics is saved atomically every few minutes and
when SIGTERM arrives, under OUT/.netdissect-state/ (one file per process), keyed by what
decides the numbers (`settings.state_key`).  The same command started again finds the state,
checks the key (a change is refused, naming what changed) and continues from the last saved
batch, saying where (`Checkpoint.announce_resume`: "resuming from saved state: pass 1, 112
of 1000 images").  Layers already in OUT with the same fingerprint are reused instead of
dissected again.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

from netdissect.engine.settings import describe_changes
from netdissect.errors import DissectError, Interrupted
from netdissect.files import atomic_torch_save

__all__ = ["Checkpoint", "STATE_DIR", "finished_layers", "discard_state", "RecomputeWarning"]

STATE_DIR = ".netdissect-state"


class Checkpoint:
    """Where this process saves its state, when, and whether it was asked to stop.

    Without an output folder (`out=None`) nothing is saved and only Ctrl-C stops a run.
    `resumed` is None, or where a resumed run took up its saved state (`announce_resume`).
    """

    def __init__(self, out: Path | None, rank: int, world_size: int, key: dict,
                 every_seconds: float, restart: bool = False):
        self.key = json.loads(json.dumps(key))  # as it reads back from a file
        self.rank, self.world_size = rank, world_size
        self.resumed: dict | None = None
        self.every_seconds = every_seconds
        self.path = self.cache_dir = None
        if out is not None:
            self.path, self.cache_dir = state_paths(out, rank, world_size)
            if restart:
                self.path.unlink(missing_ok=True)
                shutil.rmtree(self.cache_dir, ignore_errors=True)
        self.stop_requested = False
        self._last_save = time.monotonic()

    def load(self, explain: Callable[[dict], str] | None = None) -> dict | None:
        """The saved state of an interrupted run, if any; DissectError naming what changed when
        its key differs (`explain(state)` may add details, e.g. which files changed)."""
        if self.path is None or not self.path.is_file():
            return None
        state = torch.load(self.path, map_location="cpu", weights_only=True)
        saved = state.get("key", {})
        if saved != self.key:
            details = explain(state) if explain is not None else ""
            raise DissectError(
                f"{self.path}: a saved state of an interrupted run exists, but "
                f"{', '.join(describe_changes(saved, self.key))} changed since{details}; refusing "
                "to mix them in one tally. Run the same command as before to resume it, or pass "
                "--restart (restart=True) to discard it.")
        return state

    def announce_resume(self, state: dict, images: int, show: bool) -> str:
        """Record in `resumed` where the loaded `state` takes up the run (its pass, and the
        images of this process's share of `images` done in that pass) and, when `show`, say
        so on stderr; returns the line."""
        batches = state["batches"]
        if state["phase"] == 1:  # every image read so far: dissected, or set aside as bad
            done, total = sum(len(b) for b in batches) + len(state["bad"]), images
        else:
            done, total = sum(len(b) for b in batches[:state["done"]]), sum(len(b) for b in batches)
        self.resumed = {"pass": int(state["phase"]), "images_done": done, "images": total}
        share = f" (process {self.rank} of {self.world_size})" if self.world_size > 1 else ""
        line = f"resuming from saved state: pass {state['phase']}, {done} of {total} images{share}"
        if show:
            print(line, file=sys.stderr, flush=True)
        return line

    def save(self, state: dict) -> None:
        if self.path is not None:
            atomic_torch_save(self.path, {"key": self.key, **state})
        self._last_save = time.monotonic()

    def due(self) -> bool:
        """Whether to save now: the interval has passed, or a stop was requested."""
        return self.stop_requested or time.monotonic() - self._last_save >= self.every_seconds

    def stop_if_requested(self) -> None:
        """Raise Interrupted (after the caller saved) when SIGTERM arrived."""
        if self.stop_requested:
            raise Interrupted(f"stopped; state saved in {self.path}; run the same command "
                              "again to resume.")

    @contextlib.contextmanager
    def catching_sigterm(self) -> Iterator[None]:
        """SIGTERM sets `stop_requested` for the block (signals need the main thread)."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = signal.signal(signal.SIGTERM, self._on_signal)
        try:
            yield
        finally:
            signal.signal(signal.SIGTERM, previous)

    def _on_signal(self, signum, frame) -> None:
        self.stop_requested = True



def state_paths(out: str | os.PathLike, rank: int, world_size: int) -> tuple[Path, Path]:
    """Where process `rank` of `world_size` keeps its saved state and its activation cache."""
    folder = Path(out) / STATE_DIR
    return folder / f"state-rank{rank}-of-{world_size}.pt", folder / f"cache-rank{rank}"


def discard_state(out: str | os.PathLike, rank: int = 0, world_size: int = 1) -> None:
    """The run's results are written: its saved state is no longer needed (the last process
    to finish removes the folder)."""
    state, cache = state_paths(out, rank, world_size)
    state.unlink(missing_ok=True)
    shutil.rmtree(cache, ignore_errors=True)
    try:
        state.parent.rmdir()
    except OSError:
        pass


def finished_layers(out: Path, layers: list[str], components: dict) -> dict:
    """Layers already in `out`, dissected with the same fingerprint components: their saved
    `LayerResult`s by name, nothing to redo."""
    from netdissect.results import LayerResult, layer_folder_name

    found = {}
    wanted = json.loads(json.dumps(components))
    for name in layers:
        folder = out / layer_folder_name(name)
        if (folder / "stats.pt").is_file() and (folder / "summary.json").is_file():
            saved = json.loads((folder / "summary.json").read_text()).get("fingerprint_components") or {}
            if saved == wanted:
                found[name] = LayerResult.load(folder)
            else:
                warnings.warn(f"{folder}: {', '.join(describe_changes(saved, wanted))} changed since "
                              f"it was dissected; layer {name!r} is dissected again.",
                              RecomputeWarning, stacklevel=3)
    return found


class RecomputeWarning(UserWarning):
    """A finished layer in the output folder is not reused, because what decides its numbers
    changed since it was dissected."""
