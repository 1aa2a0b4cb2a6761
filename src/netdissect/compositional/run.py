"""`netdissect.explain`: the best logical formula of concepts for every unit (docs/method.md
section 13; Mu & Andreas, "Compositional Explanations of Neurons", NeurIPS 2020).

It first makes sure a dissection of the same model, data and settings exists (a finished one
in `out` is reused, else `netdissect.dissect` runs): its thresholds T_k define the unit masks.
Then one pass over the data builds the atoms (`atoms.ConceptAtoms`), and the beam search
(`search.beam_search`) finds each unit's formula from exact counts.  Writes, per layer,
OUT/<layer>/explanations.{csv,json}; the HTML report shows the formulas.
"""
from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass

import torch
from torch import nn
from tqdm.auto import tqdm

from netdissect.data.broden import Broden, BrodenImages, collate_samples, load_broden
from netdissect.errors import BrodenError, ResultError, SettingsError
from netdissect.compositional.atoms import AtomTable, ConceptAtoms
from netdissect.compositional.search import Explanation, beam_search
from netdissect.files import atomic_write_files, csv_bytes, json_bytes
from netdissect.models.probe import Probe
from netdissect.results import Dissection, layer_folder_name
from netdissect.engine.run import default_workers
from netdissect.engine.settings import Settings
from netdissect.stats.distributed import init_world, merge_across_ranks
from netdissect.stats.labelsets import pixel_label_sets

__all__ = ["explain", "collect_atoms", "LayerExplanations", "CSV_COLUMNS"]

CSV_COLUMNS = ["unit", "formula", "iou", "length", "single_label", "single_iou"]


@dataclass
class LayerExplanations:
    """One layer's formulas: an `Explanation` per unit (0-based `unit`), with what the search
    was asked and what it cost."""

    layer: str
    units: list[Explanation]
    names: list[str]  # label names by global number
    settings: dict
    meta: dict
    fingerprint: str = ""  # of the dissection whose thresholds made the unit masks

    @property
    def mean_iou_by_length(self) -> list[float]:
        """Mean over units of the best IoU with at most n leaves, n = 1..length."""
        if not self.units:
            return []
        return [sum(u.iou_by_length[n] for u in self.units) / len(self.units)
                for n in range(len(self.units[0].iou_by_length))]

    def records(self) -> list[dict]:
        """One record per unit (1-based `unit`), as explanations.json holds them."""
        out = []
        for e in self.units:
            f = e.formula
            out.append({"unit": e.unit + 1, "formula": f.text(self.names) if f else "",
                        "tree": f.tree(self.names) if f else None, "iou": e.iou, "score": e.score,
                        "length": f.length if f else 0,
                        "single_label": self.names[e.single] if e.single else "",
                        "single_iou": e.single_iou, "iou_by_length": e.iou_by_length})
        return out

    def files(self) -> dict[str, bytes]:
        records = self.records()
        document = {"layer": self.layer, "fingerprint": self.fingerprint, "settings": self.settings,
                    "mean_iou_by_length": self.mean_iou_by_length, "meta": self.meta,
                    "units": records}
        rows = [{k: r[k] for k in CSV_COLUMNS} for r in records]
        return {"explanations.json": json_bytes(document),
                "explanations.csv": csv_bytes(rows, CSV_COLUMNS)}

    def save(self, out: str | os.PathLike) -> None:
        folder = os.path.join(out, layer_folder_name(self.layer))
        atomic_write_files({os.path.join(folder, name): data for name, data in self.files().items()})


