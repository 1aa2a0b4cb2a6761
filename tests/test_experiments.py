"""The experiments (issue 6): rotation, comparison of dissections, unit ablation.

Small generated data only: the random Broden of conftest with TinyNet, and a small toy world
with the trained demo CNN where real detectors and a real classifier are needed.
"""
from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import pytest
import torch

from conftest import TinyNet, make_broden
from netdissect import dissect
from netdissect.cli.main import build_parser
from netdissect.experiments import (Ablator, RotatedProbe, ablate, compare, load_labelled_images,
                                    random_rotation, read_record, rotate, rotation_power)
from netdissect.experiments.compare import unit_status
from netdissect.models.preprocess import Preprocess
from netdissect.models.probe import Probe
from netdissect.models.trace import Trace

QUIET = dict(progress=False, workers=0, batch_size=16)


def parse(argv: list[str]) -> argparse.Namespace:
    """Parse `argv` with the command line's parser."""
    return build_parser().parse_args(argv)


@pytest.fixture(scope="module")
def small_broden(tmp_path_factory) -> Path:
    return make_broden(tmp_path_factory.mktemp("exp") / "broden", images=30, seed=3)


# -- rotation matrices -------------------------------------------------------------------------
@pytest.mark.parametrize("n", [1, 2, 7, 16])
def test_random_rotation_is_a_seeded_rotation(n):
    r = random_rotation(n, seed=5)
    assert torch.allclose(r.T @ r, torch.eye(n, dtype=torch.float64), atol=1e-12)
    assert abs(float(torch.linalg.det(r)) - 1.0) < 1e-10
    assert torch.equal(r, random_rotation(n, seed=5))
    assert n == 1 or not torch.equal(r, random_rotation(n, seed=6))


def test_rotation_powers_interpolate():
    r = random_rotation(16, seed=0)
    eye = torch.eye(16, dtype=torch.float64)
    assert torch.equal(rotation_power(r, 0.0), eye)
    assert torch.equal(rotation_power(r, 1.0), r)
    half, third = rotation_power(r, 0.5), rotation_power(r, 1 / 3)
    assert torch.allclose(half @ half, r, atol=1e-10)
    assert torch.allclose(third @ third @ third, r, atol=1e-10)
    for p in (half, third, rotation_power(r, 0.9)):
        assert torch.allclose(p.T @ p, eye, atol=1e-10)
        assert abs(float(torch.linalg.det(p)) - 1.0) < 1e-10
    # Distance from the identity grows with the power.
    d = [float(torch.linalg.norm(rotation_power(r, a) - eye)) for a in (0.0, 0.25, 0.5, 0.75, 1.0)]
    assert d == sorted(d) and d[0] == 0.0
    with pytest.raises(ValueError):
        rotation_power(r, 1.5)


def test_rotating_and_rotating_back_leaves_outputs_unchanged():
    model = TinyNet()
    r = rotation_power(random_rotation(8, seed=2), 0.7).float()
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        plain = model(x)

        def there_and_back(output, layer):
            rotated = torch.einsum("oc,nchw->nohw", r, output)
            assert not torch.allclose(rotated, output, atol=1e-3)
            return torch.einsum("oc,nchw->nohw", r.T, rotated)

        with Trace(model, "conv1", edit_output=there_and_back):
            back = model(x)
    assert torch.allclose(back, plain, atol=1e-5)


def test_rotated_probe_returns_each_power_of_the_rotation():
    model = TinyNet()
    probe = RotatedProbe(model, None, Preprocess(mean=(0.5,) * 3, std=(0.25,) * 3),
                         target="conv2", powers=[0.0, 0.5, 1.0], seed=4)
    assert probe.layers == ["rotated_0", "rotated_1", "rotated_2"]
    images = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    seen = probe(images)
    with torch.no_grad():  # the layer's output computed by hand
        feats = model.conv2(model.conv1((images.float() / 255 - 0.5) / 0.25))
    assert torch.allclose(seen["rotated_0"], feats, atol=1e-6)
    r = random_rotation(16, seed=4)
    assert torch.equal(probe.rotation, r)
    assert torch.allclose(seen["rotated_2"], torch.einsum("oc,nchw->nohw", r.float(), feats), atol=1e-5)
    half = rotation_power(r, 0.5).float()
    assert torch.allclose(seen["rotated_1"], torch.einsum("oc,nchw->nohw", half, feats), atol=1e-5)
    assert not model.conv2._forward_hooks  # the hook is gone after the pass
    assert probe.select(["rotated_2"])(images).keys() == {"rotated_2"}


