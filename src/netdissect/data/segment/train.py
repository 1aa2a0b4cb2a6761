"""Train and evaluate the toy-world segmenter (`netdissect.data.segment.toyworld`).

The weights shipped in `netdissect/assets/toyworld_segmenter.pt` were made with

    netdissect train-segmenter --out src/netdissect/assets/toyworld_segmenter.pt

Training images are rendered in memory with `toyworld.render_image(world_seed, i)` (no dataset
on disk) from a world seed other than the demo's (0), and the result is measured on a fresh
world (`eval_seed`) the model never saw: per label, the IoU of its pixels accumulated over all
evaluation images (a part is counted in both part planes), and per category the mean over the
labels that occur there.  Training is seeded and deterministic on one machine for a given
number of `threads`; it works on random crops (even offsets, so image and label pixels stay
aligned) flipped left-right half of the time, with a cross-entropy per head weighted towards
rare classes (thin parts) plus a soft Dice term on the part head.
"""
from __future__ import annotations

import os
import time
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from netdissect.data import toyworld as tw
from netdissect.data.segment.colors import resize_planes
from netdissect.data.segment.toyworld import (HEAD_CLASSES, HEADS, PLANES, WIDTHS,
                                              ToyWorldSegmenter, ToyWorldSegNet, head_targets,
                                              label_planes, segmenter_labels)
from netdissect.errors import SettingsError
from netdissect.files import atomic_torch_save, atomic_write_json
from netdissect.training import adamw_one_cycle, train_epochs

__all__ = ["train_segmenter", "finetune_segmenter", "render_set", "evaluate_segmenter",
           "downsample_set", "CATEGORY_PLANES"]

#: The output planes (indices into PLANES) that hold each category's labels.
CATEGORY_PLANES = {"object": (0,), "part": (1, 2), "material": (3,)}


def _render_one(args: tuple[int, int]) -> tw.RenderedImage:
    # Worker processes use numpy only: torch's thread pool is not safe to use after a fork.
    return tw.render_image(*args)


def render_set(seed: int, count: int, workers: int = 1, progress: bool = False,
               desc: str = "render") -> dict:
    """Render toy-world images 0..count-1 of world `seed` in memory.

    Returns {"images": (N, 3, 224, 224) uint8, "targets": (N, 3, 112, 112) uint8 head classes,
    "planes": (N, 4, 112, 112) uint8 segmenter label numbers, "textures": (N,) bool}.  The
    result does not depend on `workers` (processes drawing images in parallel).
    """
    jobs = [(seed, i) for i in range(count)]
    if workers > 1 and count >= 64:
        with get_context().Pool(workers) as pool:
            it = pool.imap(_render_one, jobs, chunksize=16)
            results = list(_bar(it, count, progress, desc))
    else:
        results = list(_bar(map(_render_one, jobs), count, progress, desc))
    return {"images": torch.from_numpy(np.stack([r.rgb.transpose(2, 0, 1) for r in results])),
            "targets": torch.stack([head_targets(r) for r in results]),
            "planes": torch.stack([label_planes(r).to(torch.uint8) for r in results]),
            "textures": torch.tensor([r.kind == "textures" for r in results])}


def _bar(it, total: int, enabled: bool, desc: str):
    if not enabled:
        return it
    from tqdm import tqdm
    return tqdm(it, total=total, desc=desc, unit="img")


