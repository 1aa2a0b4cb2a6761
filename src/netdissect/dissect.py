"""The passes over the data that feed the statistics: the heart of `netdissect.dissect`.

Pass 1 (activations) runs the model once over every image, capturing all selected layers
in the same forward pass, and feeds each layer's exact top-quantile buffers and top-image
lists.  Its images' label planes are decoded too, so a bad file is found (and, with
`skip_bad`, set aside) before any tallying.  The layer outputs are kept in an on-disk cache
when they fit the cache budget, so pass 2 (tally) does not run the model again: it reads the
cached outputs back with the label planes, thresholds them with the exact T_k and counts I,
A and G.  When the cache would be too large, pass 2 runs the model again.

Under torchrun each rank takes a contiguous share of the images and the statistics are
merged exactly (distributed.py).  With an output folder, the state of the statistics is
saved atomically every few minutes and on SIGTERM under OUT/.netdissect-state/, keyed by
a fingerprint of everything that decides the numbers, so the same command started again
continues where it stopped; layers already finished in OUT with the same fingerprint are
reused instead of dissected again.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import signal
import tempfile
import threading
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from netdissect.errors import DissectError, Interrupted
from netdissect.data.broden import Broden, BrodenError, BrodenImages, collate_samples, load_broden
from netdissect.distributed import (World, all_sum, gather_objects, init_world, merged_quantile,
                                    merged_top, summed_tally)
from netdissect.models.capture import LayerCapture
from netdissect.files import atomic_torch_save
from netdissect.results import DEFINITIONS, Dissection, LabelSpace, LayerResult, layer_folder_name
from netdissect.stats import IoUTally, TopImages, TopQuantile

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
STATE_DIR = ".netdissect-state"
# Writing a float32 activation to the cache in pass 1 and reading it back in pass 2 costs
# about this much (measured on a 2-core machine with an SSD); a model that computes its
# activations faster than this is simply run again in pass 2.
CACHE_BYTES_PER_SECOND = 300e6


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
    checkpoint_seconds: float = 300.0

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

    def __init__(self, shape: tuple[int, int, int], images: int, settings: Settings,
                 labels: LabelSpace, device: torch.device):
        units, h, w = shape
        self.shape = shape
        self.quantile = TopQuantile(units, settings.quantile, images * h * w, device)
        self.top = TopImages(units, settings.top_k, device)
        self.tally = IoUTally(units, torch.from_numpy(labels.category), len(labels.categories), device)
        self.top_maps = torch.zeros((units, settings.top_k, h, w), device=device)
        self.thresholds: torch.Tensor | None = None  # from every rank's values
        self.top_all: TopImages | None = None  # every rank's top images

    def state_dict(self) -> dict:
        return {"shape": list(self.shape), "quantile": self.quantile.state_dict(),
                "top": self.top.state_dict(), "tally": self.tally.state_dict(),
                "top_maps": self.top_maps.cpu().clone()}

    def load_state_dict(self, state: dict) -> None:
        self.quantile.load_state_dict(state["quantile"])
        self.top.load_state_dict(state["top"])
        self.tally.load_state_dict(state["tally"])
        self.top_maps = state["top_maps"].to(self.top_maps.device)


def _check_finite(name: str, acts: torch.Tensor, index: torch.Tensor, broden: Broden) -> None:
    if bool(torch.isfinite(acts.sum())) or bool(torch.isfinite(acts).all()):  # the sum is cheap
        return
    b, k = torch.nonzero(~torch.isfinite(acts).flatten(2).all(2))[0].tolist()
    image = broden.rows[int(index[b])].image
    raise DissectError(f"layer {name!r}, unit {k}: NaN or inf activation on image {image!r} "
                       f"(row {int(index[b])}). Check the model's weights and the input "
                       "normalisation (--mean/--std).")


def _normalise(images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """uint8 images to normalised floats, channels-last: convolutions run 1.3-2x faster on CPU."""
    x = (images.float().div_(255.0) - mean) / std
    return x.contiguous(memory_format=torch.channels_last)


class _ActivationCache:
    """A file per layer holding pass 1's outputs in batch order, read back batch by batch."""

    def __init__(self, folder: Path, layers: list[str], sizes: dict[str, int] | None = None):
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.paths = {name: folder / f"layer{i}.f32" for i, name in enumerate(layers)}
        for name, path in self.paths.items():  # drop what was written after the saved state
            with open(path, "ab") as f:
                f.truncate((sizes or {}).get(name, 0))
        self.files = {name: open(path, "ab") for name, path in self.paths.items()}

    def write(self, name: str, acts: torch.Tensor) -> None:
        self.files[name].write(acts.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())

    def sizes(self) -> dict[str, int]:
        """Bytes written per layer, flushed to disk (recorded in saved states)."""
        for f in self.files.values():
            if not f.closed:
                f.flush()
        return {name: self.paths[name].stat().st_size for name in self.paths}

    @staticmethod
    def reopen(folder: Path, layers: list[str], sizes: dict[str, int] | None) -> "_ActivationCache | None":
        """The cache of an interrupted run, cut back to its saved state; None if it is gone."""
        if sizes is None or any(not (folder / f"layer{i}.f32").is_file()
                                or (folder / f"layer{i}.f32").stat().st_size < sizes.get(name, 0)
                                for i, name in enumerate(layers)):
            shutil.rmtree(folder, ignore_errors=True)
            return None
        return _ActivationCache(folder, layers, sizes)

    def finish_writing(self) -> None:
        """Switch to reading, with plain reads: a memory map would count the whole cache in the
        process's resident memory as it is read."""
        for f in self.files.values():
            f.close()
        self.files = {name: open(path, "rb") for name, path in self.paths.items()}

    def seek(self, name: str, values: int) -> None:
        self.files[name].seek(values * 4)

    def read(self, name: str, shape: tuple[int, ...], count: int) -> torch.Tensor:
        values = np.empty(count * int(np.prod(shape)), dtype=np.float32)
        if self.files[name].readinto(values) != values.nbytes:
            raise DissectError(f"{self.paths[name]}: the activation cache is shorter than expected; "
                               "was it removed during the run? Start again with --restart.")
        return torch.from_numpy(values).view(count, *shape)

    def close(self, remove: bool = True) -> None:
        for f in self.files.values():
            f.close()
        if remove:
            shutil.rmtree(self.folder, ignore_errors=True)


