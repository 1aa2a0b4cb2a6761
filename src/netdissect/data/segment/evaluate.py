"""How well a segmented dataset matches a hand-labelled one: per-label IoU and mean IoU.

    scores = segmentation_iou("toyworld", "toyworld-segmented", ["object", "part", "material"])
    scores["object"]["mean_iou"], scores["object"]["labels"]["tree"]["iou"]

Both folders are Broden-format datasets of the same images (rows are matched by their image
path; rows of one folder missing from the other are counted, not scored).  Labels are matched
by name, so the two folders may number them differently.  Per category, a label's IoU is
|truth AND segmented| / |truth OR segmented| over every pixel of every shared image, where a
pixel "has" a label when any plane of that category carries it (parts of parts, like window
panes, lie in a second part plane); the category's mean IoU averages the labels that occur in
the truth.  Image-level labels (scenes, textures) are not segmentations and are not scored.
"""
from __future__ import annotations

import os

import torch

from netdissect.data.broden import Broden, BrodenImages, load_broden
from netdissect.errors import BrodenError

__all__ = ["segmentation_iou"]


def segmentation_iou(truth: str | os.PathLike, segmented: str | os.PathLike,
                     categories: list[str]) -> dict:
    """Per category: `mean_iou`, `images` (shared rows scored), `unmatched` (rows in only one
    folder) and `labels` {name: {"iou", "truth_pixels", "segmented_pixels"}} (see the module
    docstring)."""
    scores = {}
    for category in categories:
        t, s = load_broden(truth, [category]), load_broden(segmented, [category])
        if t.label_size != s.label_size:
            raise BrodenError(f"{s.root}: label size {s.label_size} differs from {t.root}'s "
                              f"{t.label_size}; segment with --label-size {t.label_size[0]}.")
        scores[category] = _category_iou(t, s)
    return scores


def _names(broden: Broden) -> list[str]:
    """The label names of the broden's (one) selected category, by global label number."""
    return [name if broden.label_category[n] == 0 else "" for n, name in enumerate(broden.label_names)]


def _category_iou(truth: Broden, segmented: Broden) -> dict:
    truth_names, seg_names = _names(truth), _names(segmented)
    vocabulary = sorted({n for n in truth_names + seg_names if n})
    column = {name: i + 1 for i, name in enumerate(vocabulary)}  # 0: no label
    truth_map = torch.tensor([column.get(n, 0) for n in truth_names])
    seg_map = torch.tensor([column.get(n, 0) for n in seg_names])
    seg_rows = {row.image: i for i, row in enumerate(segmented.rows)}
    truth_samples, seg_samples = BrodenImages(truth, images=False), BrodenImages(segmented, images=False)
    V = len(vocabulary) + 1
    inter, union = torch.zeros(V, dtype=torch.int64), torch.zeros(V, dtype=torch.int64)
    in_truth, in_seg = torch.zeros(V, dtype=torch.int64), torch.zeros(V, dtype=torch.int64)
    shared = 0
    for i, row in enumerate(truth.rows):
        j = seg_rows.get(row.image)
        if j is None:
            continue
        a, b = _has_label(truth_samples[i], truth_map, V), _has_label(seg_samples[j], seg_map, V)
        inter += (a & b).sum(1)
        union += (a | b).sum(1)
        in_truth += a.sum(1)
        in_seg += b.sum(1)
        shared += 1
    labels = {name: {"iou": float(inter[c]) / float(union[c]) if union[c] else 0.0,
                     "truth_pixels": int(in_truth[c]), "segmented_pixels": int(in_seg[c])}
              for name, c in column.items()}
    present = [v["iou"] for v in labels.values() if v["truth_pixels"] > 0]
    return {"mean_iou": sum(present) / len(present) if present else 0.0, "images": shared,
            "unmatched": len(truth.rows) + len(segmented.rows) - 2 * shared, "labels": labels}


def _has_label(sample: dict, mapping: torch.Tensor, labels: int) -> torch.Tensor:
    """(labels, pixels) bool: which (shared-vocabulary) labels each pixel carries."""
    if sample["bad"]:
        raise BrodenError(sample["bad"])
    P, sh, sw = sample["planes"].shape
    planes = mapping[sample["planes"]].reshape(P, sh * sw)
    has = torch.zeros((labels, sh * sw), dtype=torch.bool)
    pixel = torch.arange(planes.shape[1]).expand_as(planes)
    has[planes.reshape(-1), pixel.reshape(-1)] = True
    has[0] = False
    return has
