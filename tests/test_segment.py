"""`netdissect segment`: a segmenter over a folder of images writes a Broden-format dataset.

The main case is hand-computed: solid colour blocks segmented by `BlockSegmenter` (thresholds
on the RGB channels), with a plane mixing categories, a name in two categories, two part
levels, scene labels from folders and an unreadable file.
"""
from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from netdissect.cli.main import main
from netdissect.data import toyworld
from netdissect.data.broden import BrodenImages, load_broden
from netdissect.data.segment import (ColorNamer, SegmenterLabel, load_segmenter,
                                     segment_images)
from netdissect.data.segment.colors import COLOR_NAMES
from netdissect.data.segment.writer import RECORD, SUMMARY
from netdissect.errors import ModelError, OutputError, SettingsError, WeightsError
from netdissect.files import sha256_file

SPEC = "test_segment:BlockSegmenter"


class BlockSegmenter:
    """Thresholds on the channels at full resolution: plane 0 mixes categories (red object /
    grass material), plane 1 (grass object / handle part), plane 2 (knob part).  Fails at its
    `fail_at`-th call of the process (0: never), to interrupt a run."""

    fail_at = 0
    calls = 0

    def labels(self) -> list[SegmenterLabel]:
        return [SegmenterLabel("red", "object"), SegmenterLabel("grass", "object"),
                SegmenterLabel("grass", "material"), SegmenterLabel("handle", "part"),
                SegmenterLabel("knob", "part")]

    def segment(self, images: torch.Tensor) -> torch.Tensor:
        BlockSegmenter.calls += 1
        if BlockSegmenter.calls == BlockSegmenter.fail_at:
            raise RuntimeError("interrupted on purpose")
        r, g, b = (images[:, i] > 0.5 for i in range(3))
        zero = torch.zeros_like(r, dtype=torch.int64)
        p0 = torch.where(r, 1, torch.where(g, 3, zero))
        p1 = torch.where(g, 2, torch.where(b, 4, zero))
        p2 = torch.where(r & b, 5, zero)
        return torch.stack([p0, p1, p2], 1)


@pytest.fixture(autouse=True)
def reset_block_segmenter():
    BlockSegmenter.fail_at, BlockSegmenter.calls = 0, 0
    yield
    BlockSegmenter.fail_at, BlockSegmenter.calls = 0, 0


RED, GREEN, BLUE, MAGENTA, WHITE = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 0, 255), \
    (255, 255, 255)


def blocks(h: int, w: int, spec: list[tuple[slice, slice, tuple]]) -> np.ndarray:
    image = np.zeros((h, w, 3), dtype=np.uint8)
    for rows, cols, color in spec:
        image[rows, cols] = color
    return image


def make_images(root: Path) -> Path:
    """Six images (32x32 but one 64x32) in nested folders, an unreadable one, and files to
    ignore."""
    full = slice(None)
    pictures = {
        "a/img0.png": blocks(32, 32, [(full, slice(0, 16), RED), (full, slice(16, 32), GREEN)]),
        "a/img1.png": blocks(32, 32, [(full, full, BLUE)]),
        "b/img2.png": blocks(32, 32, [(slice(0, 16), full, MAGENTA)]),
        # 64 wide: the centre crop keeps columns 16..47, all green
        "b/wide.PNG": blocks(32, 64, [(full, slice(0, 16), RED), (full, slice(16, 48), GREEN),
                                      (full, slice(48, 64), RED)]),
        "img3.png": blocks(32, 32, []),
    }
    for rel, array in pictures.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(array).save(root / rel, format="PNG")
    (root / "c" / "d").mkdir(parents=True)
    Image.fromarray(blocks(32, 32, [(full, full, WHITE)])).save(root / "c/d/deep.jpg", quality=95)
    (root / "b" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (root / "notes.txt").write_text("not an image")
    Image.fromarray(blocks(8, 8, [])).save(root / ".hidden.png")
    return root


@pytest.fixture
def image_dir(tmp_path) -> Path:
    return make_images(tmp_path / "photos")


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def header(path: Path) -> list[str]:
    with open(path, newline="", encoding="utf-8") as f:
        return next(csv.reader(f))


def decode(path: Path) -> np.ndarray:
    """A label plane as NetDissect-Lite decodes it: R + 256*G."""
    rgb = np.asarray(Image.open(path).convert("RGB")).astype(np.int64)
    return rgb[..., 0] + 256 * rgb[..., 1]


def halves(top=0, bottom=0, left=0, right=0, size=16) -> np.ndarray:
    plane = np.zeros((size, size), dtype=np.int64)
    h = size // 2
    plane[:h] += top
    plane[h:] += bottom
    plane[:, :h] += left
    plane[:, h:] += right
    return plane


def run(image_dir: Path, out: Path, **options) -> dict:
    options = {"size": 32, "label_size": 16, "batch_size": 2, "progress": False, **options}
    return segment_images(image_dir, SPEC, out, **options)


def dataset_files(out: Path) -> dict[str, bytes]:
    """Every file of a segmented dataset but the run's own records (timings, progress)."""
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file() and p.name not in (SUMMARY, RECORD)}


