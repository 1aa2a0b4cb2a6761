"""The causal role of units (PNAS 2020; docs/method.md section 10): class accuracy after zeroing units.

For a classifier and a labelled image set, a forward hook multiplies the channels of one layer
by a 0/1 mask (no retraining) and per-class accuracy is measured again.  Per class, accuracy is
its recall (the share of its images classified as it); balanced accuracy is the mean over
classes.

Ranking.  Each unit is removed alone and the drop of every class's accuracy measured; a class
ranks its units by that drop.  Accuracy moves in steps of one image, so many units tie (often
at 0): ties are broken by the drop of the class's mean correct-class probability (softmax) on
its own images, then by unit number.  Then, per class, the accuracy after removing its top
n units (n = 1, 2, 4, 8, 16, 20 by default, clipped to the layer size), after removing n
random units (seeded, averaged over a few draws), and after removing all but its top n units
(with few units kept the classifier may predict that class everywhere, which per-class recall
rewards; `kept_top_only_balanced` gives the balanced accuracy under the same mask).
Given a saved dissection of the layer, the top units are listed with their concepts.

Batched: masks are evaluated many at a time.  A Trace on the layer edits its output: the
batch's output is repeated once per mask and each copy multiplied by its mask, so the network runs up to the layer once
and only the part after it sees the enlarged batch; images and masks are split so that the
enlarged activation stays within a memory budget.  With the default budget the demo CNN's
conv5 ranks its 256 units in a single pass over the data.

Image sets: a folder per class (ImageFolder layout: ROOT/<class>/<image>) or a Broden-format
folder whose image-level `scene` column names each image's class (the toy world).  Class
names map to the classifier's outputs through `class_names` (default: the model's
`class_names` attribute, else the sorted class names found in the data).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from netdissect.data.images import IMAGE_SUFFIXES, load_rgb
from netdissect.errors import BrodenError, LayerError, SettingsError
from netdissect.experiments.record import ExperimentRecord, write_record
from netdissect.files import atomic_write_json, new_figure, save_figure, write_csv
from netdissect.models.probe import Probe
from netdissect.models.trace import Trace, first_tensor

__all__ = ["ablate", "Ablator", "AblationResult", "LabelledImages", "load_labelled_images",
           "write_ablation", "DEFAULT_COUNTS"]

DEFAULT_COUNTS = (1, 2, 4, 8, 16, 20)


# -- labelled images ---------------------------------------------------------------------------
@dataclass
class LabelledImages:
    """Image files, their class index (into `class_names`) and how many images were skipped."""

    paths: list[Path]
    targets: torch.Tensor  # (N,) int64
    class_names: list[str]
    source: str
    skipped: int = 0
    input_size: tuple[int, int] | None = None


def load_labelled_images(root: str | os.PathLike, class_names: list[str] | None = None,
                         split: str | None = None) -> LabelledImages:
    """The labelled images of `root`: a Broden-format folder (its `scene` column) or a folder
    per class.  Images of classes outside `class_names` are skipped and counted."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise SettingsError(f"{root}: no such folder; give a folder per class or a "
                            "Broden-format folder with a scene column.")
    if (root / "index.csv").is_file():
        items, size = _broden_items(root, split)
        source = "broden-scene"
    else:
        if split is not None:
            raise SettingsError("--split applies to Broden-format folders only")
        items, size = _folder_items(root), None
        source = "image-folder"
    if class_names is None:
        class_names = sorted({name for _, name in items})
    index = {name: i for i, name in enumerate(class_names)}
    kept = [(path, index[name]) for path, name in items if name in index]
    if not kept:
        found = sorted({name for _, name in items})[:8]
        raise SettingsError(f"{root}: no image of the classifier's classes ({', '.join(class_names[:8])}"
                         f"{', ...' if len(class_names) > 8 else ''}); the data has classes "
                         f"{', '.join(found) or 'none'}. Check --class-names or the data folder.")
    return LabelledImages([p for p, _ in kept], torch.tensor([t for _, t in kept], dtype=torch.int64),
                          list(class_names), source, len(items) - len(kept), size)