def dissect(model: nn.Module, dataset: str | os.PathLike | Broden, layers: list[str], *,
            quantile: float = 0.005, iou_threshold: float = 0.04, definition: str = "original",
            categories: list[str] | None = None, mean=IMAGENET_MEAN, std=IMAGENET_STD,
            input_size: int | tuple[int, int] | None = None, batch_size: int = 32,
            workers: int | None = None, device: str | torch.device | None = None,
            top_k: int = 10, skip_bad: bool = False, cache_limit_gb: float = 8.0,
            out: str | os.PathLike | None = None, progress: bool = True,
            model_info: dict | None = None, report: bool = True, restart: bool = False,
            checkpoint_seconds: float = 300.0) -> Dissection:
    """Dissect `layers` of `model` on a Broden-format dataset (METHOD.md sections 4-7).

    Returns a `Dissection`; with `out`, also writes OUT/<layer>/{tally.csv, units.json,
    summary.json, stats.pt} once every pass has finished, and (unless `report=False`) the
    HTML report OUT/index.html.  `model_info` (name, weights, weights_fingerprint, preset) is
    recorded in summary.json.  With `out`, an interrupted run resumes from its saved state
    (`restart=True` discards it) and layers finished earlier with the same settings are
    reused.  Under torchrun, the images are split across the ranks and rank 0 writes.
    """
    if isinstance(input_size, int):
        input_size = (input_size, input_size)
    settings = Settings(quantile=quantile, iou_threshold=iou_threshold, definition=definition,
                        categories=list(categories) if categories else None, mean=tuple(mean),
                        std=tuple(std), input_size=input_size, batch_size=batch_size,
                        workers=default_workers() if workers is None else workers, top_k=top_k,
                        skip_bad=skip_bad, cache_limit_gb=cache_limit_gb,
                        checkpoint_seconds=checkpoint_seconds)
    settings.check()
    if not layers:
        raise ValueError("name at least one layer to dissect (--layers)")
    broden = dataset if isinstance(dataset, Broden) else load_broden(dataset, settings.categories)
    device = torch.device(device) if device else default_device()
    world = init_world(device)
    if world.size > 1 and device.type == "cuda" and device.index is None:
        device = torch.device("cuda", world.local_rank)
    if settings.input_size is None:
        settings.input_size = (broden.rows[0].ih, broden.rows[0].iw)
    _warn_about_resizing(broden, settings.input_size)
    model_info = dict(model_info or {})
    if not model_info.get("weights_fingerprint"):
        from netdissect.models.weights import fingerprint_state_dict

        model_info["weights_fingerprint"] = fingerprint_state_dict(model)
    if len(set(gather_objects(model_info["weights_fingerprint"]))) > 1:
        raise DissectError("the processes of this distributed run hold different model weights "
                           "(a randomly initialised model without a seed?); give every process "
                           "the same weights (--weights FILE).")
    run = _Run(model, broden, list(layers), settings, device, progress and world.is_main,
               model_info, world, Path(out) if out is not None else None, restart)
    dissection = run.execute()
    if out is not None and world.is_main:
        dissection.save(out)
        if report:
            from netdissect.report import write_report

            write_report(dissection, out, dataset=broden.root, progress=progress)
    return dissection


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
                      ResizeWarning, stacklevel=3)


