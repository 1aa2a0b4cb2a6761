"""IoUs computed by hand on a two-image dataset (8x8 PNG images, 8x8 labels).

The model is the identity, so unit 0 is the red channel: it is 255 (activation 1.0) on the
pixels drawn below and 0 elsewhere; units 1 and 2 are all 0.  With q = 0.3 the threshold of
every unit is 0 (96 of 128 values are 0), so unit 0's mask is exactly the red pixels.

    image A: red rows 0-3 x cols 0-3 (16 px)    image B: red rows 4-5 x all cols (16 px)
      object box  rows 0-3 x cols 2-5 (I = 8)     object ball rows 4-7 x cols 0-5 (I = 12)
      part   lid  rows 0-1 x all cols (I = 8),    part handle rows 6-7 x cols 6-7 (I = 0)
             again on a 2nd plane at cols 0-1
      part   handle rows 6-7 x cols 6-7 (I = 0)
      scene  beach-s (image-level, I = 16)        scene room-s (image-level, I = 16)
"""
from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import netdissect
from conftest import save_plane, write_csv, write_metadata

LABELS = {4: ("box", {"object": 1.0}), 5: ("ball", {"object": 1.0}), 7: ("lid", {"part": 1.0}),
          8: ("handle", {"part": 1.0}), 12: ("beach-s", {"scene": 1.0}), 13: ("room-s", {"scene": 1.0})}


class Identity(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Identity()

    def forward(self, x):
        return self.features(x)


def block(rows, cols, value):
    a = np.zeros((8, 8), dtype=np.int64)
    a[rows, cols] = value
    return a


@pytest.fixture(scope="module")
def hand_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("hand") / "broden"
    (root / "images").mkdir(parents=True)
    write_metadata(root, LABELS, ["object", "part", "scene"])
    red = {"a": block(slice(0, 4), slice(0, 4), 255), "b": block(slice(4, 6), slice(None), 255)}
    for name, r in red.items():
        rgb = np.zeros((8, 8, 3), np.uint8)
        rgb[..., 0] = r
        Image.fromarray(rgb).save(root / "images" / f"{name}.png")
    planes = {"a_obj": block(slice(0, 4), slice(2, 6), 4),
              "a_part1": block(slice(0, 2), slice(None), 7) + block(slice(6, 8), slice(6, 8), 8),
              "a_part2": block(slice(0, 2), slice(0, 2), 7),
              "b_obj": block(slice(4, 8), slice(0, 6), 5),
              "b_part": block(slice(6, 8), slice(6, 8), 8)}
    for name, plane in planes.items():
        save_plane(root / "images" / f"{name}.png", plane)
    write_csv(root / "index.csv", ["image", "split", "ih", "iw", "sh", "sw", "scene", "part", "object"],
              [["a.png", "train", 8, 8, 8, 8, "12", "a_part1.png;a_part2.png", "a_obj.png"],
               ["b.png", "train", 8, 8, 8, 8, "13", "b_part.png", "b_obj.png"]])
    return root


@pytest.fixture(scope="module")
def result(hand_dir):
    return netdissect.dissect(Identity(), hand_dir, ["features"], quantile=0.3, mean=(0, 0, 0),
                              std=(1, 1, 1), workers=0, progress=False)["features"]


def test_counts_by_hand(result):
    assert result.thresholds.tolist() == [0.0, 0.0, 0.0]
    G = result.truth
    assert (G[4], G[5], G[7], G[8], G[12], G[13]) == (16, 24, 16, 8, 64, 64)
    I = result.intersection[0]
    assert (I[4], I[5], I[7], I[8], I[12], I[13]) == (8, 12, 8, 0, 16, 16)
    assert result.intersection[1:].sum() == 0
    # categories: object, part, scene
    assert result.activation["original"][0].tolist() == [32, 32, 32]
    assert result.activation["lite"][0].tolist() == [32, 16, 32]


def test_iou_and_labels_original(result):
    iou = result.iou("original")[0]
    assert iou[4] == pytest.approx(8 / 40) and iou[5] == pytest.approx(12 / 44)
    assert iou[7] == pytest.approx(8 / 40) and iou[8] == 0
    assert iou[12] == pytest.approx(16 / 80) and iou[13] == pytest.approx(16 / 80)
    label, cat, score = result.unit_labels("original")
    assert (int(label[0]), int(cat[0]), float(score[0])) == (5, 0, pytest.approx(12 / 44))
    best_label, _ = result.best_per_category("original")
    assert best_label[0].tolist() == [5, 7, 12]  # scene tie: the lower label number wins
    assert int(label[1]) == 0 and int(cat[1]) == -1  # a silent unit has no label


def test_iou_and_labels_lite(result):
    iou = result.iou("lite")[0]
    assert iou[7] == pytest.approx(8 / 24)
    label, cat, score = result.unit_labels("lite")
    assert (int(label[0]), int(cat[0]), float(score[0])) == (7, 1, pytest.approx(1 / 3))


def test_counts_and_files(result, tmp_path):
    c = result.counts(iou_threshold=0.25)
    assert c["detectors"] == 1 and c["unique_detectors"] == {"object": 1, "part": 0, "scene": 0}
    c = result.counts(iou_threshold=0.04)
    assert c["unique_detectors"] == {"object": 1, "part": 1, "scene": 1}
    assert c["unique_detectors_total"] == 3 and c["distinct_labels"] == 1
    result.save(tmp_path / "features")
    with open(tmp_path / "features" / "tally.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0])[:4] == ["unit", "category", "label", "score"]
    assert list(rows[0])[4:9] == ["object-label", "object-truth", "object-activation",
                                  "object-intersect", "object-iou"]
    top = rows[0]
    assert (top["unit"], top["category"], top["label"]) == ("1", "object", "ball")
    assert (top["part-label"], top["part-truth"], top["part-activation"], top["part-intersect"]) == \
        ("lid", "16", "32", "8")
    assert float(top["part-iou"]) == pytest.approx(0.2)
    assert [r["unit"] for r in rows] == ["1", "2", "3"]
    loaded = netdissect.LayerResult.load(tmp_path / "features")
    assert torch.equal(loaded.intersection, result.intersection)


def test_result_files_are_readable_by_others(result, tmp_path):
    import os
    import stat

    old = os.umask(0o022)
    try:
        result.save(tmp_path / "features")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "features" / "tally.csv").stat().st_mode) == 0o644
