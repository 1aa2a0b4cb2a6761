"""`netdissect.dissect`: dissect a model on a Broden-format dataset, save it, report it.

The orchestration of one user request, over the parts that each do one job: the probe
(`models.probe`), the engine (`engine.run_dissection`), the result files (`results`) and the
HTML report (`report`).  The command line calls this function too.
"""
from __future__ import annotations

import dataclasses
import os

import torch
from torch import nn

from netdissect.data.broden import Broden
from netdissect.engine.run import run_dissection
from netdissect.engine.checkpoint import discard_state
from netdissect.engine.settings import Settings
from netdissect.errors import ResultError, SettingsError
from netdissect.models.preprocess import Preprocess
from netdissect.models.probe import Probe
from netdissect.results import Dissection
from netdissect.stats.distributed import gather_objects

__all__ = ["dissect", "as_probe", "is_main_process"]


def dissect(model: nn.Module | Probe, dataset: str | os.PathLike | Broden,
            layers: list[str] | None = None, settings: Settings | None = None, *,
            out: str | os.PathLike | None = None, report: bool = True, progress: bool = True,
            device: str | torch.device | None = None, restart: bool = False,
            mean=None, std=None, input_size: int | tuple[int, int] | None = None,
            **options) -> Dissection:
    """Dissect `layers` of a model on a Broden-format dataset (docs/method.md sections 4-7).

        probe = netdissect.build_model("resnet18", weights="resnet18_places365.pth.tar")
        result = netdissect.dissect(probe, "broden1_224", out="results/resnet18")
        result = netdissect.dissect(my_module, "broden1_224", ["block3.conv"])   # any nn.Module

    `model` is a `Probe` (its layers and preprocessing are used; `layers`, `mean`, `std` and
    `input_size` override them) or any `nn.Module` (ImageNet normalisation unless `mean`/`std`
    are given; the dataset's image size unless `input_size` is).  `settings` (or keyword
    `options` naming its fields: quantile, iou_threshold, definition, categories, top_k,
    skip_bad, batch_size, workers, cache_limit_gb, checkpoint_seconds) decide the numbers.

    With `out`, writes OUT/<layer>/{tally.csv, units.json, summary.json, stats.pt} once every
    pass has finished and, unless `report=False`, the HTML report OUT/index.html; an
    interrupted run resumes from its saved state (`restart=True` discards it) and layers
    finished earlier with the same settings are reused.  Under torchrun the images are split
    across the processes and rank 0 writes.  The model is left on its device and in its mode.
    """
    known = {f.name for f in dataclasses.fields(Settings)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise SettingsError(f"dissect() got unknown option(s) {', '.join(unknown)}; the settings "
                            f"are {', '.join(sorted(known))}.")
    probe = as_probe(model, layers, mean, std, input_size)
    settings = Settings.from_options({**(vars(settings) if settings else {}), **options})
    result = run_dissection(probe, dataset, settings, device=device, out=out, progress=progress,
                            restart=restart)
    if out is not None:
        rank, size = _rank_and_size()
        if rank == 0:
            _save(result, out)
        gather_objects(None)  # every process waits until the results are written
        discard_state(out, rank, size)
        if rank == 0 and report:
            from netdissect.report import write_report

            root = dataset.root if isinstance(dataset, Broden) else dataset
            write_report(result, out, dataset=root, progress=progress)
    return result


def _save(result: Dissection, out) -> None:
    """Write the result files; a failure (a full disk) says that nothing was lost."""
    try:
        result.save(out)
    except OSError as e:
        raise ResultError(
            f"{out}: the results could not be written ({e.strerror or e}). The files already "
            "there are unchanged, and the run's saved state is kept: free some space and run "
            "the same command again; it writes the results without redoing the passes.") from e


def as_probe(model: nn.Module | Probe, layers: list[str] | None = None, mean=None, std=None,
             input_size: int | tuple[int, int] | None = None) -> Probe:
    """A Probe for `model` (a Probe or an nn.Module) with the given overrides."""
    if not isinstance(model, Probe):
        model = Probe(model, list(layers or []), Preprocess(), name=type(model).__name__)
    elif layers:
        model = model.select(list(layers))
    if mean is not None or std is not None or input_size is not None:
        size = (input_size, input_size) if isinstance(input_size, int) else input_size
        model = model.select(model.layers)
        model.preprocess = model.preprocess.replace(mean=mean, std=std, size=size)
    return model


def is_main_process() -> bool:
    return _rank_and_size()[0] == 0


def _rank_and_size() -> tuple[int, int]:
    import torch.distributed as dist

    return (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