def downsample_set(data: dict, size: int) -> dict:
    """`render_set`'s images area-averaged to `size` x `size` (rounded to uint8) and its
    targets resized to size/2 (nearest neighbour); planes and textures as they are."""
    images = F.interpolate(data["images"].float(), size=(size, size), mode="area")
    return {**data, "images": images.round().clamp(0, 255).to(torch.uint8),
            "targets": resize_planes(data["targets"], (size // 2, size // 2))}


@torch.no_grad()
def evaluate_segmenter(segmenter: ToyWorldSegmenter, data: dict, batch_size: int = 32) -> dict:
    """IoU of `segmenter` on rendered images (`render_set`, or `downsample_set`: the planes
    predicted for smaller images are compared at full label size, nearest neighbour):
    per label and per category.

    A label's IoU is its intersection over union accumulated over all pixels of all images
    (for parts, a pixel belongs to a label if either part plane holds it); a category's mIoU
    is the mean over its labels that occur in the ground truth.  Also the fraction of
    (plane, pixel) entries of texture images predicted "no label".
    """
    labels = segmenter.labels()
    n = len(labels) + 1
    inter = torch.zeros(n, dtype=torch.int64)
    union = torch.zeros(n, dtype=torch.int64)
    truth = torch.zeros(n, dtype=torch.int64)
    texture_zero, texture_total = 0, 0
    for start in range(0, len(data["images"]), batch_size):
        images = data["images"][start:start + batch_size].float() / 255.0
        gt = data["planes"][start:start + batch_size].long()
        pred = segmenter.segment(images).cpu()
        pred = resize_planes(pred, tuple(gt.shape[-2:]))  # smaller images (downsample_set)
        textures = data["textures"][start:start + batch_size]
        texture_zero += int((pred[textures] == 0).sum())
        texture_total += pred[textures].numel()
        for planes in CATEGORY_PLANES.values():
            g = torch.zeros(gt.shape[0], n, *gt.shape[-2:], dtype=torch.bool)
            p = torch.zeros_like(g)
            for k in planes:
                g |= F.one_hot(gt[:, k], n).permute(0, 3, 1, 2).bool()
                p |= F.one_hot(pred[:, k], n).permute(0, 3, 1, 2).bool()
            inter += (g & p).sum(dim=(0, 2, 3))
            union += (g | p).sum(dim=(0, 2, 3))
            truth += g.sum(dim=(0, 2, 3))
    per_label: dict[str, dict[str, float]] = {c: {} for c in CATEGORY_PLANES}
    for number, lab in enumerate(labels, start=1):
        if truth[number] > 0:
            per_label[lab.category][lab.name] = round(float(inter[number] / union[number]), 4)
    miou = {c: round(float(np.mean(list(v.values()))), 4) if v else None
            for c, v in per_label.items()}
    return {"images": len(data["images"]), "texture_images": int(data["textures"].sum()),
            "miou": miou, "iou": per_label,
            "texture_no_label_accuracy": (round(texture_zero / texture_total, 6)
                                          if texture_total else None)}


def _random_crops(images: torch.Tensor, targets: torch.Tensor, crop: int,
                  generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """One random crop of `crop` image pixels per image (even offsets), flipped half the time."""
    n, _, h, w = images.shape
    half = crop // 2
    ys = torch.randint(0, (h - crop) // 2 + 1, (n,), generator=generator).tolist()
    xs = torch.randint(0, (w - crop) // 2 + 1, (n,), generator=generator).tolist()
    flip = torch.rand(n, generator=generator) < 0.5
    x = torch.stack([im[:, 2 * y:2 * y + crop, 2 * x:2 * x + crop]
                     for im, y, x in zip(images, ys, xs)])
    t = torch.stack([tg[:, y:y + half, x:x + half] for tg, y, x in zip(targets, ys, xs)])
    x[flip] = x[flip].flip(-1)
    t[flip] = t[flip].flip(-1)
    return x, t


def _class_weights(targets: torch.Tensor, power: float, cap: float) -> list[torch.Tensor]:
    """Per head, cross-entropy weights freq^-power (capped at `cap` x the smallest weight),
    scaled so that the average weight over the training pixels is 1."""
    weights = []
    for i, head in enumerate(HEADS):
        counts = torch.bincount(targets[:, i].reshape(-1).long(),
                                minlength=1 + len(HEAD_CLASSES[head])).double()
        freq = counts / counts.sum()
        w = torch.where(counts > 0, freq.clamp_min(1e-12) ** -power, torch.zeros_like(freq))
        w = torch.minimum(w, w[counts > 0].min() * cap)
        w = torch.where(counts > 0, w, torch.ones_like(w))
        weights.append((w / (w * freq).sum()).float())
    return weights


def _soft_dice(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1 - mean soft Dice over the non-background classes present in the batch."""
    prob = logits.softmax(1)
    onehot = F.one_hot(target, logits.shape[1]).permute(0, 3, 1, 2).to(prob.dtype)
    dims = (0, 2, 3)
    inter = (prob * onehot).sum(dims)
    total = prob.sum(dims) + onehot.sum(dims)
    present = onehot.sum(dims) > 0
    present[0] = False
    dice = (2 * inter + 1.0) / (total + 1.0)
    return 1 - dice[present].mean() if present.any() else logits.sum() * 0


def _segmentation_loss(model: ToyWorldSegNet, x: torch.Tensor, t: torch.Tensor,
                       class_weights: list[torch.Tensor], dice: float) -> torch.Tensor:
    """Weighted cross-entropy of every head (+ `dice` x soft Dice of the parts) on uint8
    images `x` and their target planes `t`."""
    x = x.float().div_(255.0).contiguous(memory_format=torch.channels_last)
    heads = model.split(model(x))
    t = t.long()
    loss = sum(F.cross_entropy(heads[h], t[:, i], weight=class_weights[i])
               for i, h in enumerate(HEADS))
    return loss + dice * _soft_dice(heads["part"], t[:, 1]) if dice else loss


def train_segmenter(out: str | os.PathLike, images: int = 4000, seed: int = 0,
                    world_seed: int = 1, eval_seed: int = 2, eval_images: int = 400,
                    epochs: int = 14, batch_size: int = 16, lr: float = 4e-3, crop: int = 128,
                    weight_power: float = 0.5, weight_cap: float = 20.0, dice: float = 1.0,
                    widths: tuple[int, ...] = WIDTHS, threads: int = 2,
                    progress: bool = True) -> dict:
    """Train a `ToyWorldSegNet` on `images` rendered toy-world images; write weights + metadata.

    Writes the state dict to `out` and the metadata (labels, widths, training settings,
    seed, seconds, and the IoU on `eval_images` images of the fresh world `eval_seed`) to
    `out` with suffix .json, both atomically; returns the metadata.  `threads` CPU threads
    train (and as many processes render).  `eval_images` 0 skips the evaluation.
    """
    start = time.perf_counter()
    if images < 1 or epochs < 1 or batch_size < 1:
        raise SettingsError(f"train-segmenter: --images ({images}), --epochs ({epochs}) and "
                            f"the batch size ({batch_size}) must be at least 1.")
    if eval_images < 0:
        raise SettingsError(f"train-segmenter: evaluation images must be 0 or more, got "
                            f"{eval_images}.")
    if eval_seed == world_seed:
        raise SettingsError(f"train-segmenter: the evaluation world seed ({eval_seed}) must "
                            f"differ from the training world seed ({world_seed}); choose "
                            "another --world-seed.")
    if crop % 32 or not 32 <= crop <= tw.IMAGE_SIZE:
        raise SettingsError(f"train-segmenter: crop must be a multiple of 32 between 32 and "
                            f"{tw.IMAGE_SIZE}, got {crop}.")
    out = Path(out)
    previous_threads = torch.get_num_threads()
    try:
        data = render_set(world_seed, images, workers=threads, progress=progress,
                          desc="render training world")
        torch.set_num_threads(threads)
        torch.manual_seed(seed)
        generator = torch.Generator().manual_seed(seed)
        # channels_last: about 10% faster convolutions on the CPU (measured).
        model = ToyWorldSegNet(tuple(widths)).to(memory_format=torch.channels_last)
        class_weights = _class_weights(data["targets"], weight_power, weight_cap)
        optimizer, schedule = adamw_one_cycle(model, lr, epochs, images, batch_size, warmup=0.1)

        def loss_of(idx: torch.Tensor, rgb=data["images"], targets=data["targets"]) -> torch.Tensor:
            x, t = _random_crops(rgb[idx], targets[idx], crop, generator)
            return _segmentation_loss(model, x, t, class_weights, dice)

        train_start = time.perf_counter()
        history = train_epochs(model, images, epochs, batch_size, loss_of, optimizer, schedule,
                               generator, desc="train toyworld segmenter", progress=progress)
        train_seconds = time.perf_counter() - train_start
        model.eval()
        del data, loss_of  # the training images: not needed for the evaluation
        evaluation = None
        if eval_images:
            test = render_set(eval_seed, eval_images, workers=threads, progress=progress,
                              desc="render evaluation world")
            evaluation = evaluate_segmenter(ToyWorldSegmenter(model), test)
        state = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
        meta = {
            "model": "ToyWorldSegNet", "widths": list(widths),
            "labels": [[lab.name, lab.category] for lab in segmenter_labels()],
            "planes": list(PLANES), "input": "RGB float in [0, 1], (B, 3, H, W)",
            "output": "(B, 4, ceil(H/2), ceil(W/2)) int64 label numbers, 0 = no label",
            "parameters": sum(p.numel() for p in model.parameters()),
            "training": {"seed": seed, "world_seed": world_seed, "images": images,
                         "epochs": epochs, "batch_size": batch_size, "lr": lr, "crop": crop,
                         "weight_power": weight_power, "weight_cap": weight_cap, "dice": dice,
                         "threads": threads, "loss_per_epoch": history,
                         "train_seconds": round(train_seconds, 1),
                         "seconds": round(time.perf_counter() - start, 1),
                         "torch": torch.__version__},
            "evaluation": ({"world_seed": eval_seed} | evaluation) if evaluation else None,
        }
        atomic_torch_save(out, state)
        atomic_write_json(out.with_suffix(".json"), meta)
        return meta
    finally:
        torch.set_num_threads(previous_threads)


def finetune_segmenter(out: str | os.PathLike, size: int = 64, images: int = 2000,
                       seed: int = 0, world_seed: int = 1, eval_seed: int = 2,
                       eval_images: int = 400, epochs: int = 6, batch_size: int = 32,
                       lr: float = 2e-3, weight_power: float = 0.5, weight_cap: float = 20.0,
                       dice: float = 1.0, start_from: str | os.PathLike | None = None,
                       threads: int = 2, progress: bool = True) -> dict:
    """Fine-tune the toy-world segmenter (`start_from`: a weights file, default the shipped
    one) on `images` renders area-averaged to `size` x `size`; write weights + metadata.

    Same losses as `train_segmenter` (class-weighted cross-entropy per head, soft Dice on
    parts) on whole images flipped left-right half the time.  The metadata records
    `input_size` = `size` (the segmenter then resizes any image to it) and the IoU on
    `eval_images` images of world `eval_seed` downsampled the same way.  Returns the metadata.
    """
    from netdissect.data.segment.toyworld import (WEIGHTS, load_toyworld_segmenter,
                                                  toyworld_segmenter_metadata)
    from netdissect.files import sha256_file

    start = time.perf_counter()
    if images < 1 or epochs < 1 or batch_size < 1 or eval_images < 0:
        raise SettingsError(f"finetune-segmenter: --images ({images}), --epochs ({epochs}) "
                            f"and the batch size ({batch_size}) must be at least 1, "
                            f"--eval-images ({eval_images}) 0 or more.")
    if size % 16 or not 16 <= size <= tw.IMAGE_SIZE:
        raise SettingsError(f"finetune-segmenter: --size must be a multiple of 16 between 16 "
                            f"and {tw.IMAGE_SIZE}, got {size}.")
    if eval_seed == world_seed:
        raise SettingsError(f"finetune-segmenter: the evaluation world seed ({eval_seed}) must "
                            f"differ from the training world seed ({world_seed}); choose "
                            "another --world-seed.")
    out = Path(out)
    source = Path(start_from) if start_from is not None else WEIGHTS
    previous_threads = torch.get_num_threads()
    try:
        data = downsample_set(render_set(world_seed, images, workers=threads, progress=progress,
                                         desc="render training world"), size)
        torch.set_num_threads(threads)
        torch.manual_seed(seed)
        generator = torch.Generator().manual_seed(seed)
        model = load_toyworld_segmenter(weights=source).model.to(memory_format=torch.channels_last)
        widths = toyworld_segmenter_metadata(source.with_suffix(".json")).get("widths", WIDTHS)
        class_weights = _class_weights(data["targets"], weight_power, weight_cap)
        optimizer, schedule = adamw_one_cycle(model, lr, epochs, images, batch_size, warmup=0.1)

        def loss_of(idx: torch.Tensor, rgb=data["images"], targets=data["targets"]) -> torch.Tensor:
            x, t = rgb[idx].clone(), targets[idx].clone()
            flip = torch.rand(len(idx), generator=generator) < 0.5
            x[flip] = x[flip].flip(-1)
            t[flip] = t[flip].flip(-1)
            return _segmentation_loss(model, x, t, class_weights, dice)

        train_start = time.perf_counter()
        history = train_epochs(model, images, epochs, batch_size, loss_of, optimizer, schedule,
                               generator, desc=f"fine-tune toyworld segmenter at {size}",
                               progress=progress)
        train_seconds = time.perf_counter() - train_start
        model.eval()
        del data, loss_of
        evaluation = None
        if eval_images:
            test = downsample_set(render_set(eval_seed, eval_images, workers=threads,
                                             progress=progress, desc="render evaluation world"),
                                  size)
            evaluation = evaluate_segmenter(ToyWorldSegmenter(model, input_size=size), test)
        state = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
        meta = {
            "model": "ToyWorldSegNet", "widths": list(widths), "input_size": size,
            "labels": [[lab.name, lab.category] for lab in segmenter_labels()],
            "planes": list(PLANES),
            "input": f"RGB float in [0, 1], (B, 3, H, W), resized to {size}x{size}",
            "output": "(B, 4, ceil(H/2), ceil(W/2)) int64 label numbers, 0 = no label",
            "parameters": sum(p.numel() for p in model.parameters()),
            "training": {"finetuned_from": source.name, "finetuned_from_sha256": sha256_file(source),
                         "size": size, "seed": seed, "world_seed": world_seed, "images": images,
                         "epochs": epochs, "batch_size": batch_size, "lr": lr,
                         "weight_power": weight_power, "weight_cap": weight_cap, "dice": dice,
                         "threads": threads, "loss_per_epoch": history,
                         "train_seconds": round(train_seconds, 1),
                         "seconds": round(time.perf_counter() - start, 1),
                         "torch": torch.__version__},
            "evaluation": ({"world_seed": eval_seed, "size": size} | evaluation) if evaluation else None,
        }
        atomic_torch_save(out, state)
        atomic_write_json(out.with_suffix(".json"), meta)
        return meta
    finally:
        torch.set_num_threads(previous_threads)
