"""The two passes over the data that feed each layer's statistics (docs/method.md 4-8).

Pass 1 (activations) runs the probe once over every image, all layers in the same forward
pass, and feeds each layer's exact top-quantile buffers and top-image lists.  Its images'
label planes are decoded too, so a bad file is found (and, with `skip_bad`, set aside) before
any tallying.  Between the passes the shares of all processes are merged: thresholds T_k and
the top images come from every image.  Pass 2 (tally) thresholds each map with T_k and counts
I, A and G, and keeps the maps of the top images; its outputs and label maps come from the
activation cache when pass 1 wrote one (no dataset file is read again); when only the labels
were cached (the outputs too large, or the model faster than the disk), the probe runs again
on the images; without a cache it also decodes the labels again.

With the pnas definition the thresholds are quantiles of the upsampled maps, found by radix
selection (stats/upsampled_quantile.py): two threshold passes run between pass 1 and the
tally, from the cache when there is one, so a run makes four passes in all.
"""
from __future__ import annotations

import time

import numpy as np
import torch
from tqdm.auto import tqdm

from netdissect.data.broden import Broden, BrodenImages, collate_samples
from netdissect.engine import cache as activation_cache
from netdissect.engine.checkpoint import Checkpoint
from netdissect.engine.settings import Settings
from netdissect.errors import BrodenError, DissectError
from netdissect.models.probe import Probe
from netdissect.stats import CombinedStat, IoUTally, TopImages, TopMaps, TopQuantile, UpsampledQuantile
from netdissect.stats.distributed import World, gather_objects, merge_across_ranks
from netdissect.stats.labelsets import pixel_label_sets

__all__ = ["LayerStats", "Passes"]


class LayerStats(CombinedStat):
    """One layer's statistics: `quantile` and `top` (pass 1), `tally` and `maps` (pass 2).

    `start_tally` fixes the merged thresholds and top images between the passes; the
    statistics themselves keep this process's share only, which is what a saved state holds.
    With thresholds on upsampled maps (the pnas definition) the quantile needs more passes
    between the two (`threshold_rounds_left`, `refine`, `close_threshold_round`).
    """

    def __init__(self, shape: tuple[int, int, int], images: int, settings: Settings,
                 label_category: np.ndarray, num_categories: int, device: torch.device,
                 label_size: tuple[int, int]):
        units, h, w = shape
        self.shape, self.label_size = shape, label_size
        if settings.upsampled_thresholds:
            quantile = UpsampledQuantile(units, settings.quantile, images * label_size[0] * label_size[1], device)
        else:
            quantile = TopQuantile(units, settings.quantile, images * h * w, device)
        super().__init__(quantile=quantile, top=TopImages(units, settings.top_k, device),
                         tally=IoUTally(units, torch.from_numpy(label_category), num_categories, device,
                                        null=settings.null, bootstrap=settings.bootstrap,
                                        seed=settings.resample_seed))
        self.thresholds: torch.Tensor | None = None  # from every process's values
        self.top_all: TopImages | None = None  # every process's top images
        self._saved_maps: dict | None = None

    def observe(self, acts: torch.Tensor, index: torch.Tensor) -> None:
        """Pass 1: activations (B, units, h, w) of dataset rows `index`."""
        if isinstance(self.quantile, UpsampledQuantile):
            self.quantile.update(acts, self.label_size)
        else:
            self.quantile.update(acts.transpose(0, 1).reshape(acts.shape[1], -1))
        self.top.update(acts.amax(dim=(2, 3)), index)

    @property
    def threshold_rounds_left(self) -> int:
        """Passes over the data the thresholds still need after pass 1 (0 but for pnas)."""
        return getattr(self.quantile, "rounds_left", 0)

    def refine(self, acts: torch.Tensor) -> None:
        """A threshold pass: the batch's activations again, for the next round of selection."""
        self.quantile.update(acts, self.label_size)

    def close_threshold_round(self) -> None:
        """After a pass that fed the upsampled quantile: decide its next bits from every
        process's counts."""
        if self.threshold_rounds_left:
            self.quantile.advance(merge_across_ranks(self.quantile))

    def start_tally(self) -> None:
        """Between the passes: thresholds and top images merged over every process."""
        self.thresholds = merge_across_ranks(self.quantile).thresholds()
        self.top_all = merge_across_ranks(self.top)
        maps = TopMaps(self.top_all.indices, self.shape[1:], self.thresholds.device)
        if self._saved_maps is not None:
            maps.load_state_dict(self._saved_maps)
        self.parts["maps"] = maps

    def count(self, acts: torch.Tensor, index: torch.Tensor, planes: torch.Tensor,
              image_labels: torch.Tensor, sets: tuple[torch.Tensor, torch.Tensor]) -> None:
        """Pass 2: tally the thresholded maps against the labels (`sets`: the batch's pixel
        label sets); keep the top images' maps."""
        self.tally.update(acts, self.thresholds, planes, image_labels, sets, rows=index)
        self.maps.update(acts, index)

    def state_dict(self) -> dict:
        return {"shape": list(self.shape), **super().state_dict()}

    def load_state_dict(self, state: dict) -> None:
        for name in ("quantile", "top", "tally"):
            self.parts[name].load_state_dict(state[name])
        self._saved_maps = state.get("maps")

    def merged(self) -> tuple[IoUTally, torch.Tensor]:
        """After pass 2: the tally and the top maps of every process."""
        return merge_across_ranks(self.tally), merge_across_ranks(self.maps).maps


