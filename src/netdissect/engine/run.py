"""One dissection from start to finish: `run_dissection(probe, dataset, settings)`.

Reads the dataset, joins the torchrun process group if there is one, reuses finished layers,
runs the passes (resuming a saved state), and assembles a `Dissection` with its metadata.  It
writes no result file: `netdissect.dissect` saves and reports.
"""
from __future__ import annotations

import dataclasses
import os
import platform
import warnings
from pathlib import Path

import numpy as np
import torch

from netdissect.allocator import keep_freed_memory
from netdissect.data.broden import Broden, load_broden
from netdissect.engine.checkpoint import Checkpoint, finished_layers
from netdissect.engine.passes import LayerStats, Passes
from netdissect.engine.settings import (Settings, fingerprint, fingerprint_components, state_key,
                                        summary_settings)
from netdissect.errors import DissectError, SettingsError
from netdissect.models.probe import Probe, check_device
from netdissect.results import Dissection, LabelSpace, LayerResult
from netdissect.stats.distributed import World, gather_objects, init_world

__all__ = ["run_dissection", "ResizeWarning", "default_workers"]


class ResizeWarning(UserWarning):
    """Dataset images differ in size from the model's input and will be resized."""


def default_workers() -> int:
    return min(4, os.cpu_count() or 1)


def run_dissection(probe: Probe, dataset: str | os.PathLike | Broden, settings: Settings, *,
                   device: str | torch.device | None = None, out: str | os.PathLike | None = None,
                   progress: bool = True, restart: bool = False) -> Dissection:
    """Dissect the layers of `probe` on a Broden-format dataset (docs/method.md 4-7).

    `out` is where the state of an interrupted run is kept (and where finished layers with the
    same fingerprint are found and reused, unless `restart`); the state stays there until the
    caller has written the results and calls `checkpoint.discard_state(out, rank, size)`
    (`netdissect.dissect` does), so a failed write loses no work.  Under torchrun the images are
    split across the processes; every process returns the whole result.  The model is put back
    on its device and in its mode afterwards.
    """
    keep_freed_memory()  # feature maps reuse the heap instead of fresh pages (allocator.py)
    settings = dataclasses.replace(settings)
    if settings.workers is None:
        settings.workers = default_workers()
    settings.check()
    if not probe.layers:
        raise SettingsError("name at least one layer to dissect (--layers)")
    broden = dataset if isinstance(dataset, Broden) else load_broden(dataset, settings.categories)
    device = check_device(device)
    world = init_world(device)
    if world.size > 1 and device.type == "cuda" and device.index is None:
        device = torch.device("cuda", world.local_rank)
    if probe.preprocess.size is None:
        first = broden.rows[0]
        probe = dataclasses.replace(probe, preprocess=probe.preprocess.replace(size=(first.ih, first.iw)))
    _warn_about_resizing(broden, probe.preprocess.size)
    if len(set(gather_objects(probe.fingerprint()))) > 1:
        raise DissectError("the processes of this distributed run hold different model weights "
                           "(a randomly initialised model without a seed?); give every process "
                           "the same weights (--weights FILE).")
    preprocess = {"mean": list(probe.mean), "std": list(probe.std),
                  "input_size": list(probe.preprocess.size)}
    components = fingerprint_components(settings, broden.fingerprint, broden.categories,
                                        probe.fingerprint(), preprocess, broden.files_fingerprint)
    out = Path(out) if out is not None else None
    reused = finished_layers(out, probe.layers, components) if out is not None and not restart else {}
    todo = [name for name in probe.layers if name not in reused]
    labels = LabelSpace.from_broden(broden)
    results: dict[str, LayerResult] = {}
    if todo:
        checkpoint = Checkpoint(out, world.rank, world.size,
                                state_key(components, settings, todo, world.size),
                                settings.checkpoint_seconds, restart)
        passes = Passes(probe.select(todo), broden, settings, world, checkpoint,
                        progress and world.is_main)
        with probe.session(device):
            stats = passes.run()
        meta = _meta(settings, broden, probe, components, preprocess, passes, device, world)
        results = {name: _layer_result(name, stats[name], labels, settings, meta) for name in todo}
    for name, result in reused.items():
        results[name] = result.relabel(settings.iou_threshold, settings.definition, settings.fdr)
    return Dissection({name: results[name] for name in probe.layers},
                      [row.image for row in broden.rows])


def _warn_about_resizing(broden: Broden, input_size: tuple[int, int]) -> None:
    """Say before the run starts that images of another size than the model's are resized."""
    other = sum((row.ih, row.iw) != tuple(input_size) for row in broden.rows)
    if other:
        first = next(row for row in broden.rows if (row.ih, row.iw) != tuple(input_size))
        warnings.warn(f"{other} of {len(broden.rows)} images of {broden.root} are not "
                      f"{input_size[0]}x{input_size[1]} (e.g. {first.image}: {first.ih}x{first.iw}); "
                      "they will be resized bilinearly for the model, while the label maps stay at "
                      f"{broden.label_size[0]}x{broden.label_size[1]}. Use the Broden variant made "
                      "for this input size (broden1_227 for AlexNet) to avoid resizing.",
                      ResizeWarning, stacklevel=4)


def _layer_result(name: str, stats: LayerStats, labels: LabelSpace, settings: Settings,
                  meta: dict) -> LayerResult:
    tally, maps = stats.merged()
    top = stats.top_all
    return LayerResult(
        layer=name, labels=labels, thresholds=stats.thresholds.cpu(),
        intersection=tally.intersection.cpu(),
        activation={d: a.cpu() for d, a in tally.activation.items()}, truth=tally.truth.cpu(),
        top_indices=top.indices.cpu(), top_values=top.values.cpu(), top_maps=maps.cpu(),
        definition=settings.definition, iou_threshold=settings.iou_threshold,
        meta={**meta, "shape": list(stats.shape)},
        resampled={k: v for k, v in tally.state_dict().items() if k.startswith(("null_", "boot_"))})


def _meta(settings: Settings, broden: Broden, probe: Probe, components: dict, preprocess: dict,
          passes: Passes, device: torch.device, world: World) -> dict:
    """What summary.json records besides the counts."""
    from importlib.metadata import PackageNotFoundError, version

    from netdissect import __version__

    try:  # the version without importing torchvision (seconds of start-up in every process)
        torchvision_version = version("torchvision")
    except PackageNotFoundError:
        torchvision_version = None

    bad = passes.bad
    return {
        "settings": summary_settings(settings, broden.categories, preprocess),
        "fingerprint_components": components,
        "fingerprint": fingerprint(components),
        "dataset": {"path": str(broden.root), "fingerprint": broden.fingerprint,
                    "images": len(broden.rows), "images_processed": len(broden.rows) - len(bad),
                    "images_skipped": len(bad),
                    "skipped": [{"row": i, "reason": r} for i, r in bad[:100]]},
        "model": probe.describe(),
        "versions": {"netdissect": __version__, "torch": torch.__version__,
                     "torchvision": torchvision_version, "numpy": np.__version__,
                     "python": platform.python_version()},
        "device": str(device), "world_size": world.size, "pass2_source": passes.pass2_source,
        "resumed_from": passes.checkpoint.resumed,
        "timings": {f"{k}_seconds": round(v, 3) for k, v in passes.timings.items()},
    }
