"""The toy world's GAN (issue 14, item 5): the shipped generator `toyworld_gan`, deterministic
training and `netdissect train-gan`, the segmenter that labels its 64x64 images
(`toyworld64`, `netdissect finetune-segmenter`) and unit ablation on the shipped GAN."""
from __future__ import annotations

import json

import pytest
import torch

from netdissect.cli.main import main
from netdissect.data.segment import load_segmenter
from netdissect.data.segment.toyworld import WEIGHTS_64, toyworld_segmenter_metadata
from netdissect.data.segment.train import (downsample_set, evaluate_segmenter,
                                           finetune_segmenter, render_set)
from netdissect.errors import SettingsError
from netdissect.experiments.gan import gan_ablate
from netdissect.models.generators import GENERATORS, build_generator
from netdissect.models.toy_gan import METADATA, WEIGHTS, ToyGANGenerator, load_toyworld_gan
from netdissect.models.trace import Trace
from netdissect.train_gan import train_gan

FRESH_SEED = 2027  # neither the training world (1) nor the evaluation world (2)
#: The GAN's most common object by segmented pixel fraction (sky, 0.157 of 500 samples of
#: seed 0), a thing (tree, 0.111), and their top 20 units by IoU, from `netdissect
#: gan-dissect --generator toyworld_gan --samples 500 --seed 0`.
SKY_LAYER3_TOP = [59, 50, 61, 27, 1, 38, 60, 4, 20, 34, 23, 44, 26, 53, 8, 32, 13, 57, 51, 52]
TREE_LAYER2_TOP = [46, 4, 79, 38, 37, 9, 25, 48, 22, 86, 58, 92, 56, 28, 84, 100, 102, 103, 0, 6]


@pytest.fixture(scope="module")
def gen():
    return build_generator("toyworld_gan")


@pytest.fixture(scope="module")
def segmenter64():
    return load_segmenter("toyworld64")


def tiny_images(count: int = 8) -> torch.Tensor:
    """Deterministic uint8 (count, 3, 64, 64) stand-ins for toy-world images."""
    g = torch.Generator().manual_seed(5)
    return torch.randint(0, 256, (count, 3, 64, 64), generator=g, dtype=torch.uint8)


# -- the shipped generator ---------------------------------------------------------------------
def test_shipped_weights_are_a_small_state_dict():
    state = torch.load(WEIGHTS, map_location="cpu", weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    assert WEIGHTS.stat().st_size < 5 * 2 ** 20
    meta = json.loads(METADATA.read_text())
    assert meta["z_dim"] == 64 and meta["image_size"] == 64
    assert meta["default_layers"] == ["layer2", "layer3"]
    assert meta["training"]["seconds"] < 15 * 60
    ToyGANGenerator().load_state_dict(state)


def test_zoo_entry_draws_64x64_images_in_range(gen):
    assert "toyworld_gan" in GENERATORS
    assert gen.z_dim == 64 and gen.latent_shape == (64,)
    assert gen.default_layers == ["layer2", "layer3"] and gen.image_size == (64, 64)
    assert gen.segmenter == "toyworld64" and gen.weights == str(WEIGHTS)
    assert not gen.model.training
    z = gen.latents(0, torch.arange(16))
    with torch.no_grad():
        out = gen.model(z)
    assert out.shape == (16, 3, 64, 64)
    assert out.min() >= -1 and out.max() <= 1
    images = gen.images(z)
    assert images.dtype == torch.uint8 and images.shape == (16, 3, 64, 64)
    # different latents, different pictures: not a collapsed generator
    assert images.float().std(0).mean() > 20
    with torch.no_grad(), Trace(gen.model, "layer2") as t2, Trace(gen.model, "layer3") as t3:
        gen.model(z[:2])
    assert t2.output.shape == (2, 128, 8, 8) and t3.output.shape == (2, 64, 16, 16)


def test_blocks_double_by_upsampling_and_first_gan_weights_still_load(tmp_path):
    # The shipped generator doubles with nearest upsampling and a 3x3 convolution (no
    # chequerboard); weights whose metadata names no upsampling are the first, transposed one.
    nearest = ToyGANGenerator()
    assert isinstance(nearest.layer2[0], torch.nn.Upsample) and isinstance(nearest.layer2[1], torch.nn.Conv2d)
    assert json.loads(METADATA.read_text())["upsampling"] == "nearest"
    torch.manual_seed(3)
    first = ToyGANGenerator(upsampling="transposed").eval()
    torch.save(first.state_dict(), tmp_path / "first.pt")
    meta = {k: v for k, v in json.loads(METADATA.read_text()).items() if k != "upsampling"}
    (tmp_path / "first.json").write_text(json.dumps(meta))
    loaded, _, _ = load_toyworld_gan(tmp_path / "first.pt")
    assert isinstance(loaded.layer2[0], torch.nn.ConvTranspose2d)
    z = torch.randn(2, 64)
    with torch.no_grad():
        assert torch.equal(loaded(z), first(z))
    with pytest.raises(ValueError, match="upsampling"):
        ToyGANGenerator(upsampling="bilinear")


def test_random_weights_and_z_dim_checks():
    random = build_generator("toyworld_gan", weights="random")
    assert random.weights is None
    assert not torch.equal(random.model.layer1[0].weight, build_generator("toyworld_gan").model.layer1[0].weight)
    with pytest.raises(SettingsError, match="--z-dim 10"):
        build_generator("toyworld_gan", z_dim=10)


# -- training ------------------------------------------------------------------------------------
def _train(tmp_path, name: str, seed: int = 0) -> dict[str, torch.Tensor]:
    out = tmp_path / f"{name}.pt"
    train_gan(out, steps=2, batch_size=4, seed=seed, threads=1, bn_batches=2, progress=False,
              data=tiny_images())
    return torch.load(out, weights_only=True)


def test_training_is_deterministic(tmp_path):
    first, second = _train(tmp_path, "a"), _train(tmp_path, "b")
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)
    other = _train(tmp_path, "c", seed=1)
    assert not torch.equal(first["layer1.0.weight"], other["layer1.0.weight"])


