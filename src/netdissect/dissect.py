"""The passes over the data that feed the statistics: the heart of `netdissect.dissect`.

Pass 1 (activations) runs the model once over every image, capturing all selected layers
in the same forward pass, and feeds each layer's exact top-quantile buffers and top-image
lists.  Its images' label planes are decoded too, so a bad file is found (and, with
`skip_bad`, set aside) before any tallying.  The layer outputs are kept in a temporary
on-disk cache when they fit the cache budget, so pass 2 (tally) does not run the model again:
it reads the cached outputs back with the label planes, thresholds them with the exact
T_k and counts I, A and G.  When the cache would be too large, pass 2 runs the model again.
"""
from __future__ import annotations

import os
import platform
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from netdissect.data.broden import Broden, BrodenError, BrodenImages, collate_samples, load_broden
from netdissect.models.capture import LayerCapture
from netdissect.results import DEFINITIONS, Dissection, LabelSpace, LayerResult
from netdissect.stats import IoUTally, TopImages, TopQuantile

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class DissectError(RuntimeError):
    """A dissection that cannot go on; the message names the layer, unit or file."""


@dataclass
class Settings:
    """Everything that decides a dissection's numbers, plus how it runs."""

    quantile: float = 0.005
    iou_threshold: float = 0.04
    definition: str = "original"
    categories: list[str] | None = None
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    input_size: tuple[int, int] | None = None
    batch_size: int = 32
    workers: int | None = None
    top_k: int = 10
    skip_bad: bool = False
    cache_limit_gb: float = 8.0

    def check(self) -> None:
        if not 0.0 < self.quantile < 1.0:
            raise ValueError(f"--quantile must be between 0 and 1, got {self.quantile}")
        if self.definition not in DEFINITIONS:
            raise ValueError(f"--definition must be one of {', '.join(DEFINITIONS)}, got {self.definition!r}")
        if self.batch_size < 1:
            raise ValueError(f"--batch-size must be at least 1, got {self.batch_size}")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError("--mean and --std take three values (R,G,B), std above 0")


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def default_workers() -> int:
    return min(4, os.cpu_count() or 1)


class _LayerStats:
    """The statistics of one layer through both passes."""

    def __init__(self, name: str, shape: tuple[int, int, int], images: int, settings: Settings,
                 labels: LabelSpace, device: torch.device):
        units, h, w = shape
        self.name, self.shape = name, shape
        self.quantile = TopQuantile(units, settings.quantile, images * h * w, device)
        self.top = TopImages(units, settings.top_k, device)
        self.tally = IoUTally(units, torch.from_numpy(labels.category), len(labels.categories), device)
        self.top_maps = torch.zeros((units, settings.top_k, h, w), device=device)
        self.thresholds: torch.Tensor | None = None


def _check_finite(name: str, acts: torch.Tensor, index: torch.Tensor, broden: Broden) -> None:
    if bool(torch.isfinite(acts).all()):
        return
    b, k = torch.nonzero(~torch.isfinite(acts).flatten(2).all(2))[0].tolist()
    image = broden.rows[int(index[b])].image
    raise DissectError(f"layer {name!r}, unit {k}: NaN or inf activation on image {image!r} "
                       f"(row {int(index[b])}). Check the model's weights and the input "
                       "normalisation (--mean/--std).")