def test_power_zero_reproduces_the_plain_dissection(small_broden):
    plain = dissect(TinyNet(), small_broden, ["conv2"], **QUIET)["conv2"]
    result = rotate(TinyNet(), small_broden, "conv2", powers=[0.0, 1.0], seed=0, **QUIET)
    same, rotated = result.dissection["rotated_0"], result.dissection["rotated_1"]
    assert torch.equal(same.thresholds, plain.thresholds)
    assert torch.equal(same.intersection, plain.intersection)
    for d in ("original", "lite"):
        assert torch.equal(same.activation[d], plain.activation[d])
    assert torch.equal(same.top_indices, plain.top_indices)
    assert result.counts[0] == plain.counts()
    assert not torch.equal(rotated.thresholds, plain.thresholds)
    assert torch.equal(rotated.truth, plain.truth)


def test_rotate_cli_end_to_end(small_broden, tmp_path):
    out = tmp_path / "rot"
    args = parse(["rotate", "--dataset", str(small_broden), "--model", "conftest:tiny_net",
                  "--layer", "conv2", "--powers", "0,0.5,1", "--seed", "1", "--out", str(out),
                  "--workers", "0", "--quiet", "--iou-threshold", "0.001"])
    assert args.func(args) == 0
    summary = json.loads((out / "rotate.json").read_text())
    assert [p["a"] for p in summary["powers"]] == [0.0, 0.5, 1.0]
    rows = list(csv.DictReader(open(out / "rotate.csv")))
    assert [float(r["a"]) for r in rows] == [0.0, 0.5, 1.0]
    for row, p in zip(rows, summary["powers"]):
        assert int(row["detectors"]) == p["detectors"]
        assert int(row["unique_detectors_total"]) == sum(p["unique_detectors"].values())
    for name in ("rotate.png", "rotate.svg", "rotation.pt", "dissection/dissection.json"):
        assert (out / name).is_file()
    assert torch.equal(torch.load(out / "rotation.pt"), random_rotation(16, seed=1))
    record = read_record(out)
    assert (record.kind, record.layer, record.figure) == ("rotate", "conv2", "rotate")
    totals = ", ".join(f"a={p['a']:g}: {p['unique_detectors_total']}" for p in summary["powers"])
    assert totals in record.summary and record.tables == ["rotate.json", "rotate.csv"]


# -- compare -----------------------------------------------------------------------------------
def test_unit_status():
    assert unit_status("tree", "tree") == "kept"
    assert unit_status("tree", "car") == "changed"
    assert unit_status("", "car") == "gained"
    assert unit_status("tree", "") == "lost"
    assert unit_status("", "") == "none"


def test_compare_cli_end_to_end(small_broden, tmp_path):
    folders = []
    for seed in (0, 1, 2):
        folder = tmp_path / f"step{seed}"
        dissect(TinyNet(seed), small_broden, ["conv1", "conv2"], out=folder, **QUIET)
        folders.append(folder)
    out = tmp_path / "cmp"
    threshold = 0.002  # random weights on random images: low IoUs, a threshold that gives some
    args = parse(["compare", *map(str, folders), "--layer", "conv2", "--steps", "0,100,200",
                  "--iou-threshold", str(threshold), "--out", str(out)])
    assert args.func(args) == 0
    runs = [dissect_labels(f / "conv2", threshold) for f in folders]
    counts = list(csv.DictReader(open(out / "counts.csv")))
    assert [float(c["step"]) for c in counts] == [0.0, 100.0, 200.0]
    summary = json.loads((out / "compare.json").read_text())
    units = list(csv.DictReader(open(out / "units.csv")))
    assert len(units) == 16
    for r, c, run in zip(runs, counts, summary["runs"]):
        assert int(c["detectors"]) == sum(1 for label in r if label) == run["detectors"]
    for k, row in enumerate(units):
        for name, r in zip(("step0", "step1", "step2"), runs):
            assert row[f"{name}:label"] == r[k]
        assert row["step0->step1"] == unit_status(runs[0][k], runs[1][k])
        assert row["step1->step2"] == unit_status(runs[1][k], runs[2][k])
    statuses = summary["unit_status"][0]
    assert sum(statuses[s] for s in ("kept", "changed", "gained", "lost", "none")) == 16
    assert statuses["gained"] == sum(1 for a, b in zip(runs[0], runs[1]) if b and not a)
    changes = summary["category_changes"]
    assert changes["from"] == "step0" and changes["to"] == "step2"
    assert sum(map(sum, changes["matrix"])) == 16
    none = changes["categories"].index("none")
    assert sum(changes["matrix"][none]) == sum(1 for label in runs[0] if not label)
    assert (out / "unique_detectors.png").is_file() and (out / "unique_detectors.svg").is_file()
    assert (out / "changes.csv").is_file()