def test_training_rejects_bad_options(tmp_path):
    with pytest.raises(SettingsError, match="--steps"):
        train_gan(tmp_path / "x.pt", steps=0, data=tiny_images(), progress=False)
    with pytest.raises(SettingsError, match="uint8 images"):
        train_gan(tmp_path / "x.pt", steps=1, data=tiny_images().float(), progress=False)
    with pytest.raises(SettingsError, match="moving average"):
        train_gan(tmp_path / "x.pt", steps=1, ema=1.0, data=tiny_images(), progress=False)


def test_train_gan_command(tmp_path, capsys):
    out = tmp_path / "gan.pt"
    assert main(["train-gan", "--out", str(out), "--images", "12", "--steps", "2",
                 "--batch-size", "4", "--threads", "1", "--quiet"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["weights"] == str(out)
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["training"]["steps"] == 2 and 0 < meta["training"]["scene_images"] <= 12
    assert len(meta["training"]["history"]) == 2
    gen = build_generator("toyworld_gan", weights=str(out))
    assert gen.images(gen.latents(0, torch.arange(2))).shape == (2, 3, 64, 64)


# -- the segmenter of its images -------------------------------------------------------------------
def test_finetune_segmenter_command(tmp_path, capsys):
    out = tmp_path / "seg64.pt"
    assert main(["finetune-segmenter", "--out", str(out), "--images", "4", "--epochs", "1",
                 "--eval-images", "0", "--threads", "1", "--quiet"]) == 0
    assert json.loads(capsys.readouterr().out)["weights"] == str(out)
    meta = toyworld_segmenter_metadata(out.with_suffix(".json"))
    assert meta["input_size"] == 64 and meta["training"]["finetuned_from"] == "toyworld_segmenter.pt"
    seg = load_segmenter("toyworld64", weights=out)
    assert seg.name == "toyworld64" and seg.segmenter.input_size == 64
    planes = seg.segment(torch.rand(2, 3, 224, 224))  # any size: resized to 64 and back
    assert planes.shape == (2, 4, 112, 112)
    with pytest.raises(SettingsError, match="--size"):
        finetune_segmenter(tmp_path / "x.pt", size=60, progress=False)


def test_toyworld64_labels_64x64_renders_of_an_unseen_world(segmenter64):
    # Measured on these 32 images: object mIoU 0.667, part 0.432, material 0.722 (the
    # full-size segmenter on the same images: 0.369, 0.139, 0.438).
    data = downsample_set(render_set(FRESH_SEED, 32), 64)
    assert data["images"].shape == (32, 3, 64, 64)
    miou = evaluate_segmenter(segmenter64.segmenter, data)["miou"]
    assert miou["object"] > 0.6 and miou["part"] > 0.38 and miou["material"] > 0.65
    shipped = toyworld_segmenter_metadata(WEIGHTS_64.with_suffix(".json"))
    assert shipped["input_size"] == 64 and shipped["evaluation"]["miou"]["object"] > 0.6


def test_toyworld64_labels_generated_images(gen, segmenter64):
    # Measured on these 32 samples: 0.14% of the pixels get no object label; wall 0.16, sky
    # 0.15, floor 0.11, tree 0.11, grass 0.07 of the pixels.
    images = gen.images(gen.latents(0, torch.arange(32)))
    objects = segmenter64.segment(images.float() / 255)[:, 0]
    assert objects.shape == (32, 32, 32)
    names = [lab.name for lab in segmenter64.labels()]
    share = torch.bincount(objects.flatten(), minlength=len(names) + 1).double() / objects.numel()
    assert share[0] < 0.01
    for concept in ("sky", "wall", "floor", "tree"):
        assert share[names.index(concept) + 1] > 0.08, concept
    assert int((share[1:] > 0.01).sum()) >= 10  # many different objects, not one blob


# -- ablation on the shipped GAN -------------------------------------------------------------------
# Measured on these 64 samples (fractions of all pixels: as generated, without the top 20
# units, without 20 random units (std)): sky in layer3 0.160, 0.048, 0.176 (0.013); tree in
# layer2 0.099, 0.015, 0.102 (0.003).  On 500 samples (gan-ablate): sky 0.157, 0.057 (63%
# removed), 0.175 (std 0.018; +12%: a background gains what random units stop drawing in front
# of it); tree 0.111, 0.011 (90% removed), 0.109 (-2%).
@pytest.mark.parametrize("layer, concept, units, span, top_below, random_within", [
    ("layer3", "sky", SKY_LAYER3_TOP, (0.14, 0.18), 0.5, 0.2),  # the most common object
    ("layer2", "tree", TREE_LAYER2_TOP, (0.08, 0.12), 0.25, 0.1),  # a thing
])
def test_ablating_the_top_units_removes_the_concept(gen, layer, concept, units, span, top_below,
                                                     random_within):
    result = gan_ablate(gen, None, layer, concept, units=units, counts=[20], samples=64, seed=0,
                        draws=3, batch_size=32, grid=2, progress=False)
    assert result.segmenter == "toyworld64"
    assert result.grid.shape == (3, 2, 3, 64, 64)
    (twenty,) = result.curve
    before = twenty["fraction_before"]
    assert span[0] < before < span[1]
    assert twenty["fraction_after_top"] < top_below * before
    assert abs(twenty["fraction_after_random"] - before) < random_within * before