def _normalise(images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    return (images.float().div_(255.0) - mean) / std


class _ActivationCache:
    """A temporary file per layer holding pass 1's outputs, read back batch by batch."""

    def __init__(self, folder: Path, layers: list[str]):
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.paths = {name: folder / f"layer{i}.f32" for i, name in enumerate(layers)}
        self.files = {name: open(path, "wb") for name, path in self.paths.items()}
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.offsets: dict[str, int] = {name: 0 for name in layers}

    def write(self, name: str, acts: torch.Tensor) -> None:
        self.shapes[name] = tuple(acts.shape[1:])
        self.files[name].write(acts.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())

    def finish_writing(self) -> None:
        for f in self.files.values():
            f.close()
        self.maps = {name: np.memmap(path, dtype=np.float32, mode="r") if path.stat().st_size else None
                     for name, path in self.paths.items()}

    def read(self, name: str, count: int) -> torch.Tensor:
        shape = self.shapes[name]
        size = count * int(np.prod(shape))
        start = self.offsets[name]
        self.offsets[name] = start + size
        return torch.from_numpy(np.array(self.maps[name][start:start + size])).view(count, *shape)

    def close(self) -> None:
        for f in self.files.values():
            f.close()
        self.maps = {}
        shutil.rmtree(self.folder, ignore_errors=True)


def dissect(model: nn.Module, dataset: str | os.PathLike | Broden, layers: list[str], *,
            quantile: float = 0.005, iou_threshold: float = 0.04, definition: str = "original",
            categories: list[str] | None = None, mean=IMAGENET_MEAN, std=IMAGENET_STD,
            input_size: int | tuple[int, int] | None = None, batch_size: int = 32,
            workers: int | None = None, device: str | torch.device | None = None,
            top_k: int = 10, skip_bad: bool = False, cache_limit_gb: float = 8.0,
            out: str | os.PathLike | None = None, progress: bool = True,
            model_info: dict | None = None, report: bool = True) -> Dissection:
    """Dissect `layers` of `model` on a Broden-format dataset (METHOD.md sections 4-7).

    Returns a `Dissection`; with `out`, also writes OUT/<layer>/{tally.csv, units.json,
    summary.json, stats.pt} once every pass has finished, and (unless `report=False`) the
    HTML report OUT/index.html.  `model_info` (name, weights, weights_fingerprint, preset) is
    recorded in summary.json.
    """
    if isinstance(input_size, int):
        input_size = (input_size, input_size)
    settings = Settings(quantile=quantile, iou_threshold=iou_threshold, definition=definition,
                        categories=list(categories) if categories else None, mean=tuple(mean),
                        std=tuple(std), input_size=input_size, batch_size=batch_size,
                        workers=default_workers() if workers is None else workers, top_k=top_k,
                        skip_bad=skip_bad, cache_limit_gb=cache_limit_gb)
    settings.check()
    if not layers:
        raise ValueError("name at least one layer to dissect (--layers)")
    broden = dataset if isinstance(dataset, Broden) else load_broden(dataset, settings.categories)
    run = _Run(model, broden, list(layers), settings, torch.device(device) if device else default_device(),
               progress, model_info or {})
    dissection = run.execute()
    if out is not None:
        dissection.save(out)
        if report:
            from netdissect.report import write_report

            write_report(dissection, out, dataset=broden.root, progress=progress)
    return dissection


class _Run:
    """One dissection: both passes over the data and the assembly of the results."""

    def __init__(self, model, broden, layers, settings, device, progress, model_info):
        self.model = model.to(device).eval()
        self.broden, self.layers, self.settings = broden, layers, settings
        self.device, self.progress, self.model_info = device, progress, model_info
        self.labels = LabelSpace.from_broden(broden)
        if settings.input_size is None:
            first = broden.rows[0]
            settings.input_size = (first.ih, first.iw)
        self.mean = torch.tensor(settings.mean, device=device).view(1, 3, 1, 1)
        self.std = torch.tensor(settings.std, device=device).view(1, 3, 1, 1)
        self.bad: list[tuple[int, str]] = []
        self.timings: dict[str, float] = {}
        self.stats: dict[str, _LayerStats] = {}

    # -- helpers ----------------------------------------------------------------------
    def _loader(self, images: bool, labels: bool, batches: list[list[int]] | None = None):
        dataset = BrodenImages(self.broden, images=images, labels=labels,
                               input_size=self.settings.input_size)
        common = dict(num_workers=self.settings.workers, collate_fn=collate_samples,
                      pin_memory=self.device.type == "cuda",
                      persistent_workers=False)
        if batches is not None:
            return torch.utils.data.DataLoader(dataset, batch_sampler=batches, **common)
        return torch.utils.data.DataLoader(dataset, batch_size=self.settings.batch_size,
                                           shuffle=False, **common)

    def _bar(self, total: int, desc: str):
        return tqdm(total=total, desc=desc, unit="img", disable=not self.progress, leave=True)

    def _set_aside(self, bad: list[tuple[int, str]]) -> None:
        if bad and not self.settings.skip_bad:
            raise BrodenError(bad[0][1])
        self.bad.extend(bad)

    def _forward(self, capture: LayerCapture, images: torch.Tensor) -> dict[str, torch.Tensor]:
        x = _normalise(images.to(self.device, non_blocking=True), self.mean, self.std)
        return {name: out.float() for name, out in capture(x).items()}

    # -- the run ----------------------------------------------------------------------
    def execute(self) -> Dissection:
        missing = self.broden.check_files()
        if missing and not self.settings.skip_bad:
            raise BrodenError(f"{len(missing)} file(s) named in {self.broden.root / 'index.csv'} are "
                              f"missing, e.g. images/{missing[0]}. Restore them, or pass --skip-bad "
                              "to skip and count those images.")
        with torch.inference_mode(), LayerCapture(self.model, self.layers) as capture:
            cache, batches = self._activation_pass(capture)
            try:
                for s in self.stats.values():
                    s.thresholds = s.quantile.thresholds()
                self._tally_pass(capture, cache, batches)
            finally:
                if cache is not None:
                    cache.close()
        return self._results()

    def _activation_pass(self, capture: LayerCapture):
        n = len(self.broden.rows)
        start = time.perf_counter()
        batches: list[list[int]] = []
        cache = None
        try:
            with self._bar(n, "pass 1/2: activations") as bar:
                for batch in self._loader(images=True, labels=True):
                    self._set_aside(batch["bad"])
                    index = batch["index"]
                    if len(index):
                        outputs = self._forward(capture, batch["image"])
                        if not self.stats:
                            self._start_stats(outputs, n)
                            cache = self._open_cache(outputs, n)
                        for name, acts in outputs.items():
                            _check_finite(name, acts, index, self.broden)
                            s = self.stats[name]
                            s.quantile.update(acts.transpose(0, 1).reshape(acts.shape[1], -1))
                            s.top.update(acts.amax(dim=(2, 3)), index)
                            if cache is not None:
                                cache.write(name, acts)
                        batches.append(index.tolist())
                    bar.update(len(index) + len(batch["bad"]))
        except BaseException:
            if cache is not None:
                cache.close()
            raise
        if not batches:
            raise BrodenError(f"{self.broden.root}: no image could be read; nothing to dissect.")
        if cache is not None:
            cache.finish_writing()
        self.timings["activations"] = time.perf_counter() - start
        return cache, batches

    def _start_stats(self, outputs: dict[str, torch.Tensor], images: int) -> None:
        for name, acts in outputs.items():
            self.stats[name] = _LayerStats(name, tuple(acts.shape[1:]), images, self.settings,
                                           self.labels, self.device)

    def _open_cache(self, outputs: dict[str, torch.Tensor], images: int):
        per_image = sum(int(np.prod(a.shape[1:])) for a in outputs.values()) * 4
        needed = per_image * images
        folder = Path(tempfile.mkdtemp(prefix="netdissect-cache-"))
        free = shutil.disk_usage(folder).free
        if needed > self.settings.cache_limit_gb * 2**30 or needed * 1.2 > free:
            shutil.rmtree(folder, ignore_errors=True)
            return None
        return _ActivationCache(folder, self.layers)

    def _tally_pass(self, capture: LayerCapture, cache, batches: list[list[int]]) -> None:
        start = time.perf_counter()
        total = sum(len(b) for b in batches)
        with self._bar(total, "pass 2/2: tally") as bar:
            for batch in self._loader(images=cache is None, labels=True, batches=batches):
                if batch["bad"]:
                    raise BrodenError(f"{batch['bad'][0][1]} (it was readable in pass 1; is the "
                                      "dataset changing during the run?)")
                index = batch["index"]
                if cache is not None:
                    outputs = {name: cache.read(name, len(index)).to(self.device) for name in self.layers}
                else:
                    outputs = self._forward(capture, batch["image"])
                for name, acts in outputs.items():
                    s = self.stats[name]
                    s.tally.update(acts, s.thresholds, batch["planes"], batch["image_labels"])
                    self._keep_top_maps(s, acts, index)
                bar.update(len(index))
        self.timings["tally"] = time.perf_counter() - start

    @staticmethod
    def _keep_top_maps(s: _LayerStats, acts: torch.Tensor, index: torch.Tensor) -> None:
        hit = s.top.indices[None] == index.to(s.top.indices.device)[:, None, None]  # (B, K, k)
        b, k, slot = torch.nonzero(hit, as_tuple=True)
        s.top_maps[k, slot] = acts[b, k].to(s.top_maps)

    # -- results ----------------------------------------------------------------------
    def _results(self) -> Dissection:
        meta = self._meta()
        results = {}
        for name, s in self.stats.items():
            tally = s.tally
            results[name] = LayerResult(
                layer=name, labels=self.labels, thresholds=s.thresholds.cpu(),
                intersection=tally.intersection.cpu(),
                activation={d: a.cpu() for d, a in tally.activation.items()},
                truth=tally.truth.cpu(), top_indices=s.top.indices.cpu(), top_values=s.top.values.cpu(),
                top_maps=s.top_maps.cpu(), definition=self.settings.definition,
                iou_threshold=self.settings.iou_threshold,
                meta={**meta, "shape": list(s.shape)})
        return Dissection(results, [row.image for row in self.broden.rows])

    def _meta(self) -> dict:
        import torchvision

        from netdissect import __version__

        settings = asdict(self.settings)
        settings["input_size"] = list(self.settings.input_size)
        settings["categories"] = list(self.broden.categories)
        settings.pop("workers")
        settings.pop("cache_limit_gb")
        return {
            "settings": settings,
            "dataset": {"path": str(self.broden.root), "fingerprint": self.broden.fingerprint,
                        "images": len(self.broden.rows),
                        "images_processed": len(self.broden.rows) - len(self.bad),
                        "images_skipped": len(self.bad),
                        "skipped": [{"row": i, "reason": r} for i, r in self.bad[:100]]},
            "model": self.model_info,
            "versions": {"netdissect": __version__, "torch": torch.__version__,
                         "torchvision": torchvision.__version__, "numpy": np.__version__,
                         "python": platform.python_version()},
            "device": str(self.device), "world_size": 1,
            "timings": {f"{k}_seconds": round(v, 3) for k, v in self.timings.items()},
        }
