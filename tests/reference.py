"""A slow, literal implementation of docs/method.md sections 2-7 and 14, for checking the engine.

It shares no code with netdissect: it reads the CSV files with the csv module, runs the model
image by image, computes thresholds with numpy over all values, upsamples every map, and
counts each label with boolean masks.
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def primary_categories(root: Path, categories: list[str]) -> dict[int, str]:
    best: dict[int, tuple[float, int, str]] = {}
    for order, cat in enumerate(categories):
        for r in _rows(root / f"c_{cat}.csv"):
            n, cov = int(r["number"]), float(r["coverage"])
            if n not in best or (cov, order) >= best[n][:2]:
                best[n] = (cov, order, cat)
    return {n: v[2] for n, v in best.items()}


def reference_dissect(root: Path, model, layer: str, q: float = 0.005, mean=(0.485, 0.456, 0.406),
                      std=(0.229, 0.224, 0.225), categories: list[str] | None = None,
                      input_size: tuple[int, int] | None = None, upsampled: bool = False) -> dict:
    """`upsampled`: thresholds over the maps upsampled to the label size (the pnas rule).
    `input_size` (H, W) is the model's input size; by default the `ih x iw` of the first
    row of index.csv (docs/method.md section 3). An image file of another size is resized to
    it with PIL's bilinear filter before the model; label maps keep their own size."""
    root = Path(root)
    all_categories = [r["name"] for r in _rows(root / "category.csv")]
    categories = [c for c in all_categories if categories is None or c in categories]
    primary = primary_categories(root, categories)
    index = _rows(root / "index.csv")
    if input_size is None:
        input_size = (int(index[0]["ih"]), int(index[0]["iw"]))
    height, width = input_size
    module = model.get_submodule(layer)
    captured = {}
    handle = module.register_forward_hook(lambda m, i, o: captured.__setitem__("out", o))
    m = torch.tensor(mean).view(1, 3, 1, 1)
    s = torch.tensor(std).view(1, 3, 1, 1)
    acts = []
    with torch.no_grad():
        for row in index:
            pil = Image.open(root / "images" / row["image"]).convert("RGB")
            if pil.size != (width, height):  # PIL sizes are (width, height)
                pil = pil.resize((width, height), Image.BILINEAR)
            img = np.asarray(pil)
            x = torch.from_numpy(img.copy()).permute(2, 0, 1)[None].float() / 255.0
            # The engine feeds channels-last input (faster convolutions); so does the
            # reference, so that both see the same activations to the last bit.
            model.eval()(((x - m) / s).contiguous(memory_format=torch.channels_last))
            acts.append(captured["out"][0].float())
    handle.remove()
    acts = torch.stack(acts)  # (N, K, h, w)
    K = acts.shape[1]
    if upsampled:
        # Each map upsampled on its own, (K, 1, h, w): torch's kernel for (1, K, h, w) can
        # round differently in the last bit, and an exact quantile sees every bit.
        values = torch.cat([F.interpolate(acts[n][:, None], size=(int(row["sh"]), int(row["sw"])), mode="bilinear",
                                          align_corners=False).reshape(K, -1) for n, row in enumerate(index)], 1).numpy()
    else:
        values = acts.transpose(0, 1).reshape(K, -1).numpy()
    thresholds = np.quantile(values, 1 - q, axis=1).astype(np.float32)

    L = max(primary) + 1
    I = np.zeros((K, L), np.int64)
    G = np.zeros(L, np.int64)
    A = {"original": np.zeros((K, len(categories)), np.int64),
         "lite": np.zeros((K, len(categories)), np.int64),
         "pnas": np.zeros((K, len(categories)), np.int64)}
    for n, row in enumerate(index):
        sh, sw = int(row["sh"]), int(row["sw"])
        up = F.interpolate(acts[n:n + 1], size=(sh, sw), mode="bilinear", align_corners=False)[0]
        masks = (up > torch.from_numpy(thresholds)[:, None, None]).numpy()  # (K, sh, sw)
        pixel_labels: dict[int, np.ndarray] = {}
        image_labels: set[int] = set()
        for cat in categories:
            for item in filter(None, row[cat].split(";")):
                if item.isdigit():
                    image_labels.add(int(item))
                else:
                    rgb = np.asarray(Image.open(root / "images" / item).convert("RGB")).astype(np.int64)
                    plane = rgb[..., 0] + 256 * rgb[..., 1]
                    for lab in np.unique(plane[plane > 0]):
                        has = pixel_labels.setdefault(int(lab), np.zeros((sh, sw), bool))
                        has |= plane == lab
        image_labels = {c for c in image_labels if c in primary}
        pixel_labels = {c: v for c, v in pixel_labels.items() if c in primary and c not in image_labels}
        for c in image_labels:
            G[c] += sh * sw
            I[:, c] += masks.reshape(K, -1).sum(1)
        for c, has in pixel_labels.items():
            G[c] += has.sum()
            I[:, c] += (masks & has[None]).reshape(K, -1).sum(1)
        on = masks.reshape(K, -1).sum(1)
        for ci, cat in enumerate(categories):
            image_level = any(primary[c] == cat for c in image_labels)
            pixel = [has for c, has in pixel_labels.items() if primary[c] == cat]
            if image_level or pixel:
                A["original"][:, ci] += on
            under = np.zeros(K, bool)
            for has in pixel:
                under |= (masks & has[None]).reshape(K, -1).any(1)
            A["lite"][:, ci] += np.where(under | image_level, on, 0)
            A["pnas"][:, ci] += on  # plain IoU: every mask pixel
    return {"thresholds": thresholds, "I": I, "G": G, "A": A, "primary": primary,
            "categories": categories}


def reference_iou(ref: dict, definition: str) -> np.ndarray:
    K, L = ref["I"].shape
    iou = np.zeros((K, L))
    for c, cat in ref["primary"].items():
        ci = ref["categories"].index(cat)
        for k in range(K):
            union = ref["A"][definition][k, ci] + ref["G"][c] - ref["I"][k, c]
            iou[k, c] = ref["I"][k, c] / union if union > 0 else 0.0
    return iou