def test_segment_writes_the_broden_format_with_hand_computed_numbers(image_dir, tmp_path):
    out = tmp_path / "ds"
    summary = run(image_dir, out, scenes_from="folders")
    assert (summary["images"], summary["segmented"], summary["skipped"]) == (7, 6, 1)
    assert summary["skipped_files"][0]["file"] == "b/broken.jpg"
    assert "cannot read the image" in summary["skipped_files"][0]["reason"]

    # index.csv: NetDissect-Lite's columns, sorted inputs, planes split per category
    assert header(out / "index.csv") == ["image", "split", "ih", "iw", "sh", "sw", "object",
                                         "part", "material", "scene"]
    rows = read_rows(out / "index.csv")
    assert [(r["image"], r["split"], r["ih"], r["iw"], r["sh"], r["sw"]) for r in rows] == [
        (name, "train", "32", "32", "16", "16") for name in
        ("a/img0.jpg", "a/img1.jpg", "b/img2.jpg", "b/wide.jpg", "c/d/deep.jpg", "img3.jpg")]
    cells = {r["image"]: (r["object"], r["part"], r["material"], r["scene"]) for r in rows}
    assert cells == {
        "a/img0.jpg": ("a/img0_object_1.png;a/img0_object_2.png", "", "a/img0_material.png", "5"),
        "a/img1.jpg": ("", "a/img1_part_1.png", "", "5"),
        "b/img2.jpg": ("b/img2_object.png", "b/img2_part_1.png;b/img2_part_2.png", "", "6"),
        "b/wide.jpg": ("b/wide_object.png", "", "b/wide_material.png", "6"),
        "c/d/deep.jpg": ("c/d/deep_object_1.png;c/d/deep_object_2.png", "c/d/deep_part_1.png",
                         "", "7"),
        "img3.jpg": ("", "", "", ""),
    }
    # label planes: number = R + 256*G, at the label size, split by category
    images = out / "images"
    expected = {
        "a/img0_object_1.png": halves(left=1), "a/img0_object_2.png": halves(right=2),
        "a/img0_material.png": halves(right=2), "a/img1_part_1.png": halves(top=3, bottom=3),
        "b/img2_object.png": halves(top=1), "b/img2_part_1.png": halves(top=3),
        "b/img2_part_2.png": halves(top=4), "b/wide_object.png": halves(top=2, bottom=2),
        "b/wide_material.png": halves(top=2, bottom=2),
        "c/d/deep_object_1.png": halves(top=1, bottom=1),
        "c/d/deep_object_2.png": halves(top=2, bottom=2),
        "c/d/deep_part_1.png": halves(top=4, bottom=4),
    }
    for name, plane in expected.items():
        assert np.array_equal(decode(images / name), plane), name
    assert sorted(p.relative_to(images).as_posix() for p in images.rglob("*.png")) == \
        sorted(expected)
    # the images: resized/cropped to 32x32 (the wide one is all green after the crop)
    wide = np.asarray(Image.open(images / "b/wide.jpg").convert("RGB")).astype(int)
    assert wide.shape == (32, 32, 3) and np.abs(wide - GREEN).max() <= 8
    assert (images / "c/d/deep.jpg").read_bytes() == (image_dir / "c/d/deep.jpg").read_bytes()

    # label.csv: one number per name (grass is an object and a material), frequency in
    # images, coverage in whole label maps (pixels / 256)
    assert header(out / "label.csv") == ["number", "name", "category", "frequency", "coverage",
                                         "syns"]
    assert [list(r.values()) for r in read_rows(out / "label.csv")] == [
        ["1", "red", "object(3)", "3", "2.000000", ""],
        ["2", "grass", "object(3);material(2)", "5", "4.000000", ""],
        ["3", "handle", "part(2)", "2", "1.500000", ""],
        ["4", "knob", "part(2)", "2", "1.500000", ""],
        ["5", "a-s", "scene(2)", "2", "2.000000", ""],
        ["6", "b-s", "scene(2)", "2", "2.000000", ""],
        ["7", "c/d-s", "scene(1)", "1", "1.000000", ""],
    ]
    assert [list(r.values()) for r in read_rows(out / "category.csv")] == [
        ["object", "1", "2", "2", "6"], ["part", "3", "4", "2", "4"],
        ["material", "2", "2", "1", "2"], ["scene", "5", "7", "3", "5"]]
    per_category = {c: [list(r.values()) for r in read_rows(out / f"c_{c}.csv")]
                    for c in ("object", "part", "material", "scene")}
    assert header(out / "c_object.csv") == ["code", "number", "name", "frequency", "coverage"]
    assert per_category == {
        "object": [["1", "2", "grass", "3", "2.500000"], ["2", "1", "red", "3", "2.000000"]],
        "part": [["1", "3", "handle", "2", "1.500000"], ["2", "4", "knob", "2", "1.500000"]],
        "material": [["1", "2", "grass", "2", "1.500000"]],
        "scene": [["1", "5", "a-s", "2", "2.000000"], ["2", "6", "b-s", "2", "2.000000"],
                  ["3", "7", "c/d-s", "1", "1.000000"]],
    }
    record = json.loads((out / SUMMARY).read_text())
    assert record["segmenter"] == SPEC and record["segmented"] == 6 and record["skipped"] == 1
    assert [lab["name"] for lab in record["labels"]] == ["red", "grass", "handle", "knob", "a-s",
                                                         "b-s", "c/d-s"]

    # and it reads back with our Broden reader: grass's primary category is object (larger
    # coverage), the planes decode to the numbers above
    broden = load_broden(out)
    assert broden.categories == ["object", "part", "material", "scene"]
    assert broden.label_names[1:] == ["red", "grass", "handle", "knob", "a-s", "b-s", "c/d-s"]
    assert broden.label_category.tolist()[1:] == [0, 0, 1, 1, 3, 3, 3]
    assert broden.label_size == (16, 16) and len(broden.rows) == 6
    sample = BrodenImages(broden)[2]  # b/img2: red top (object), handle and knob top (parts)
    assert not sample["bad"] and sample["image"].shape == (3, 32, 32)
    assert sample["image_labels"].tolist() == [6]
    assert [np.unique(p).tolist() for p in sample["planes"].numpy()] == [[0, 1], [0, 3], [0, 4]]