def dissect_labels(folder: Path, threshold: float) -> list[str]:
    """Per unit of a saved layer: its label if its score reaches `threshold`, else ""."""
    records = json.loads((folder / "units.json").read_text())
    return [r["label"] if r["score"] >= threshold else "" for r in records]


def test_compare_rejects_mismatched_layers(small_broden, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    dissect(TinyNet(), small_broden, ["conv1"], out=a, **QUIET)
    dissect(TinyNet(), small_broden, ["conv2"], out=b, **QUIET)
    with pytest.raises(ValueError, match="no layer"):
        compare([a, b], "conv1")
    with pytest.raises(ValueError, match="at least two"):
        compare([a])


# -- ablation ----------------------------------------------------------------------------------
TINY_CLASSES = ["beach-s", "room-s", "other-a", "other-b"]  # TinyNet has 4 outputs


def test_batched_masks_match_one_hook_per_mask(small_broden):
    """Chunked, repeated-batch evaluation gives what a plain zeroing hook gives, mask by mask."""
    model = TinyNet()
    images = load_labelled_images(small_broden, TINY_CLASSES)
    assert images.source == "broden-scene" and len(images.paths) == 24  # 6 of 30 are textures
    masks = torch.ones(5, 16)
    masks[1, 3] = masks[2, [0, 5, 9]] = 0
    masks[3] = 0
    masks[4, 8:] = 0
    probe = Probe(model, ["conv2"], Preprocess(mean=(0.5,) * 3, std=(0.25,) * 3))
    small = Ablator(probe, images, memory_mb=0.01, batch_size=7, progress=False).evaluate(masks)
    large = Ablator(probe, images, batch_size=7, progress=False).evaluate(masks)
    assert torch.equal(small.predictions, large.predictions)
    assert torch.allclose(small.true_probability, large.true_probability, atol=1e-6)
    x = torch.stack([normalised_image(path, (32, 32), 0.5, 0.25) for path in images.paths])
    for m, mask in enumerate(masks):
        with Trace(model, "conv2", edit_output=lambda o, layer: o * mask.view(1, -1, 1, 1)), \
                torch.no_grad():
            probs = model(x).softmax(-1)
        assert torch.equal(large.predictions[m], probs.argmax(-1))
        expected = probs[torch.arange(len(x)), images.targets]
        assert torch.allclose(large.true_probability[m], expected, atol=1e-6)


def normalised_image(path: Path, size: tuple[int, int], mean, std) -> torch.Tensor:
    """An image file read, resized and normalised by hand (PIL and numpy, not netdissect)."""
    import numpy as np
    from PIL import Image

    with Image.open(path) as im:
        im = im.convert("RGB")
        if im.size != (size[1], size[0]):
            im = im.resize((size[1], size[0]), Image.BILINEAR)
        pixels = np.asarray(im, dtype=np.float32) / 255.0
    mean = np.broadcast_to(np.asarray(mean, dtype=np.float32), (3,))
    std = np.broadcast_to(np.asarray(std, dtype=np.float32), (3,))
    return torch.from_numpy(((pixels - mean) / std).transpose(2, 0, 1).copy())


def image_folder(root: Path, per_class: int = 6) -> Path:
    """A folder per class of small random images, for the ImageFolder layout."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for name in TINY_CLASSES[:3]:
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
            Image.fromarray(pixels).resize((32, 32)).save(root / name / f"{i}.png")
    return root


def test_ablate_api_numbers(tmp_path):
    data = image_folder(tmp_path / "folders")
    result = ablate(TinyNet(), data, "conv2", class_names=TINY_CLASSES, counts=[1, 4, 16, 40],
                    draws=3, input_size=32, progress=False)
    assert result.counts == [1, 4, 16]  # clipped to the layer's 16 units
    assert result.images_per_class == [6, 6, 6, 0]
    images = load_labelled_images(data, TINY_CLASSES)
    imagenet = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    x = torch.stack([normalised_image(path, (32, 32), *imagenet) for path in images.paths])
    with torch.no_grad():
        predicted = TinyNet()(x).argmax(-1)
    plain = [float((predicted[images.targets == c] == c).float().mean()) for c in range(3)]
    assert result.baseline[:3] == pytest.approx(plain, abs=1e-12)  # recall per class, by hand
    assert result.balanced_accuracy == pytest.approx(sum(plain) / 3)
    for name in TINY_CLASSES[:3]:
        ci = TINY_CLASSES.index(name)
        ranking = result.rankings[name]
        assert sorted(ranking) == list(range(16))
        keys = [(-float(result.accuracy_drop[u, ci]), -float(result.probability_drop[u, ci]), u)
                for u in ranking]
        assert keys == sorted(keys)
        curve = result.curves[name]
        assert curve[-1]["removed_top"] == curve[-1]["removed_random"]  # all 16 units removed
        assert curve[-1]["kept_top_only"] == curve[0]["baseline"]  # nothing removed
        # Removing the class's top unit changes its accuracy by its own single-unit drop.
        top = ranking[0]
        assert curve[0]["removed_top"] == pytest.approx(
            curve[0]["baseline"] - float(result.accuracy_drop[top, ci]))


def test_ablate_cli_end_to_end(small_broden, tmp_path):
    dissection = tmp_path / "dissection"
    dissect(TinyNet(), small_broden, ["conv2"], out=dissection, **QUIET)
    out = tmp_path / "ablate"
    args = parse(["ablate", "--data", str(small_broden), "--model", "conftest:tiny_net",
                  "--layer", "conv2", "--class-names", ",".join(TINY_CLASSES), "--workers", "0",
                  "--counts", "1,2,4", "--draws", "2", "--dissection", str(dissection),
                  "--out", str(out), "--quiet"])
    assert args.func(args) == 0
    summary = json.loads((out / "ablate.json").read_text())
    assert set(summary["classes"]) == set(TINY_CLASSES)
    assert summary["classes"]["other-a"]["accuracy"] is None  # no images of that class
    beach = summary["classes"]["beach-s"]
    assert [r["removed"] for r in beach["curve"]] == [1, 2, 4]
    records = json.loads((dissection / "conv2" / "units.json").read_text())
    for row in beach["top_units"]:
        assert row["label"] == records[row["unit"]]["label"]
        assert row["iou"] == pytest.approx(records[row["unit"]]["score"])
    curve = list(csv.DictReader(open(out / "ablate_curve.csv")))
    assert len(curve) == 2 * 3  # two classes with images, three counts
    units = list(csv.DictReader(open(out / "ablate_units.csv")))
    assert len(units) == 2 * 4 and units[0]["rank"] == "1"
    assert (out / "ablate.png").is_file() and (out / "ablate.svg").is_file()
    assert len(list(csv.DictReader(open(out / "unit_drops.csv")))) == 16
    record = read_record(out)
    assert record.kind == "ablate" and record.summary.startswith(
        f"Balanced accuracy {summary['balanced_accuracy']:.3f}.")


# -- the demo CNN on a small toy world ---------------------------------------------------------


@pytest.fixture(scope="module")
def toy_world(tmp_path_factory) -> Path:
    from netdissect.data.toyworld import generate_toyworld

    return generate_toyworld(tmp_path_factory.mktemp("toy") / "world", images=60, seed=101,
                             workers=1, progress=False)


def test_demo_full_rotation_removes_unique_detectors(toy_world, tmp_path):
    out = tmp_path / "rotate"
    args = parse(["rotate", "--dataset", str(toy_world), "--model", "demo_cnn", "--layer", "conv5",
                  "--powers", "0,0.5,1", "--batch-size", "20", "--workers", "0", "--quiet",
                  "--out", str(out)])
    assert args.func(args) == 0
    powers = json.loads((out / "rotate.json").read_text())["powers"]
    unique = [p["unique_detectors_total"] for p in powers]
    assert unique[0] > unique[2]  # a full rotation leaves fewer unique detectors than none
    assert unique[0] >= 10  # the trained conv5 has real detectors on the toy world
    from netdissect.results import Dissection

    plain = Dissection.load(out / "dissection")["rotated_0"]
    assert plain.counts()["unique_detectors_total"] == unique[0]


def test_demo_removing_top_units_hurts_more_than_random(toy_world, tmp_path):
    out = tmp_path / "ablate"
    args = parse(["ablate", "--data", str(toy_world), "--model", "demo_cnn", "--layer", "conv5",
                  "--counts", "1,2,4,8,16,20", "--draws", "5", "--batch-size", "20", "--quiet",
                  "--out", str(out)])
    assert args.func(args) == 0
    summary = json.loads((out / "ablate.json").read_text())
    assert summary["balanced_accuracy"] > 0.5  # the demo CNN classifies held-out toy scenes
    gaps = []
    for name, c in summary["classes"].items():
        if c.get("curve") and c["accuracy"] >= 0.5:
            for n in (16, 20):
                row = next(r for r in c["curve"] if r["removed"] == n)
                assert row["removed_top"] <= row["removed_random"], (name, n)
            gaps.append(row["removed_random"] - row["removed_top"])  # at 20 units
    assert len(gaps) >= 3 and sum(gaps) / len(gaps) > 0.2
