"""Tests of the demo CNN: shipped weights, shapes, accuracy on unseen toy worlds, training."""
from __future__ import annotations

import json

import pytest
import torch

from netdissect.data.toyworld import SCENES, generate_toyworld
from netdissect.files import sha256_file
from netdissect.models.demo_cnn import (MEAN, STD, WEIGHTS, DemoCNN, demo_cnn_metadata,
                                        load_demo_cnn)
from netdissect.models.preprocess import IMAGENET_MEAN, IMAGENET_STD
from netdissect.models.trace import TraceDict
from netdissect.models.zoo import build_model
from netdissect.train_demo import accuracy, load_scene_images, train_demo


@pytest.fixture(scope="module")
def fresh_world(tmp_path_factory):
    """A toy world the shipped model never saw (another seed than its training world)."""
    return generate_toyworld(tmp_path_factory.mktemp("demo") / "world", images=200, seed=1234,
                             workers=2, progress=False)


def test_shipped_weights_load_with_weights_only():
    state = torch.load(WEIGHTS, map_location="cpu", weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    assert WEIGHTS.stat().st_size < 5_000_000
    meta = demo_cnn_metadata()
    assert meta["class_names"] == SCENES
    assert meta["mean"] == list(MEAN) and meta["std"] == list(STD)
    assert meta["dataset"]["toyworld_images"] == 2000 and meta["dataset"]["toyworld_seed"] == 0
    DemoCNN(len(meta["class_names"])).load_state_dict(state)
    assert (MEAN, STD) == (IMAGENET_MEAN, IMAGENET_STD)


def test_zoo_demo_cnn_probe():
    probe = build_model("demo_cnn")
    assert probe.name == "demo_cnn" and probe.preset == "imagenet" and probe.input_size == 224
    assert probe.layers == probe.default_layers == ["conv1", "conv2", "conv3", "conv4", "conv5"]
    assert probe.weights == str(WEIGHTS) and probe.weights_fingerprint == sha256_file(WEIGHTS)
    shipped = load_demo_cnn()
    assert all(torch.equal(a, b) for a, b in zip(probe.model.state_dict().values(),
                                                  shipped.state_dict().values()))
    random = build_model("demo_cnn", weights="random")
    assert random.weights is None and not torch.equal(random.model.fc.weight, shipped.fc.weight)


def test_output_shape_and_layers():
    model = load_demo_cnn()
    assert not model.training and model.class_names == SCENES
    with torch.no_grad(), TraceDict(model, ["conv1", "conv4", "conv5"]) as traces:
        out = model(torch.zeros(3, 3, 224, 224))
    seen = {name: tuple(trace.output.shape) for name, trace in traces.items()}
    assert out.shape == (3, len(SCENES))
    assert seen == {"conv1": (3, 32, 112, 112), "conv4": (3, 128, 14, 14),
                    "conv5": (3, 256, 14, 14)}
    with torch.no_grad(), TraceDict(model, ["head"]) as traces:
        model(torch.zeros(1, 3, 224, 224))
    assert traces["head"].output.shape == (1, 256, 7, 7)
    untrained = load_demo_cnn(pretrained=False)
    assert not torch.equal(untrained.fc.weight, model.fc.weight)


def test_metadata_without_a_head_builds_the_first_demo_cnn(tmp_path):
    # Weights of the first demo CNN (conv5 straight into the pool) still load.
    old = DemoCNN(len(SCENES), head_width=0)
    path = tmp_path / "old.pt"
    torch.save(old.state_dict(), path)
    meta = {k: v for k, v in demo_cnn_metadata().items() if k not in ("head_width", "dropout")}
    path.with_suffix(".json").write_text(json.dumps(meta))
    model = load_demo_cnn(weights=path)
    assert isinstance(model.head, torch.nn.Identity) and model.fc.in_features == 256
    x = torch.rand(2, 3, 224, 224)
    with torch.no_grad():
        assert torch.equal(model(x), old.eval()(x))
    assert demo_cnn_metadata()["head_width"] == 256


def test_accuracy_on_an_unseen_toy_world(fresh_world):
    model = load_demo_cnn()
    images, labels = load_scene_images(fresh_world, model.class_names)
    assert images.shape[1:] == (3, 224, 224) and len(images) > 150
    acc = accuracy(model, images, labels)
    # Measured 0.734 on this world (0.844 on 346 images of another); chance is 1/6.
    assert acc > 0.6, f"accuracy {acc:.3f} on {len(images)} unseen images (chance 1/6)"


def test_train_demo_tiny_run_writes_a_loadable_model(fresh_world, tmp_path):
    out = tmp_path / "tiny.pt"
    meta = train_demo(fresh_world, out, seed=7, epochs=1, progress=False, max_images=24,
                      crop=96)
    assert out.is_file() and out.with_suffix(".json").is_file()
    assert meta["class_names"] == SCENES and meta["dataset"]["train_images"] == 24
    assert 0.0 <= meta["train_accuracy"] <= 1.0
    model = load_demo_cnn(weights=out)
    with torch.no_grad():
        assert model(torch.zeros(1, 3, 224, 224)).shape == (1, len(SCENES))
    # Seeded: the same run gives the same weights.
    again = tmp_path / "again.pt"
    train_demo(fresh_world, again, seed=7, epochs=1, progress=False, max_images=24, crop=96)
    a = torch.load(out, weights_only=True)
    b = torch.load(again, weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in a)