def test_label_numbers_above_255_use_the_green_channel(tmp_path):
    class Many:
        name = "many"

        def labels(self):
            return [SegmenterLabel(f"thing{i}", "object") for i in range(1, 301)]

        def segment(self, images):
            planes = torch.full((len(images), 1, 4, 4), 300, dtype=torch.int64)
            planes[:, :, :2] = 7
            return planes

    folder = tmp_path / "in"
    folder.mkdir()
    Image.fromarray(blocks(8, 8, [])).save(folder / "x.png")
    segment_images(folder, Many(), tmp_path / "ds", size=8, label_size=4, progress=False)
    rgb = np.asarray(Image.open(tmp_path / "ds/images/x_object.png"))
    assert rgb[3, 0].tolist() == [300 % 256, 1, 0] and rgb[0, 0].tolist() == [7, 0, 0]
    assert decode(tmp_path / "ds/images/x_object.png")[:, 0].tolist() == [7, 7, 300, 300]
    label = read_rows(tmp_path / "ds/label.csv")
    assert len(label) == 300 and label[299]["name"] == "thing300"
    assert label[299]["frequency"] == "1" and label[299]["coverage"] == "0.500000"
    assert label[0]["frequency"] == "0"  # every label is listed, even one never seen


def test_color_namer_equals_the_toy_worlds_color_planes(tmp_path):
    folder = tmp_path / "world"
    folder.mkdir()
    truth = {}
    numbers = {n: name for name, n in toyworld.LABELS.items()}
    for index in range(3):
        image = toyworld.render_image(5, index)
        # in memory: exactly the toy world's ground truth
        pixels = torch.from_numpy(image.rgb).permute(2, 0, 1)[None].float() / 255.0
        codes = ColorNamer(112).segment(pixels)[0, 0].numpy()
        names = np.array(("",) + COLOR_NAMES)[codes]
        truth[index] = np.vectorize(numbers.get)(image.planes["color"][0])
        assert np.array_equal(names, truth[index])
        Image.fromarray(image.rgb).save(folder / f"png{index}.png")
        Image.fromarray(image.rgb).save(folder / f"jpg{index}.jpg", quality=90)
    # through the writer with --colors on another segmenter: lossless inputs give exactly the
    # ground truth; the toy world's own JPEGs (quality 90, 4:2:0) move colours near the rule's
    # thresholds (over 40 images: 97.6% agreement on average, 91% at worst; 99.0% on these)
    out = tmp_path / "ds"
    segment_images(folder, SPEC, out, colors=True, batch_size=3, progress=False)
    names = {int(r["number"]): r["name"] for r in read_rows(out / "label.csv")}
    assert [names[n] for n in range(1, 12)] == list(COLOR_NAMES)
    agree = []
    for index in range(3):
        plane = np.vectorize(names.get)(decode(out / "images" / f"png{index}_color.png"))
        assert np.array_equal(plane, truth[index])
        plane = np.vectorize(names.get)(decode(out / "images" / f"jpg{index}_color.png"))
        agree.append((plane == truth[index]).mean())
        assert (out / "images" / f"jpg{index}.jpg").read_bytes() == \
            (folder / f"jpg{index}.jpg").read_bytes()  # a 224x224 JPEG is kept as it is
    assert np.mean(agree) >= 0.985 and min(agree) >= 0.98, agree