def _broden_items(root: Path, split: str | None) -> tuple[list[tuple[Path, str]], tuple[int, int]]:
    from netdissect.data.broden import load_broden

    broden = load_broden(root, ["scene"])
    items = [(broden.images_dir / broden.rows[i].image, name) for i, name in broden.scene_images(split)]
    if not items:
        raise BrodenError(f"{root}/index.csv: no image has a scene label"
                          + (f" in split {split!r}" if split else "") + ".")
    first = broden.rows[0]
    return items, (first.ih, first.iw)


def _folder_items(root: Path) -> list[tuple[Path, str]]:
    items = [(path, folder.name) for folder in sorted(p for p in root.iterdir() if p.is_dir())
             for path in sorted(folder.rglob("*")) if path.suffix.lower() in IMAGE_SUFFIXES]
    if not items:
        raise SettingsError(f"{root}: no images found; expected ROOT/<class name>/<image files>.")
    return items


class _ImageDataset(torch.utils.data.Dataset):
    """uint8 (3, H, W) images resized to `size`, with their position in the list."""

    def __init__(self, paths: list[Path], size: tuple[int, int]):
        self.paths, self.size = paths, size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        try:
            return load_rgb(self.paths[i], self.size), i
        except ValueError as e:
            raise SettingsError(f"{e} Replace or remove it.") from None


def _masked(masks: torch.Tensor, layer: str):
    """An `edit_output` for Trace: the layer's (N, C, ...) output repeated once per mask (M, C)
    and multiplied by it, (M * N, C, ...)."""
    def edit(output, _layer):
        feats = first_tensor(output)
        if not isinstance(output, torch.Tensor) or feats.dim() < 2:
            raise LayerError(f"layer {layer!r} returns a {type(output).__name__}; ablation needs "
                             "a layer that outputs a single (N, C, ...) tensor.")
        if masks.shape[1] != feats.shape[1]:
            raise LayerError(f"layer {layer!r} has {feats.shape[1]} units, the masks {masks.shape[1]}.")
        m = masks.to(feats.dtype).view(*masks.shape, *([1] * (feats.dim() - 2)))
        return (m[:, None] * feats[None]).flatten(0, 1)
    return edit


@dataclass
class MaskedEvaluation:
    """Predictions under each mask: class (M, N) and probability of the true class (M, N)."""

    predictions: torch.Tensor
    true_probability: torch.Tensor