class ResizeWarning(UserWarning):
    """Dataset images differ in size from the model's input and will be resized."""


class _Run:
    """One dissection: both passes over the data, checkpoints, and the assembly of results."""

    def __init__(self, model, broden, layers, settings, device, progress, model_info, world: World,
                 out: Path | None, restart: bool):
        self.model = model.to(device).eval()
        self.broden, self.layers, self.settings = broden, layers, settings
        self.device, self.progress, self.model_info, self.world = device, progress, model_info, world
        self.labels = LabelSpace.from_broden(broden)
        self.mean = torch.tensor(settings.mean, device=device).view(1, 3, 1, 1)
        self.std = torch.tensor(settings.std, device=device).view(1, 3, 1, 1)
        self.bad: list[tuple[int, str]] = []
        self.timings: dict[str, float] = {}
        self.stats: dict[str, _LayerStats] = {}
        self.components = self._components()
        self.state_path = self.cache_dir = None
        if out is not None:
            state_dir = out / STATE_DIR
            self.state_path = state_dir / f"state-rank{world.rank}-of-{world.size}.pt"
            self.cache_dir = state_dir / f"cache-rank{world.rank}"
            if restart:
                self.state_path.unlink(missing_ok=True)
                shutil.rmtree(self.cache_dir, ignore_errors=True)
        self.reused = self._finished_layers(out) if out is not None and not restart else {}
        self.todo = [name for name in layers if name not in self.reused]
        self._stop = False
        self._last_save = time.monotonic()

    # -- what decides the numbers -----------------------------------------------------
    def _components(self) -> dict:
        """The inputs that decide a layer's statistics.  The IoU threshold and definition are
        not among them: both definitions are tallied, and labels are derived afterwards."""
        s = self.settings
        return {"dataset": self.broden.fingerprint, "categories": list(self.broden.categories),
                "weights": self.model_info["weights_fingerprint"], "mean": list(s.mean),
                "std": list(s.std), "input_size": list(s.input_size), "quantile": s.quantile,
                "top_k": s.top_k, "skip_bad": s.skip_bad}

    def _state_key(self) -> dict:
        return {**self.components, "layers": self.todo, "batch_size": self.settings.batch_size,
                "world_size": self.world.size}

    def _finished_layers(self, out: Path) -> dict[str, LayerResult]:
        """Layers already in OUT, dissected with the same components: nothing to redo."""
        found = {}
        for name in self.layers:
            folder = out / layer_folder_name(name)
            if (folder / "stats.pt").is_file() and (folder / "summary.json").is_file():
                summary = json.loads((folder / "summary.json").read_text())
                if summary.get("fingerprint_components") == json.loads(json.dumps(self.components)):
                    found[name] = LayerResult.load(folder)
        return found

    # -- helpers ----------------------------------------------------------------------
    def _loader(self, images: bool, labels: bool, batches: list[list[int]]):
        dataset = BrodenImages(self.broden, images=images, labels=labels,
                               input_size=self.settings.input_size)
        return torch.utils.data.DataLoader(dataset, batch_sampler=batches,
                                           num_workers=self.settings.workers,
                                           collate_fn=collate_samples,
                                           pin_memory=self.device.type == "cuda")

    def _bar(self, total: int, done: int, desc: str):
        return tqdm(total=total, initial=done, desc=desc, unit="img", disable=not self.progress)

    def _set_aside(self, bad: list[tuple[int, str]]) -> None:
        if bad and not self.settings.skip_bad:
            raise BrodenError(bad[0][1])
        self.bad.extend(bad)

    def _forward(self, capture: LayerCapture, images: torch.Tensor) -> dict[str, torch.Tensor]:
        x = _normalise(images.to(self.device, non_blocking=True), self.mean, self.std)
        return {name: out.float() for name, out in capture(x).items()}

    # -- saved state ------------------------------------------------------------------
    def _load_state(self) -> dict | None:
        if self.state_path is None or not self.state_path.is_file():
            return None
        state = torch.load(self.state_path, map_location="cpu", weights_only=True)
        saved, now = state["key"], json.loads(json.dumps(self._state_key()))
        if saved != now:
            changed = sorted(k for k in set(saved) | set(now) if saved.get(k) != now.get(k))
            raise DissectError(
                f"{self.state_path}: a saved state of an interrupted run exists, but "
                f"{', '.join(changed)} changed since; refusing to mix them. Run the same command "
                "as before to resume it, or pass --restart (restart=True) to discard it.")
        return state

    def _save_state(self, phase: int, done: int, batches: list[list[int]], cache) -> None:
        if self.state_path is None:
            return
        atomic_torch_save(self.state_path, {
            "key": self._state_key(), "phase": phase, "done": done, "batches": batches,
            "bad": self.bad, "timings": self.timings,
            "cache_sizes": cache.sizes() if cache is not None else None,
            "stats": {name: s.state_dict() for name, s in self.stats.items()}})
        self._last_save = time.monotonic()

    def _maybe_save(self, phase: int, done: int, batches, cache) -> None:
        due = time.monotonic() - self._last_save >= self.settings.checkpoint_seconds
        if due or self._stop:
            self._save_state(phase, done, batches, cache)
        if self._stop:
            raise Interrupted(f"stopped; state saved in {self.state_path}; run the same command "
                              "again to resume.")

    def _on_signal(self, signum, frame) -> None:
        self._stop = True

    # -- the run ----------------------------------------------------------------------
    def execute(self) -> Dissection:
        if not self.todo:
            return self._results()
        missing = self.broden.check_files()
        if missing and not self.settings.skip_bad:
            raise BrodenError(f"{len(missing)} file(s) named in {self.broden.root / 'index.csv'} are "
                              f"missing, e.g. images/{missing[0]}. Restore them, or pass --skip-bad "
                              "to skip and count those images.")
        state = self._load_state()
        main_thread = threading.current_thread() is threading.main_thread()  # signals need it
        previous = signal.signal(signal.SIGTERM, self._on_signal) if main_thread else None
        cache = None
        try:
            with torch.inference_mode(), LayerCapture(self.model, self.todo) as capture:
                cache, batches = self._activation_pass(capture, state)
                for s in self.stats.values():  # each rank's state stays its own share
                    s.thresholds = merged_quantile(s.quantile).thresholds()
                    s.top_all = merged_top(s.top)
                self._tally_pass(capture, cache, batches, state if state and state["phase"] == 2 else None)
                for s in self.stats.values():
                    s.tally = summed_tally(s.tally)
                    s.top_maps = all_sum(s.top_maps)
        except BaseException:
            if cache is not None:
                cache.close(remove=self.state_path is None)
            raise
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
        if cache is not None:
            cache.close()
        self.bad = [b for part in gather_objects(self.bad) for b in part]
        if self.state_path is not None:
            self.state_path.unlink(missing_ok=True)
            try:
                self.state_path.parent.rmdir()  # the last rank to finish removes the folder
            except OSError:
                pass
        return self._results()

    def _activation_pass(self, capture: LayerCapture, state: dict | None):
        n = len(self.broden.rows)
        shard = list(self.world.shard(n))
        planned = [shard[i:i + self.settings.batch_size] for i in range(0, len(shard), self.settings.batch_size)]
        batches: list[list[int]] = []
        done, cache = 0, None
        if state is not None:
            for name, saved in state["stats"].items():
                self.stats[name] = _LayerStats(tuple(saved["shape"]), n, self.settings, self.labels, self.device)
                self.stats[name].load_state_dict(saved)
            batches, self.bad, self.timings = state["batches"], state["bad"], state["timings"]
            if self.cache_dir is not None:
                cache = _ActivationCache.reopen(self.cache_dir, self.todo, state["cache_sizes"])
            if state["phase"] == 2:
                if cache is not None:
                    cache.finish_writing()
                return cache, batches
            done = state["done"]
        start = time.perf_counter() - self.timings.get("activations", 0.0)
        images_done = sum(len(b) for b in planned[:done])
        try:
            with self._bar(len(shard), images_done, "pass 1/2: activations") as bar:
                for number, batch in enumerate(self._loader(True, True, planned[done:]), start=done):
                    self._set_aside(batch["bad"])
                    index = batch["index"]
                    if len(index):
                        outputs = self._forward(capture, batch["image"])
                        if not self.stats:
                            self._start_stats(outputs, n)
                            cache = self._open_cache(capture, batch["image"], outputs, n) if not batches else None
                        for name, acts in outputs.items():
                            _check_finite(name, acts, index, self.broden)
                            s = self.stats[name]
                            s.quantile.update(acts.transpose(0, 1).reshape(acts.shape[1], -1))
                            s.top.update(acts.amax(dim=(2, 3)), index)
                            if cache is not None:
                                cache.write(name, acts)
                        batches.append(index.tolist())
                    bar.update(len(index) + len(batch["bad"]))
                    self.timings["activations"] = time.perf_counter() - start
                    self._maybe_save(1, number + 1, batches, cache)
        except BaseException:
            if cache is not None:
                cache.close(remove=self.state_path is None)
            raise
        if not batches and not self.stats:
            raise BrodenError(f"{self.broden.root}: no image could be read; nothing to dissect.")
        if cache is not None:
            cache.finish_writing()
        self._save_state(2, 0, batches, cache)
        return cache, batches

    def _start_stats(self, outputs: dict[str, torch.Tensor], images: int) -> None:
        for name, acts in outputs.items():
            self.stats[name] = _LayerStats(tuple(acts.shape[1:]), images, self.settings,
                                           self.labels, self.device)

    def _open_cache(self, capture: LayerCapture, images: torch.Tensor,
                    outputs: dict[str, torch.Tensor], count: int) -> _ActivationCache | None:
        """An activation cache for pass 2, when it fits the budget and the disk, and when
        writing and reading it back is faster than running the model again (timed on the
        first batch, after the warm-up of the first forward pass)."""
        per_image = sum(int(np.prod(a.shape[1:])) for a in outputs.values()) * 4
        needed = per_image * count // self.world.size
        if needed > self.settings.cache_limit_gb * 2**30:
            return None
        start = time.perf_counter()
        self._forward(capture, images)
        forward_per_image = (time.perf_counter() - start) / len(images)
        if per_image / CACHE_BYTES_PER_SECOND > forward_per_image:
            return None
        folder = self.cache_dir or Path(tempfile.mkdtemp(prefix="netdissect-cache-"))
        folder.mkdir(parents=True, exist_ok=True)
        if needed * 1.2 > shutil.disk_usage(folder).free:
            shutil.rmtree(folder, ignore_errors=True)
            return None
        return _ActivationCache(folder, self.todo)

    def _tally_pass(self, capture: LayerCapture, cache, batches: list[list[int]], state: dict | None) -> None:
        done = state["done"] if state is not None else 0
        start = time.perf_counter() - self.timings.get("tally", 0.0)
        if cache is not None:
            skipped = sum(len(b) for b in batches[:done])
            for name, s in self.stats.items():
                cache.seek(name, skipped * int(np.prod(s.shape)))
        total = sum(len(b) for b in batches)
        with self._bar(total, sum(len(b) for b in batches[:done]), "pass 2/2: tally") as bar:
            for number, batch in enumerate(self._loader(cache is None, True, batches[done:]), start=done):
                if batch["bad"]:
                    raise BrodenError(f"{batch['bad'][0][1]} (it was readable in pass 1; is the "
                                      "dataset changing during the run?)")
                index = batch["index"]
                if cache is not None:
                    outputs = {name: cache.read(name, self.stats[name].shape, len(index)).to(self.device)
                               for name in self.todo}
                else:
                    outputs = self._forward(capture, batch["image"])
                for name, acts in outputs.items():
                    s = self.stats[name]
                    s.tally.update(acts, s.thresholds, batch["planes"], batch["image_labels"])
                    self._keep_top_maps(s, acts, index)
                bar.update(len(index))
                self.timings["tally"] = time.perf_counter() - start
                self._maybe_save(2, number + 1, batches, cache)

    @staticmethod
    def _keep_top_maps(s: _LayerStats, acts: torch.Tensor, index: torch.Tensor) -> None:
        top = s.top_all.indices
        hit = top[None] == index.to(top.device)[:, None, None]  # (B, K, k)
        b, k, slot = torch.nonzero(hit, as_tuple=True)
        s.top_maps[k, slot] = acts[b, k].to(s.top_maps)

    # -- results ----------------------------------------------------------------------
    def _results(self) -> Dissection:
        meta = self._meta() if self.todo else None
        results = {}
        for name in self.layers:
            if name in self.reused:
                results[name] = self.reused[name]
                continue
            s, tally = self.stats[name], self.stats[name].tally
            results[name] = LayerResult(
                layer=name, labels=self.labels, thresholds=s.thresholds.cpu(),
                intersection=tally.intersection.cpu(),
                activation={d: a.cpu() for d, a in tally.activation.items()},
                truth=tally.truth.cpu(), top_indices=s.top_all.indices.cpu(), top_values=s.top_all.values.cpu(),
                top_maps=s.top_maps.cpu(), definition=self.settings.definition,
                iou_threshold=self.settings.iou_threshold,
                meta={**meta, "shape": list(s.shape)})
        for name in self.reused:
            results[name].relabel(self.settings.iou_threshold, self.settings.definition)
        return Dissection(results, [row.image for row in self.broden.rows])

    def _meta(self) -> dict:
        import torchvision

        from netdissect import __version__

        settings = asdict(self.settings)
        settings["input_size"] = list(self.settings.input_size)
        settings["categories"] = list(self.broden.categories)
        for key in ("workers", "cache_limit_gb", "checkpoint_seconds"):
            settings.pop(key)
        return {
            "settings": settings,
            "fingerprint_components": self.components,
            "fingerprint": hashlib.sha256(json.dumps(self.components, sort_keys=True).encode()).hexdigest(),
            "dataset": {"path": str(self.broden.root), "fingerprint": self.broden.fingerprint,
                        "images": len(self.broden.rows),
                        "images_processed": len(self.broden.rows) - len(self.bad),
                        "images_skipped": len(self.bad),
                        "skipped": [{"row": i, "reason": r} for i, r in self.bad[:100]]},
            "model": self.model_info,
            "versions": {"netdissect": __version__, "torch": torch.__version__,
                         "torchvision": torchvision.__version__, "numpy": np.__version__,
                         "python": platform.python_version()},
            "device": str(self.device), "world_size": self.world.size,
            "timings": {f"{k}_seconds": round(v, 3) for k, v in self.timings.items()},
        }