def test_an_interrupted_run_resumes_to_the_same_dataset(image_dir, tmp_path):
    whole = tmp_path / "whole"
    run(image_dir, whole, scenes_from="folders")
    out = tmp_path / "resumed"
    BlockSegmenter.fail_at, BlockSegmenter.calls = 2, 0  # the second batch fails
    with pytest.raises(RuntimeError, match="interrupted on purpose"):
        run(image_dir, out, scenes_from="folders")
    record = json.loads((out / RECORD).read_text())
    assert sorted(record["done"]) == ["a/img0.png", "a/img1.png"]
    assert not (out / "index.csv").exists()
    BlockSegmenter.fail_at = 0
    summary = run(image_dir, out, scenes_from="folders")
    assert (summary["reused"], summary["new"], summary["segmented"]) == (2, 4, 6)
    assert dataset_files(out) == dataset_files(whole)
    # a finished output: run again, nothing is segmented again
    calls = BlockSegmenter.calls
    assert run(image_dir, out, scenes_from="folders")["new"] == 0
    assert BlockSegmenter.calls == calls and dataset_files(out) == dataset_files(whole)
    # other settings are refused, saying what differs and what to do
    with pytest.raises(OutputError, match=r"size.*choose another --out, or remove it"):
        run(image_dir, out, scenes_from="folders", size=30, label_size=15)
    with pytest.raises(OutputError, match="scenes_from"):
        run(image_dir, out)


