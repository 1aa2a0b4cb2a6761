"""The paper's findings on the embedded default, as measured numbers (issue 3).

A CNN trained only on the toy world's scene labels grows object and part detectors in its
last conv layer (concepts absent from its training labels); the same architecture with random
weights has clearly fewer; in EfficientNet-Lite0 colour detectors are a larger share of the
detectors in an early block than in a late one.
"""
from __future__ import annotations

import pytest

import netdissect
from netdissect.data.toyworld import ensure_toyworld
from netdissect.models.zoo import build_model


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    # A world the demo CNN never saw (it was trained on seed 0).
    return ensure_toyworld(tmp_path_factory.mktemp("science") / "world", images=300, seed=11,
                           progress=False)


def dissect(info, world, layers):
    return netdissect.dissect(info.model, world, layers, mean=info.mean, std=info.std,
                              input_size=info.input_size, batch_size=25, workers=2, progress=False)


def test_scene_training_creates_object_and_part_detectors(world):
    trained = dissect(build_model("demo_cnn"), world, ["conv5"])["conv5"].counts()
    random = dissect(build_model("demo_cnn", weights="random"), world, ["conv5"])["conv5"].counts()
    concepts = trained["unique_detectors"]["object"] + trained["unique_detectors"]["part"]
    assert concepts >= 3, trained
    random_concepts = random["unique_detectors"]["object"] + random["unique_detectors"]["part"]
    assert concepts >= random_concepts + 2, (trained, random)
    assert trained["unique_detectors_total"] >= 1.5 * max(random["unique_detectors_total"], 1), (trained, random)


def test_efficientnet_colour_share_falls_with_depth(world):
    info = build_model("efficientnet_lite0")
    early, late = info.aliases["stem"], info.aliases["block7"]
    result = dissect(info, world, [early, late])

    def colour_share(layer):
        label, cat, score = result[layer].unit_labels()
        detectors = score >= 0.04
        colour = result[layer].labels.categories.index("color")
        return float(((cat == colour) & detectors).sum()) / max(int(detectors.sum()), 1)

    # on 400 images of the demo world, 10 of the stem's 21 detectors are colour detectors, 1 of
    # block 7's 124
    assert colour_share(early) >= 0.3 and colour_share(late) <= 0.05, (colour_share(early), colour_share(late))
