"""Train the demo CNN on the scene labels of a toy world (a Broden-format folder).

The demo model shipped in `netdissect/assets/demo_cnn.pt` was made with

    netdissect train-demo --dataset <toy world of 2000 images, seed 0> \\
        --out src/netdissect/assets/demo_cnn.pt

Only the image-level `scene` labels of index.csv are used; the object, part and material
planes are never seen, so whatever object detectors Network Dissection later finds in the
model emerged from scene classification alone.  Training is seeded and single-machine
deterministic, uses `threads` CPU threads (2 by default; a few minutes for the default world),
and works on random 160x160 crops (with horizontal flips) of the 224x224 images: crops keep
objects at the scale they have at 224, and global average pooling lets the model run on full
224x224 images afterwards, where its accuracies are measured.
"""
from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import torch
from torch import nn

from netdissect.data.broden import load_broden
from netdissect.data.images import load_rgb
from netdissect.errors import SettingsError
from netdissect.files import atomic_torch_save, atomic_write_json
from netdissect.models.demo_cnn import DROPOUT, HEAD_WIDTH, LAYERS, WIDTHS, DemoCNN
from netdissect.models.preprocess import Preprocess
from netdissect.training import adamw_one_cycle, train_epochs

__all__ = ["train_demo", "scene_classes", "load_scene_images", "accuracy", "normalize"]

PREPROCESS = Preprocess()  # ImageNet mean and std, as the shipped weights were trained


def scene_classes(dataset_dir: str | os.PathLike) -> list[str]:
    """Scene label names of a Broden-format dataset, ordered by global label number."""
    broden = load_broden(dataset_dir, ["scene"])
    return [name for number, name in enumerate(broden.label_names) if broden.label_category[number] == 0]


def load_scene_images(dataset_dir: str | os.PathLike, class_names: list[str],
                      split: str | None = None, limit: int | None = None
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """Images with a scene label, as uint8 (N, 3, H, W), and their class indices (N,).

    Classes are matched by name to `class_names`; images of other scenes, images without a
    scene and (when `split` is given) other splits are skipped; `limit` keeps the first ones.
    """
    broden = load_broden(dataset_dir, ["scene"])
    index = {name: i for i, name in enumerate(class_names)}
    kept = [(row, index[name]) for row, name in broden.scene_images(split) if name in index][:limit]
    if not kept:
        raise SettingsError(f"{broden.root}: no image with a scene label among {class_names}"
                            + (f" in split {split!r}" if split else "") + ".")
    images = [load_rgb(broden.images_dir / broden.rows[row].image) for row, _ in kept]
    return torch.stack(images), torch.tensor([label for _, label in kept], dtype=torch.int64)


def normalize(images: torch.Tensor) -> torch.Tensor:
    """uint8 (N, 3, H, W) images to float, scaled to 0-1 and normalised with ImageNet mean/std."""
    return PREPROCESS(images, channels_last=False)


@torch.no_grad()
def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
             batch_size: int = 50) -> float:
    """Top-1 accuracy of `model` on uint8 images (run at their full size)."""
    model.eval()
    correct = 0
    for start in range(0, len(images), batch_size):
        logits = model(normalize(images[start:start + batch_size]))
        correct += int((logits.argmax(1) == labels[start:start + batch_size]).sum())
    return correct / max(1, len(images))


def _random_crops(images: torch.Tensor, crop: int, generator: torch.Generator) -> torch.Tensor:
    """One random crop of size `crop` per image, flipped left-right half of the time."""
    n, _, h, w = images.shape
    ys = torch.randint(0, h - crop + 1, (n,), generator=generator).tolist()
    xs = torch.randint(0, w - crop + 1, (n,), generator=generator).tolist()
    flip = torch.rand(n, generator=generator) < 0.5
    out = torch.stack([img[:, y:y + crop, x:x + crop] for img, y, x in zip(images, ys, xs)])
    out[flip] = out[flip].flip(-1)
    return out


def train_demo(dataset_dir: str | os.PathLike, out_path: str | os.PathLike, seed: int = 0,
               epochs: int = 18, progress: bool = True, batch_size: int = 32,
               lr: float = 2e-3, crop: int = 160, threads: int = 2,
               max_images: int | None = None) -> dict:
    """Train a `DemoCNN` on the scenes of `dataset_dir`; write weights and metadata.

    Writes the state dict to `out_path` and the metadata (class names, normalisation, the
    dataset's toy-world parameters, accuracies, timing) to `out_path` with suffix .json, both
    atomically, and returns the metadata.  The train split trains, the val split is held
    out; both accuracies are measured on full-size images.  `max_images` caps the number of
    training images (for quick tests).
    """
    start = time.perf_counter()
    root, out_path = Path(dataset_dir), Path(out_path)
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        class_names = scene_classes(root)
        train_x, train_y = load_scene_images(root, class_names, "train", limit=max_images)
        try:
            val_x, val_y = load_scene_images(root, class_names, "val")
        except SettingsError:
            val_x, val_y = train_x[:0], train_y[:0]
        torch.manual_seed(seed)
        generator = torch.Generator().manual_seed(seed)
        model = DemoCNN(len(class_names))
        optimizer, schedule = adamw_one_cycle(model, lr, epochs, len(train_x), batch_size, warmup=0.15)
        crop = min(crop, train_x.shape[-1], train_x.shape[-2])
        def loss_of(idx: torch.Tensor) -> torch.Tensor:
            x = normalize(_random_crops(train_x[idx], crop, generator))
            return nn.functional.cross_entropy(model(x), train_y[idx])

        history = train_epochs(model, len(train_x), epochs, batch_size, loss_of, optimizer,
                               schedule, generator, desc="train demo CNN", progress=progress)
        train_acc = accuracy(model, train_x, train_y)
        val_acc = accuracy(model, val_x, val_y) if len(val_x) else float("nan")
        manifest_path = root / "toyworld.json"
        manifest = (json.loads(manifest_path.read_text(encoding="utf-8"))
                    if manifest_path.is_file() else {})
        meta = {
            "model": "DemoCNN", "widths": list(WIDTHS), "head_width": HEAD_WIDTH,
            "dropout": DROPOUT, "layers": list(LAYERS),
            "class_names": class_names, "input_size": [224, 224],
            "mean": list(PREPROCESS.mean), "std": list(PREPROCESS.std), "pixel_range": "0-1 RGB",
            "dataset": {"toyworld_images": manifest.get("images"),
                        "toyworld_seed": manifest.get("seed"),
                        "train_images": len(train_x), "val_images": len(val_x)},
            "training": {"seed": seed, "epochs": epochs, "batch_size": batch_size, "lr": lr,
                         "crop": crop, "threads": threads, "loss_per_epoch": history,
                         "seconds": round(time.perf_counter() - start, 1),
                         "torch": torch.__version__},
            "train_accuracy": round(train_acc, 4),
            "val_accuracy": round(val_acc, 4) if not math.isnan(val_acc) else None,
        }
        atomic_torch_save(out_path, {k: v.detach().clone() for k, v in model.state_dict().items()})
        atomic_write_json(out_path.with_suffix(".json"), meta)
        return meta
    finally:
        torch.set_num_threads(previous_threads)
