"""Tests of the demo CNN: shipped weights, shapes, accuracy on unseen toy worlds, training."""
from __future__ import annotations

import pytest
import torch

from netdissect.data.toyworld import SCENES, generate_toyworld
from netdissect.models.demo_cnn import (MEAN, STD, WEIGHTS, DemoCNN, demo_cnn_metadata,
                                        load_demo_cnn)
from netdissect.train_demo import accuracy, load_scene_images, train_demo


@pytest.fixture(scope="module")
def fresh_world(tmp_path_factory):
    """A toy world the shipped model never saw (another seed than its training world)."""
    return generate_toyworld(tmp_path_factory.mktemp("demo") / "world", images=200, seed=1234,
                             workers=2, progress=False)


def test_shipped_weights_load_with_weights_only():
    state = torch.load(WEIGHTS, map_location="cpu", weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    assert WEIGHTS.stat().st_size < 4_000_000
    meta = demo_cnn_metadata()
    assert meta["class_names"] == SCENES
    assert meta["mean"] == list(MEAN) and meta["std"] == list(STD)
    assert meta["dataset"]["toyworld_images"] == 2000 and meta["dataset"]["toyworld_seed"] == 0
    DemoCNN(len(meta["class_names"])).load_state_dict(state)


def test_output_shape_and_layers():
    model = load_demo_cnn()
    assert not model.training and model.class_names == SCENES
    seen = {}
    hooks = [model.get_submodule(name).register_forward_hook(
        lambda m, i, o, name=name: seen.__setitem__(name, tuple(o.shape)))
        for name in ("conv1", "conv4", "conv5")]
    with torch.no_grad():
        out = model(torch.zeros(3, 3, 224, 224))
    for h in hooks:
        h.remove()
    assert out.shape == (3, len(SCENES))
    assert seen == {"conv1": (3, 32, 112, 112), "conv4": (3, 128, 14, 14),
                    "conv5": (3, 256, 14, 14)}
    untrained = load_demo_cnn(pretrained=False)
    assert not torch.equal(untrained.fc.weight, model.fc.weight)


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