def test_bad_inputs_give_clear_errors(image_dir, tmp_path):
    class Wrong:
        name = "wrong"

        def __init__(self, mode, category="object"):
            self.mode, self.category = mode, category

        def labels(self):
            return [SegmenterLabel("thing", self.category), SegmenterLabel("other", "part")]

        def segment(self, images):
            b, _, h, w = images.shape
            if self.mode == "3d":
                return torch.zeros(b, h, w, dtype=torch.int64)
            if self.mode == "float":
                return torch.zeros(b, 1, h, w)
            if self.mode == "batch":
                return torch.zeros(b + 1, 1, h, w, dtype=torch.int64)
            return torch.full((b, 1, h, w), 3, dtype=torch.int64)

    def fails(error, match, segmenter=SPEC, images=image_dir, out=None, **options):
        options = {"size": 32, "label_size": 16, "progress": False, **options}
        with pytest.raises(error, match=match):
            segment_images(images, segmenter, out or tmp_path / "out", **options)

    fails(SettingsError, "not a folder", images=tmp_path / "missing")
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("no pictures")
    fails(SettingsError, f"no jpg/png images under {empty}", images=empty)
    fails(ModelError, r"'wrong'.*shape \(2, 32, 32\).*expected a \(2, P, h, w\)",
          segmenter=Wrong("3d"), batch_size=2)
    fails(ModelError, r"'wrong'.*torch.float32 tensor; expected", segmenter=Wrong("float"))
    fails(ModelError, r"'wrong'.*shape \(3, 1, 32, 32\) for 2 image", segmenter=Wrong("batch"),
          batch_size=2)
    fails(ModelError, r"'wrong'.*label number 3.*lists 2, so numbers must be 0 \(no label\) to 2",
          segmenter=Wrong("range"))
    fails(ModelError, r"'wrong'.*unknown category 'scene'",
          segmenter=Wrong("range", category="scene"))
    fails(ModelError, "unknown segmenter 'nonsense'", segmenter="nonsense")
    fails(ModelError, "cannot import 'no_such_module_xyz'", segmenter="no_such_module_xyz:f")
    fails(SettingsError, "--weights applies to a segmenter spec", segmenter=BlockSegmenter(),
          weights="w.pth")
    fails(SettingsError, "--label-size 40 is larger than --size 32", label_size=40)
    fails(SettingsError, "--batch-size must be", batch_size=0)
    fails(SettingsError, "--scenes-from 'files'", scenes_from="files")
    fails(SettingsError, "overlap", out=image_dir / "ds")
    other = tmp_path / "other"
    other.mkdir()
    (other / "mine.txt").write_text("keep")
    fails(OutputError, "holds something other than a `netdissect segment` output", out=other)
    assert (other / "mine.txt").read_text() == "keep"
    # two inputs that would be written under one name
    clash = tmp_path / "clash"
    clash.mkdir()
    for suffix in ("jpg", "png"):
        Image.fromarray(blocks(8, 8, [])).save(clash / f"x.{suffix}")
    fails(SettingsError, r"x.jpg and x.png would both be written as images/x.jpg", images=clash)
    # nothing readable: an error (the dataset would be empty), the files named
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "a.png").write_bytes(b"garbage")
    fails(SettingsError, r"none of the 1 image\(s\) could be read \(e.g. a.png: cannot read",
          images=junk, out=tmp_path / "junk_out")
    # a link that leaves the folder is skipped and counted, not read
    (image_dir / "a" / "outside.png").symlink_to(clash / "x.png")
    summary = run(image_dir, tmp_path / "linked")
    assert {"file": "a/outside.png", "reason": f"a link that leaves {image_dir}; not read"} in \
        summary["skipped_files"] and summary["segmented"] == 6


