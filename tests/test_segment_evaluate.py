"""segmentation_iou: a segmented folder against its ground truth, checked by hand."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
from PIL import Image

from netdissect.data.segment.evaluate import segmentation_iou
from netdissect.data.toyworld import LABELS, generate_toyworld


def _decode(path):
    rgb = np.asarray(Image.open(path).convert("RGB")).astype(np.int64)
    return rgb[..., 0] + 256 * rgb[..., 1]


def test_segmentation_iou_counts_what_a_segmenter_missed(tmp_path):
    truth = generate_toyworld(tmp_path / "truth", images=12, seed=3, workers=1, progress=False)
    seg = tmp_path / "seg"
    shutil.copytree(truth, seg)
    sky = LABELS["sky"]
    kept = total = 0
    for plane in sorted((seg / "images" / "scenes").glob("*_object.png")):
        labels = _decode(plane)
        total += int((labels == sky).sum())
        labels[:, : labels.shape[1] // 2][labels[:, : labels.shape[1] // 2] == sky] = 0  # left half lost
        kept += int((labels == sky).sum())
        rgb = np.stack([labels % 256, labels // 256, 0 * labels], -1).astype(np.uint8)
        Image.fromarray(rgb).save(plane)
    assert 0 < kept < total
    scores = segmentation_iou(truth, seg, ["object", "material"])
    labels = scores["object"]["labels"]
    assert labels["sky"]["iou"] == pytest.approx(kept / total, abs=1e-12)
    assert labels["sky"]["truth_pixels"] == total and labels["sky"]["segmented_pixels"] == kept
    present = [v["iou"] for v in labels.values() if v["truth_pixels"]]
    assert all(v == 1.0 for name, v in ((n, l["iou"]) for n, l in labels.items() if l["truth_pixels"]) if name != "sky")
    assert scores["object"]["mean_iou"] == pytest.approx(sum(present) / len(present))
    assert scores["object"]["images"] == 12 and scores["object"]["unmatched"] == 0
    assert scores["material"]["mean_iou"] == 1.0