def explain(model: nn.Module | Probe, dataset: str | os.PathLike | Broden,
            layers: list[str] | None = None, settings=None, *, length: int = 3, beam: int = 5,
            penalty: float = 1.0, out: str | os.PathLike | None = None, report: bool = True,
            progress: bool = True, device: str | torch.device | None = None,
            restart: bool = False, mean=None, std=None,
            input_size: int | tuple[int, int] | None = None,
            **options) -> dict[str, LayerExplanations]:
    """Each unit's best formula of concepts (AND, OR, AND NOT) by beam search.

        probe = netdissect.build_model("resnet18", weights="places365")
        found = netdissect.explain(probe, "broden1_224", ["layer4"], out="results/resnet18")
        found["layer4"].records()[0]   # {"unit": 1, "formula": "((water OR river) AND NOT blue-c)", ...}

    `length`: at most this many leaves (length - 1 beam steps; NOT counts 1 more in a
    formula's reported length); `beam`: formulas kept per unit and step; `penalty`: each
    candidate's IoU is multiplied by penalty**(length - 1) when ranking (1.0: none).  The
    other arguments are those of `netdissect.dissect`, whose thresholds the unit masks use:
    with `out`, a finished dissection there is reused, else it is run and saved first.
    """
    from netdissect.api import as_probe, dissect, is_main_process

    _check(length, beam, penalty)
    dissection = dissect(model, dataset, layers, settings, out=out, report=False, progress=progress,
                         device=device, restart=restart, mean=mean, std=std, input_size=input_size,
                         **options)
    settings = Settings.from_options({**(vars(settings) if settings else {}), **options})
    probe = as_probe(model, layers, mean, std, input_size).select(list(dissection.layers))
    broden = dataset if isinstance(dataset, Broden) else load_broden(dataset, settings.categories)
    if probe.preprocess.size is None:  # the dissection's rule: the first image's size
        size = (broden.rows[0].ih, broden.rows[0].iw)
        probe = dataclasses.replace(probe, preprocess=probe.preprocess.replace(size=size))
    first = next(iter(dissection.layers.values())).meta.get("dataset", {})
    skipped = {s["row"] for s in first.get("skipped", [])}
    if len(skipped) < first.get("images_skipped", 0):
        raise ResultError(f"explain: the dissection skipped {first['images_skipped']} images but "
                          f"records only {len(skipped)} of them; fix or remove the unreadable "
                          "files and run again with --restart.")
    started = time.perf_counter()
    with probe.session(device) as run_device:
        tables = collect_atoms(probe, broden, dissection, skipped, run_device, settings, progress)
    mask_seconds = time.perf_counter() - started
    scored = torch.from_numpy(broden.label_category >= 0)
    found = {}
    for name, table in tables.items():
        started = time.perf_counter()
        present = torch.unique(table.atoms.cpu())
        present = present[(present > 0) & scored[present.clamp(max=len(scored) - 1)]]
        units = beam_search(table, dissection[name].units, present, broden.label_names,
                            length=length, beam=beam, penalty=penalty)
        found[name] = LayerExplanations(
            name, units, list(broden.label_names),
            {"length": length, "beam": beam, "penalty": penalty, "quantile": settings.quantile},
            {"atoms": len(table.pixels), "labels": len(present),
             "images": len(broden.rows) - len(skipped), "mask_pass_seconds": round(mask_seconds, 3),
             "search_seconds": round(time.perf_counter() - started, 3)},
            dissection[name].meta.get("fingerprint", ""))
    if out is not None and is_main_process():
        for result in found.values():
            result.save(out)
        if report:
            from netdissect.report import write_report

            write_report(Dissection.load(out), out, dataset=broden.root, progress=progress)
    return found


def _check(length: int, beam: int, penalty: float) -> None:
    if not isinstance(length, int) or length < 1:
        raise SettingsError(f"--length must be an integer of at least 1 (leaves per formula), got {length!r}")
    if not isinstance(beam, int) or beam < 1:
        raise SettingsError(f"--beam must be an integer of at least 1, got {beam!r}")
    if not 0 < penalty <= 1:
        raise SettingsError(f"--penalty must be in (0, 1] (1.0: no penalty), got {penalty!r}")


def collect_atoms(probe: Probe, broden: Broden, dissection: Dissection, skipped: set[int],
                  device: torch.device, settings: Settings, progress: bool) -> dict[str, AtomTable]:
    """The pass over the data that builds the unit masks (with the dissection's thresholds):
    each layer's `AtomTable`, over every image but the rows in `skipped` (under torchrun each
    process reads its share; the tables are merged over all)."""
    world = init_world(device)
    rows = [i for i in world.shard(len(broden.rows)) if i not in skipped]
    size = settings.batch_size
    batches = [rows[i:i + size] for i in range(0, len(rows), size)]
    stats = {name: ConceptAtoms(dissection[name].units, dissection[name].thresholds, device)
             for name in probe.layers}
    workers = settings.workers if settings.workers is not None else default_workers()
    loader = torch.utils.data.DataLoader(
        BrodenImages(broden, images=True, labels=True, input_size=probe.preprocess.size),
        batch_sampler=batches, num_workers=workers, collate_fn=collate_samples,
        pin_memory=device.type == "cuda")
    with torch.inference_mode(), tqdm(total=len(rows), desc="explain: unit masks", unit="img",
                                      disable=not (progress and world.is_main)) as bar:
        for batch in loader:
            if batch["bad"]:
                raise BrodenError(f"{batch['bad'][0][1]} (it was readable when the dissection ran; "
                                  "is the dataset changing?)")
            outputs = probe.read(batch)
            planes, image_labels = batch["planes"].to(device), batch["image_labels"].to(device)
            sets = pixel_label_sets(planes, image_labels)  # once for all layers
            for name, acts in outputs.items():
                stats[name].update(acts, planes, image_labels, sets)
            bar.update(len(batch["index"]))
    return {name: merge_across_ranks(s).table() for name, s in stats.items()}