def test_tv_segmenter_from_a_weights_file_and_the_hub_cache(tmp_path, monkeypatch):
    from torchvision import models as tvm

    def build(name, **options):
        return tvm.get_model(name, weights=None, weights_backbone=None, num_classes=21, **options)

    torch.manual_seed(0)
    model = build("lraspp_mobilenet_v3_large").eval()
    with torch.no_grad():  # labels follow the early features, never background
        model.classifier.low_classifier.weight.normal_(0, 10)
        model.classifier.low_classifier.bias[0] = -1e4
    weights = tmp_path / "lraspp.pth"
    torch.save(model.state_dict(), weights)
    segmenter = load_segmenter("tv:lraspp_mobilenet_v3_large", weights=weights)
    assert [lab.name for lab in segmenter.labels()][:3] == ["aeroplane", "bicycle", "bird"]
    assert {lab.category for lab in segmenter.labels()} == {"object"}
    assert len(segmenter.labels()) == 20
    images = torch.rand(2, 3, 48, 48)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = model((images - mean) / std)["out"].argmax(1, keepdim=True)
    planes = segmenter.segment(images)
    assert torch.equal(planes, expected) and planes.min() >= 1 and len(planes.unique()) > 1

    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(2):
        Image.fromarray((images[i].permute(1, 2, 0).numpy() * 255).astype(np.uint8)).save(
            folder / f"{i}.png")
    summary = segment_images(folder, "tv:lraspp_mobilenet_v3_large", tmp_path / "ds",
                             weights=weights, size=48, label_size=24, progress=False)
    assert summary["segmented"] == 2 and summary["weights_sha256"] == segmenter.weights_sha256
    assert load_broden(tmp_path / "ds").categories == ["object"]

    # torchvision's published DeepLabV3 and FCN files hold an auxiliary head: it is built
    torch.save(build("deeplabv3_mobilenet_v3_large", aux_loss=True).state_dict(),
               tmp_path / "deeplab.pth")
    deeplab = load_segmenter("tv:deeplabv3_mobilenet_v3_large", weights=tmp_path / "deeplab.pth")
    assert deeplab.model.aux_classifier is not None

    # without --weights: torchvision's file in torch's hub cache, never downloaded
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(WeightsError, match=r"lraspp_mobilenet_v3_large-d234d4ea.pth is not in "
                                           r"torch's hub cache.*--weights FILE"):
        load_segmenter("tv:lraspp_mobilenet_v3_large")
    cached = tmp_path / "torch" / "hub" / "checkpoints" / "lraspp_mobilenet_v3_large-d234d4ea.pth"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(weights.read_bytes())
    with pytest.raises(WeightsError, match="does not start with d234d4ea"):  # found, checked
        load_segmenter("tv:lraspp_mobilenet_v3_large")
    with pytest.raises(ModelError, match="unknown torchvision segmentation model 'resnet18'"):
        load_segmenter("tv:resnet18")


def test_hf_segmenter_offline_from_a_saved_folder(tmp_path, monkeypatch):
    transformers = pytest.importorskip("transformers")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    config = transformers.SegformerConfig(
        num_labels=4, id2label={0: "background", 1: "tree;plant", 2: "grass ", 3: "sky"},
        label2id={"background": 0, "tree;plant": 1, "grass ": 2, "sky": 3},
        id2category={2: "material"}, depths=[1, 1, 1, 1], hidden_sizes=[8, 8, 8, 8],
        num_attention_heads=[1, 1, 1, 1], mlp_ratios=[1, 1, 1, 1], decoder_hidden_size=8)
    torch.manual_seed(0)
    model = transformers.SegformerForSemanticSegmentation(config).eval()
    folder = tmp_path / "tiny-segformer"
    model.save_pretrained(folder)
    processor = transformers.SegformerImageProcessor(size={"height": 32, "width": 32})
    processor.save_pretrained(folder)

    segmenter = load_segmenter(f"hf:{folder}")
    assert [(lab.name, lab.category) for lab in segmenter.labels()] == [
        ("tree", "object"), ("grass", "material"), ("sky", "object")]
    images = torch.rand(2, 3, 24, 24)
    with torch.no_grad():
        logits = model(**processor(images=images, do_rescale=False, return_tensors="pt")).logits
    expected = torch.nn.functional.interpolate(logits, size=(24, 24), mode="bilinear",
                                               align_corners=False).argmax(1, keepdim=True)
    assert torch.equal(segmenter.segment(images), expected)  # background (0) stays 0

    photos = tmp_path / "in"
    photos.mkdir()
    Image.fromarray(blocks(24, 24, [(slice(0, 12), slice(None), GREEN)])).save(photos / "g.png")
    summary = segment_images(photos, f"hf:{folder}", tmp_path / "ds", size=24, label_size=12,
                             progress=False)
    assert summary["segmented"] == 1
    assert [r["name"] for r in read_rows(tmp_path / "ds/label.csv")] == ["tree", "sky", "grass"]
    with pytest.raises(ModelError, match="cannot load a semantic segmentation model.*hf download"):
        load_segmenter("hf:nobody/no-such-model-here")
    with pytest.raises(SettingsError, match="--weights"):
        load_segmenter(f"hf:{folder}", weights="w.pth")
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(ModelError, match=r"pip install netdissect\[hf\]"):
        load_segmenter(f"hf:{folder}")