class Passes:
    """Both passes of one dissection for the layers of `probe`, with checkpoints."""

    def __init__(self, probe: Probe, broden: Broden, settings: Settings, world: World,
                 checkpoint: Checkpoint, progress: bool):
        self.probe, self.broden, self.settings = probe, broden, settings
        self.world, self.checkpoint, self.progress = world, checkpoint, progress
        self.device = probe.device()
        self.stats: dict[str, LayerStats] = {}
        self.bad: list[tuple[int, str]] = []
        self.timings: dict[str, float] = {}
        self.pass2_source = ""  # where pass 2 read the layer outputs: "cache" or "model"
        self.label_layout = activation_cache.LabelLayout.of(broden)  # labels in the cache
        # content hashes of each row's image and label files as pass 1 read them (0: not read)
        n = len(broden.rows)
        self.digests = {"image": torch.zeros(n, dtype=torch.int64), "labels": torch.zeros(n, dtype=torch.int64)}

    def run(self) -> dict[str, LayerStats]:
        """Both passes; returns the statistics by layer (after `start_tally`).  The last saved
        state covers the whole run: whoever writes the results removes it afterwards
        (`checkpoint.discard_state`), so a failed write loses no work."""
        missing = self.broden.check_files()
        if missing and not self.settings.skip_bad:
            raise BrodenError(f"{len(missing)} file(s) named in {self.broden.root / 'index.csv'} are "
                              f"missing, e.g. images/{missing[0]}. Restore them, or pass --skip-bad "
                              "to skip and count those images.")
        state = self.checkpoint.load(self._explain_refusal)
        if state is not None:
            self.checkpoint.announce_resume(state, len(self.world.shard(len(self.broden.rows))),
                                            self.progress)
        cache = None
        try:
            with torch.inference_mode(), self.checkpoint.catching_sigterm():
                cache, batches = self._activation_pass(state)
                self._threshold_passes(cache, batches)
                for s in self.stats.values():
                    s.start_tally()
                self._tally_pass(cache, batches, state if state and state["phase"] == 2 else None)
                self._save(2, len(batches), batches, None)  # kept until the results are written
        except BaseException:
            if cache is not None:
                cache.close(remove=self.checkpoint.path is None)
            raise
        if cache is not None:
            cache.close()
        self.bad = [b for part in gather_objects(self.bad) for b in part]
        return self.stats

    # -- pass 1 ---------------------------------------------------------------------------
    def _activation_pass(self, state: dict | None):
        n = len(self.broden.rows)
        shard = list(self.world.shard(n))
        size = self.settings.batch_size
        planned = [shard[i:i + size] for i in range(0, len(shard), size)]
        batches: list[list[int]] = []
        done, cache = 0, None
        if state is not None:
            for name, saved in state["stats"].items():
                self.stats[name] = self._new_stats(tuple(saved["shape"]), n)
                self.stats[name].load_state_dict(saved)
            batches, self.bad, self.timings = state["batches"], state["bad"], state["timings"]
            self.digests = state["digests"]
            if self.checkpoint.cache_dir is not None:
                cache = activation_cache.ActivationCache.reopen(
                    self.checkpoint.cache_dir, self.probe.layers, state["cache_sizes"], self.label_layout)
            if state["phase"] == 2:
                if cache is not None:
                    cache.finish_writing()
                return cache, batches
            done = state["done"]
        start = time.perf_counter() - self.timings.get("activations", 0.0)
        images_done = sum(len(b) for b in planned[:done])
        try:
            with self._bar(len(shard), images_done, f"pass 1/{self.pass_count}: activations") as bar:
                for number, batch in enumerate(self._loader(True, planned[done:]), start=done):
                    self._set_aside(batch["bad"])
                    index = batch["index"]
                    if len(index):
                        outputs = self.probe.read(batch)
                        if not self.stats:
                            self.stats = {name: self._new_stats(tuple(a.shape[1:]), n)
                                          for name, a in outputs.items()}
                            if not batches:
                                cache = activation_cache.decide(
                                    outputs, len(shard), self.settings.cache_limit_gb,
                                    self.checkpoint.cache_dir, lambda: self.probe.read(batch),
                                    self.probe.layers, self.settings.cache, self.label_layout)
                        for name, acts in outputs.items():
                            self._check_finite(name, acts, index)
                            self.stats[name].observe(acts, index)
                            if cache is not None and cache.holds_activations:
                                cache.write(name, acts)
                        if cache is not None:
                            cache.write_labels(batch["planes"], batch["image_labels"])
                        batches.append(index.tolist())
                        self.digests["image"][index] = batch["image_digest"]
                        self.digests["labels"][index] = batch["labels_digest"]
                    bar.update(len(index) + len(batch["bad"]))
                    self.timings["activations"] = time.perf_counter() - start
                    self._maybe_save(1, number + 1, batches, cache)
        except BaseException:
            if cache is not None:
                cache.close(remove=self.checkpoint.path is None)
            raise
        if not batches and not self.stats:
            raise BrodenError(f"{self.broden.root}: no image could be read; nothing to dissect.")
        if cache is not None:
            cache.finish_writing()
        for s in self.stats.values():
            s.close_threshold_round()
        self._save(2, 0, batches, cache)
        return cache, batches

    # -- threshold passes (pnas) ----------------------------------------------------------
    def _threshold_passes(self, cache, batches: list[list[int]]) -> None:
        """With thresholds on upsampled maps: the passes that finish their selection, each
        over every image (from the cache when there is one), saved when complete.  An
        interrupted threshold pass is redone on resume."""
        total = sum(len(b) for b in batches)
        while (left := max((s.threshold_rounds_left for s in self.stats.values()), default=0)):
            number = self.pass_count - left
            cached = cache is not None and cache.holds_activations
            if cached:
                for name in self.stats:
                    cache.seek(name, 0)
                source = ({"index": torch.tensor(rows), "bad": []} for rows in batches)
            else:
                source = self._loader(True, batches, labels=False)
            with self._bar(total, 0, f"pass {number}/{self.pass_count}: thresholds") as bar:
                for batch in source:
                    index = batch["index"]
                    if cached:
                        outputs = {name: cache.read(name, s.shape, len(index)).to(self.device)
                                   for name, s in self.stats.items()}
                    else:
                        self._check_unchanged(batch)
                        outputs = self.probe.read(batch)
                    for name, acts in outputs.items():
                        self.stats[name].refine(acts)
                    bar.update(len(index))
                    self.checkpoint.stop_if_requested()
            for s in self.stats.values():
                s.close_threshold_round()
            self._save(2, 0, batches, cache)

    @property
    def pass_count(self) -> int:
        """Passes over the data in all: 2, or 4 with thresholds on upsampled maps."""
        return 4 if self.settings.upsampled_thresholds else 2

    # -- pass 2 ---------------------------------------------------------------------------
    def _tally_pass(self, cache, batches: list[list[int]], state: dict | None) -> None:
        done = state["done"] if state is not None else 0
        start = time.perf_counter() - self.timings.get("tally", 0.0)
        cached = cache is not None and cache.holds_activations  # else the model runs again
        if cache is not None:
            skipped = sum(len(b) for b in batches[:done])
            for name, s in self.stats.items():
                if cached:
                    cache.seek(name, skipped * int(np.prod(s.shape)))
            cache.seek_images(skipped)
        total = sum(len(b) for b in batches)
        self.pass2_source = "cache" if cached else "model"
        if cache is None:
            source = self._loader(True, batches[done:])
        elif cached:
            source = self._cached_labels(cache, batches[done:])
        else:  # the images for the model, the labels from the cache
            source = self._with_cached_labels(self._loader(True, batches[done:], labels=False), cache)
        with self._bar(total, sum(len(b) for b in batches[:done]),
                       f"pass {self.pass_count}/{self.pass_count}: tally") as bar:
            for number, batch in enumerate(source, start=done):
                if batch["bad"]:
                    raise BrodenError(f"{batch['bad'][0][1]} (it was readable in pass 1; is the "
                                      "dataset changing during the run?)")
                index = batch["index"]
                if cached:
                    outputs = {name: cache.read(name, self.stats[name].shape, len(index)).to(self.device)
                               for name in self.probe.layers}
                else:
                    self._check_unchanged(batch)
                    outputs = self.probe.read(batch)
                planes = batch["planes"].to(self.device)
                image_labels = batch["image_labels"].to(self.device)
                sets = pixel_label_sets(planes, image_labels, canonical=False)  # once for all layers
                for name, acts in outputs.items():
                    self.stats[name].count(acts, index, planes, image_labels, sets)
                bar.update(len(index))
                self.timings["tally"] = time.perf_counter() - start
                self._maybe_save(2, number + 1, batches, cache)

    # -- helpers --------------------------------------------------------------------------
    def _new_stats(self, shape: tuple[int, int, int], images: int) -> LayerStats:
        return LayerStats(shape, images, self.settings, self.broden.label_category,
                          len(self.broden.categories), self.device, self.broden.label_size)

    @staticmethod
    def _cached_labels(cache, batches: list[list[int]]):
        """Pass 2's batches from the cache: the label maps pass 1 decoded, no file read."""
        for rows in batches:
            planes, image_labels = cache.read_labels(len(rows))
            yield {"index": torch.tensor(rows, dtype=torch.int64), "bad": [], "planes": planes,
                   "image_labels": image_labels}

    @staticmethod
    def _with_cached_labels(loader, cache):
        """The loader's batches (images only) with the label maps pass 1 cached."""
        for batch in loader:
            batch["planes"], batch["image_labels"] = cache.read_labels(len(batch["index"]))
            yield batch

    def _loader(self, images: bool, batches: list[list[int]], labels: bool = True):
        dataset = BrodenImages(self.broden, images=images, labels=labels,
                               input_size=self.probe.preprocess.size)
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

    def _check_finite(self, name: str, acts: torch.Tensor, index: torch.Tensor) -> None:
        if bool(torch.isfinite(acts.sum())) or bool(torch.isfinite(acts).all()):  # the sum is cheap
            return
        b, k = torch.nonzero(~torch.isfinite(acts).flatten(2).all(2))[0].tolist()
        image = self.broden.rows[int(index[b])].image
        raise DissectError(f"layer {name!r}, unit {k}: NaN or inf activation on image {image!r} "
                           f"(row {int(index[b])}). Check the model's weights and the input "
                           "normalisation (--mean/--std).")

    def _check_unchanged(self, batch: dict) -> None:
        """Without a cache, pass 2 reads each row's image and label planes again: their
        content must be what pass 1 read, or the tally would mix two datasets."""
        index = batch["index"]
        changed = batch["image_digest"] != self.digests["image"][index]
        if bool((batch["labels_digest"] != 0).any()):  # 0: the labels were not read
            changed |= batch["labels_digest"] != self.digests["labels"][index]
        if bool(changed.any()):
            row = self.broden.rows[int(index[changed][0])]
            raise DissectError(
                f"{self.broden.images_dir / row.image} or its label planes changed since pass 1 "
                f"read them ({int(changed.sum())} row(s) of this batch): the dataset was rewritten "
                "during the run, or between an interruption and its resume. Run again with "
                "--restart once the dataset stays as it is.")

    def _explain_refusal(self, state: dict) -> str:
        """Which dataset files changed since a saved state, for the refusal message."""
        saved = state.get("file_stats")
        if saved is None:
            return ""
        changed = self.broden.changed_files(saved.numpy())
        if not changed:
            return ""
        return (f" ({len(changed)} image or label file(s) changed since the saved state, e.g. "
                f"images/{changed[0]})")

    def _save(self, phase: int, done: int, batches, cache) -> None:
        self.checkpoint.save({
            "file_stats": torch.from_numpy(self.broden.file_stats), "digests": self.digests,
            "phase": phase, "done": done, "batches": batches, "bad": self.bad,
            "timings": self.timings, "cache_sizes": cache.sizes() if cache is not None else None,
            "stats": {name: s.state_dict() for name, s in self.stats.items()}})

    def _maybe_save(self, phase: int, done: int, batches, cache) -> None:
        if self.checkpoint.due():
            self._save(phase, done, batches, cache)
        self.checkpoint.stop_if_requested()