class Ablator:
    """Evaluates a classifier on labelled images under many unit masks of one layer.

    `probe` gives the model, its preprocessing and the layer (its first); the model must
    already be on the device it runs on (`probe.session`).
    """

    def __init__(self, probe: Probe, images: LabelledImages, *, batch_size: int = 32,
                 workers: int = 0, memory_mb: float = 512.0, progress: bool = True):
        self.probe, self.model, self.layer = probe, probe.model, probe.layers[0]
        self.images = images
        self.size = probe.preprocess.size or images.input_size or (224, 224)
        self.batch_size, self.workers = batch_size, workers
        self.budget = memory_mb * 2**20
        self.progress = progress
        self.units, self.unit_shape = self._layer_shape()

    def _layer_shape(self) -> tuple[int, tuple[int, ...]]:
        """The layer's unit count and per-image output shape, from one image."""
        image, _ = _ImageDataset(self.images.paths[:1], self.size)[0]
        with torch.inference_mode(), Trace(self.model, self.layer, stop=True) as trace:
            self.model(self._normalise(image[None]))
        feats = first_tensor(trace.output)
        if not trace.ran or feats is None or feats.dim() < 2:
            raise LayerError(f"layer {self.layer!r} did not run in the forward pass, or outputs "
                             "no (N, C, ...) tensor to ablate units of.")
        return feats.shape[1], tuple(feats.shape[1:])

    def _normalise(self, images: torch.Tensor) -> torch.Tensor:
        return self.probe.preprocess(images.to(self.probe.device()), channels_last=False)

    def evaluate(self, masks: torch.Tensor, desc: str = "ablation") -> MaskedEvaluation:
        """Run every image under every mask (M, C) of 0/1 (1 keeps a unit)."""
        masks = masks.to(self.probe.device(), torch.float32)
        m, n = len(masks), len(self.images.paths)
        per_copy = 4 * float(np.prod(self.unit_shape))  # bytes of one image's layer output
        if per_copy * m <= self.budget:  # every mask at once, as many images as fit
            masks_per_run, images_per_run = m, max(1, int(self.budget // (per_copy * m)))
        else:  # one image at a time, the masks in chunks
            masks_per_run, images_per_run = max(1, int(self.budget // per_copy)), 1
        predictions = torch.empty((m, n), dtype=torch.int64)
        true_prob = torch.empty((m, n), dtype=torch.float32)
        loader = torch.utils.data.DataLoader(_ImageDataset(self.images.paths, self.size),
                                             batch_size=self.batch_size, num_workers=self.workers)
        with torch.inference_mode(), tqdm(total=n, desc=desc, unit="img", disable=not self.progress) as bar:
            for batch, index in loader:
                x = self._normalise(batch)
                targets = self.images.targets[index].to(x.device)
                for s in range(0, len(x), images_per_run):
                    xs, ts, idx = x[s:s + images_per_run], targets[s:s + images_per_run], \
                        index[s:s + images_per_run]
                    for c in range(0, m, masks_per_run):
                        chunk = masks[c:c + masks_per_run]
                        with Trace(self.model, self.layer, retain_output=False,
                                   edit_output=_masked(chunk, self.layer)):
                            logits = self.model(xs).float().view(len(chunk), len(xs), -1)
                        probs = logits.softmax(-1)
                        predictions[c:c + len(chunk), idx] = logits.argmax(-1).cpu()
                        picked = probs.gather(2, ts.view(1, -1, 1).expand(len(chunk), -1, 1))
                        true_prob[c:c + len(chunk), idx] = picked[..., 0].cpu()
                bar.update(len(x))
        return MaskedEvaluation(predictions, true_prob)

    def class_accuracy(self, predictions: torch.Tensor) -> torch.Tensor:
        """(M, K) per-class accuracy (recall) of (M, N) predictions; NaN for absent classes."""
        k = len(self.images.class_names)
        onehot = torch.nn.functional.one_hot(self.images.targets, k).double()  # (N, K)
        correct = (predictions == self.images.targets[None]).double()  # (M, N)
        return (correct @ onehot) / onehot.sum(0)[None]

    def class_mean(self, values: torch.Tensor) -> torch.Tensor:
        """(M, K) per-class mean over each class's images of (M, N) values."""
        k = len(self.images.class_names)
        onehot = torch.nn.functional.one_hot(self.images.targets, k).double()
        return (values.double() @ onehot) / onehot.sum(0)[None]


# -- the experiment ----------------------------------------------------------------------------
@dataclass
class AblationResult:
    """Baseline, single-unit drops, rankings and removal curves; see the module docstring."""

    layer: str
    class_names: list[str]
    images_per_class: list[int]
    baseline: list[float]  # per-class accuracy, NaN where a class has no images
    balanced_accuracy: float
    accuracy_drop: torch.Tensor  # (C, K) class accuracy drop when unit k is removed alone
    probability_drop: torch.Tensor  # (C, K) drop of mean true-class probability
    rankings: dict[str, list[int]]  # class -> units, most important first
    curves: dict[str, list[dict]]  # class -> rows n, removed_top, removed_random, ...
    counts: list[int]
    draws: int
    seed: int
    concepts: list[dict] | None = None  # per unit: label, category, iou, detector
    skipped_images: int = 0
    source: str = ""
    mean_cost_keep_top: dict = field(default_factory=dict)  # n -> mean over classes of the drop

    def unit_rows(self, top: int | None = None) -> list[dict]:
        """Per class, its top units with their drops and (given a dissection) their concepts."""
        top = top or max(self.counts)
        rows = []
        for ci, name in enumerate(self.class_names):
            for rank, unit in enumerate(self.rankings.get(name, [])[:top], start=1):
                row = {"class": name, "rank": rank, "unit": unit,
                       "accuracy_drop": float(self.accuracy_drop[unit, ci]),
                       "probability_drop": float(self.probability_drop[unit, ci])}
                if self.concepts is not None:
                    row.update(self.concepts[unit])
                rows.append(row)
        return rows

    def summary(self) -> str:
        """One line: balanced accuracy, and for up to three classes the effect of removing
        the most units of the curve (top vs random)."""
        parts = [f"{name}: {curve[0]['baseline']:.2f} → {curve[-1]['removed_top']:.2f} without its "
                 f"top {curve[-1]['removed']} units ({curve[-1]['removed_random']:.2f} without "
                 f"{curve[-1]['removed']} random units)" for name, curve in list(self.curves.items())[:3]]
        more = f"; {len(self.curves) - 3} more classes in the tables" if len(self.curves) > 3 else ""
        return f"Balanced accuracy {self.balanced_accuracy:.3f}. " + "; ".join(parts) + more + "."

    def curve_rows(self) -> list[dict]:
        return [{"class": name, **row} for name, rows in self.curves.items() for row in rows]


def _concepts(dissection, layer: str, units: int) -> list[dict]:
    """Per unit of `layer` in a Dissection, LayerResult or result folder: label, category, IoU."""
    from netdissect.results import Dissection, LayerResult

    if isinstance(dissection, (str, os.PathLike)):
        dissection = Dissection.load(dissection)
    if isinstance(dissection, Dissection):
        if layer in dissection.layers:
            dissection = dissection[layer]
        elif len(dissection.layers) == 1:
            dissection = next(iter(dissection.layers.values()))
        else:
            raise SettingsError(f"the dissection has no layer {layer!r} (it has {', '.join(dissection.layers)})")
    if not isinstance(dissection, LayerResult):
        raise SettingsError("dissection: give a result folder, a Dissection or a LayerResult")
    if dissection.units != units:
        raise SettingsError(f"the dissection of {dissection.layer!r} has {dissection.units} units, "
                         f"layer {layer!r} has {units}; dissect the same layer of the same model.")
    return [{"label": u.label, "category": u.category, "iou": u.score, "detector": u.detector}
            for u in dissection.labelled_units()]


def ablate(model: nn.Module | Probe, data: str | os.PathLike | LabelledImages, layer: str, *,
           class_names: list[str] | None = None, classes: list[str] | None = None,
           counts: list[int] | tuple[int, ...] = DEFAULT_COUNTS, draws: int = 5, seed: int = 0,
           dissection=None, split: str | None = None, mean=None, std=None,
           input_size: int | tuple[int, int] | None = None, batch_size: int = 32,
           workers: int = 0, device: str | torch.device | None = None, memory_mb: float = 512.0,
           progress: bool = True, out: str | os.PathLike | None = None) -> AblationResult:
    """Measure the causal role of the units of `layer` for each class (see the module docstring).

    `model` is a Probe (its preprocessing is used) or an nn.Module (ImageNet normalisation
    unless `mean`/`std` are given).  `classes` restricts the removal curves to some classes
    (default: all with images); `counts` are the numbers of units removed; `draws` random unit
    sets per count, from `seed`; `dissection` (result folder, Dissection or LayerResult of the
    layer) names the concepts of the top units.  With `out`, writes ablate.json,
    ablate_curve.csv, ablate_units.csv, unit_drops.csv, ablate.{png,svg} and experiment.json.
    The model is left on its device and in its mode.
    """
    from netdissect.api import as_probe

    if draws < 0:
        raise SettingsError(f"--draws must be 0 or more, got {draws}")
    if memory_mb <= 0:
        raise SettingsError(f"--memory-mb must be above 0, got {memory_mb}")
    probe = as_probe(model, [layer], mean, std, input_size)
    class_names = class_names or getattr(probe.model, "class_names", None)
    images = data if isinstance(data, LabelledImages) else load_labelled_images(data, class_names, split)
    names = images.class_names
    present = torch.bincount(images.targets, minlength=len(names))
    if classes is None:
        classes = [n for n, c in zip(names, present.tolist()) if c > 0]
    for name in classes:
        if name not in names or present[names.index(name)] == 0:
            raise SettingsError(f"class {name!r} has no images in the data (classes with images: "
                                f"{', '.join(n for n, c in zip(names, present.tolist()) if c)})")
    with probe.session(device):
        ablator = Ablator(probe, images, batch_size=batch_size, workers=workers,
                          memory_mb=memory_mb, progress=progress)
        result = _measure(ablator, classes, counts, draws, seed, dissection)
    if out is not None:
        write_ablation(result, out)
    return result


def _measure(ablator: Ablator, classes: list[str], counts, draws: int, seed: int,
             dissection) -> AblationResult:
    """Both evaluations (single units; unit sets) and the curves, rankings and concepts."""
    images, layer = ablator.images, ablator.layer
    names = images.class_names
    present = torch.bincount(images.targets, minlength=len(names))
    units = ablator.units
    counts = sorted({min(int(n), units) for n in counts if int(n) > 0})
    if not counts:
        raise SettingsError("give at least one positive number of units to remove (--counts)")

    # Pass 1: the baseline and every unit removed alone.
    single = torch.ones(units + 1, units)
    single[torch.arange(1, units + 1), torch.arange(units)] = 0
    ev = ablator.evaluate(single, "ablation 1/2: single units")
    acc = ablator.class_accuracy(ev.predictions)  # (C+1, K)
    prob = ablator.class_mean(ev.true_probability)
    baseline = acc[0]
    accuracy_drop = (baseline[None] - acc[1:]).float()
    probability_drop = (prob[0][None] - prob[1:]).float()
    rankings = {}
    for name in classes:
        ci = names.index(name)
        order = np.lexsort((np.arange(units), -probability_drop[:, ci].numpy(),
                            -accuracy_drop[:, ci].numpy()))
        rankings[name] = [int(u) for u in order]

    # Pass 2: per class, its top n removed and all but its top n removed; random n removed.
    g = torch.Generator().manual_seed(seed)
    random_sets = {n: [torch.randperm(units, generator=g)[:n] for _ in range(draws)] for n in counts}
    masks, keys = [], []
    for name in classes:
        for n in counts:
            top = torch.tensor(rankings[name][:n])
            removed = torch.ones(units)
            removed[top] = 0
            kept = torch.zeros(units)
            kept[top] = 1
            masks += [removed, kept]
            keys += [("top", name, n), ("keep", name, n)]
    for n in counts:
        for d, chosen in enumerate(random_sets[n]):
            mask = torch.ones(units)
            mask[chosen] = 0
            masks.append(mask)
            keys.append(("random", d, n))
    ev2 = ablator.evaluate(torch.stack(masks), "ablation 2/2: unit sets")
    acc2 = ablator.class_accuracy(ev2.predictions)
    row_of = {key: i for i, key in enumerate(keys)}
    curves = {}
    for name in classes:
        ci = names.index(name)
        rows = []
        for n in counts:
            rand = torch.stack([acc2[row_of[("random", d, n)], ci] for d in range(draws)]) \
                if draws else torch.full((1,), float("nan"), dtype=torch.float64)
            rows.append({"removed": n, "baseline": float(baseline[ci]),
                         "removed_top": float(acc2[row_of[("top", name, n)], ci]),
                         "removed_random": float(rand.mean()),
                         "removed_random_std": float(rand.std(unbiased=False)),
                         "kept_top_only": float(acc2[row_of[("keep", name, n)], ci]),
                         "kept_top_only_balanced": float(acc2[row_of[("keep", name, n)]].nanmean())})
        curves[name] = rows
    mean_cost = {n: float(np.mean([curves[c][i]["baseline"] - curves[c][i]["kept_top_only"]
                                   for c in classes])) for i, n in enumerate(counts)}
    concepts = _concepts(dissection, layer, units) if dissection is not None else None
    valid = ~torch.isnan(baseline)
    result = AblationResult(
        layer=layer, class_names=names, images_per_class=present.tolist(),
        baseline=[float(b) for b in baseline], balanced_accuracy=float(baseline[valid].mean()),
        accuracy_drop=accuracy_drop, probability_drop=probability_drop, rankings=rankings,
        curves=curves, counts=counts, draws=draws, seed=seed, concepts=concepts,
        skipped_images=images.skipped, source=images.source, mean_cost_keep_top=mean_cost)
    return result


def write_ablation(result: AblationResult, out: str | os.PathLike, figure_classes: int = 6) -> ExperimentRecord:
    """Write ablate.json, ablate_curve.csv, ablate_units.csv, unit_drops.csv, the figure and
    experiment.json under `out`; returns the record."""
    out = Path(out)
    top_rows = result.unit_rows()
    by_class: dict[str, list[dict]] = {}
    for row in top_rows:
        by_class.setdefault(row["class"], []).append({k: v for k, v in row.items() if k != "class"})
    atomic_write_json(out / "ablate.json", {
        "layer": result.layer, "source": result.source, "skipped_images": result.skipped_images,
        "ranking": "accuracy drop when removed alone; ties broken by the drop of the mean "
                   "true-class probability, then unit number",
        "counts": result.counts, "random_draws": result.draws, "seed": result.seed,
        "balanced_accuracy": result.balanced_accuracy,
        "mean_cost_keep_top_only": {str(n): v for n, v in result.mean_cost_keep_top.items()},
        "classes": {name: {"images": result.images_per_class[i],
                           "accuracy": None if np.isnan(result.baseline[i]) else result.baseline[i],
                           **({"curve": result.curves[name], "top_units": by_class.get(name, [])}
                              if name in result.curves else {})}
                    for i, name in enumerate(result.class_names)}})
    write_csv(out / "ablate_curve.csv", result.curve_rows())
    write_csv(out / "ablate_units.csv", top_rows)
    ranked = [n for n in result.class_names if n in result.rankings]
    write_csv(out / "unit_drops.csv", [
        {"unit": k, **{f"{n}:accuracy_drop": float(result.accuracy_drop[k, result.class_names.index(n)])
                       for n in ranked}} for k in range(result.accuracy_drop.shape[0])])
    shown = list(result.curves)[:figure_classes]
    cols = min(3, len(shown))
    rows = (len(shown) + cols - 1) // cols
    fig, axes = new_figure(4.2 * cols, 3.4 * rows, rows, cols)
    for ax in axes.flat[len(shown):]:
        ax.set_visible(False)
    for ax, name in zip(axes.flat, shown):
        curve = result.curves[name]
        xs = [0] + [r["removed"] for r in curve]
        base = curve[0]["baseline"]
        ax.plot(xs, [base] + [r["removed_top"] for r in curve], marker="o", color="tab:red",
                label="top units removed")
        mean = np.array([base] + [r["removed_random"] for r in curve])
        std = np.array([0.0] + [r["removed_random_std"] for r in curve])
        ax.plot(xs, mean, marker="s", color="tab:blue", label=f"random units removed ({result.draws} draws)")
        ax.fill_between(xs, mean - std, mean + std, color="tab:blue", alpha=0.2)
        ax.plot(xs[1:], [r["kept_top_only"] for r in curve], marker="^", linestyle="--",
                color="tab:green", label="only the top units kept (x = kept)")
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel("units removed")
        ax.set_ylabel("class accuracy")
        ax.set_title(f"{result.layer}: {name}", fontsize=10)
    if shown:
        axes.flat[0].legend(fontsize=7)
    save_figure(fig, out / "ablate", dpi=120)
    record = ExperimentRecord("ablate", result.layer, result.summary(), "ablate",
                              ["ablate.json", "ablate_curve.csv", "ablate_units.csv", "unit_drops.csv"])
    write_record(out, record)
    return record