def _toyworld_segmenter_module():
    try:
        from netdissect.data.segment import toyworld as module
    except ImportError:  # written in parallel (issue 13); this test runs once it is there
        pytest.skip("netdissect.data.segment.toyworld is not there yet")
    return module


def test_toyworld_spec_with_a_weights_file(tmp_path):
    module = _toyworld_segmenter_module()
    torch.manual_seed(0)
    weights = tmp_path / "seg.pt"
    torch.save(module.ToyWorldSegNet().state_dict(), weights)
    labels = [[lab.name, lab.category] for lab in module.segmenter_labels()]
    weights.with_suffix(".json").write_text(json.dumps({"labels": labels,
                                                        "widths": list(module.WIDTHS)}))
    segmenter = load_segmenter("toyworld", weights=weights, colors=True)
    assert [[lab.name, lab.category] for lab in segmenter.labels()] == \
        labels + [[c, "color"] for c in COLOR_NAMES]
    assert segmenter.segment(torch.rand(2, 3, 32, 32)).shape == (2, 5, 16, 16)
    folder = tmp_path / "in"
    folder.mkdir()
    Image.fromarray(toyworld.render_image(0, 1).rgb).save(folder / "0.jpg", quality=90)
    summary = segment_images(folder, "toyworld", tmp_path / "ds", weights=weights,
                             progress=False)
    assert summary["segmenter"] == "toyworld" and summary["segmented"] == 1
    assert load_broden(tmp_path / "ds").label_size == (112, 112)


def test_toyworld_spec_with_the_shipped_weights():
    module = _toyworld_segmenter_module()
    if not Path(module.WEIGHTS).is_file():
        pytest.skip("the toyworld segmenter's weights are not in the package yet")
    segmenter = load_segmenter("toyworld")
    assert segmenter.name == "toyworld" and segmenter.weights_sha256 == sha256_file(module.WEIGHTS)
    assert segmenter.labels() == module.segmenter_labels()
    assert segmenter.segment(torch.rand(1, 3, 32, 32)).shape == (1, 4, 16, 16)


def test_cli_segment_then_dissect(image_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    out = tmp_path / "ds"
    argv = ["segment", "--images", str(image_dir), "--segmenter", SPEC, "--out", str(out),
            "--batch-size", "4", "--colors",
            "--scenes-from", "folders", "--device", "cpu", "--quiet"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "segmented 6 image(s) (6 now, 0 before), skipped 1" in printed
    assert "skipped b/broken.jpg: cannot read the image" in printed
    assert "18 labels (color 11, object 2, part 2, material 1, scene 3)" in printed
    assert header(out / "index.csv")[6:] == ["color", "object", "part", "material", "scene"]
    assert main(["dissect", "--dataset", str(out), "--model", "demo_cnn", "--layers", "conv5",
                 "--quiet", "--out", str(tmp_path / "result")]) == 0
    units = json.loads((tmp_path / "result" / "conv5" / "units.json").read_text())
    assert len(units) == 256
    # bad input from the command line: one line, exit status 2
    assert main(argv[:2] + [str(tmp_path / "nowhere")] + argv[3:]) == 2
    assert "netdissect segment: error: --images" in capsys.readouterr().err
