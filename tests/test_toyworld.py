"""Tests of the toy world generator: Broden format, consistency of statistics, determinism."""
from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from netdissect.data import toyworld
from netdissect.data.toyworld import (CATEGORY_LABELS, LABELS, ensure_toyworld,
                                      generate_toyworld, read_manifest)

STANDARD_ORDER = ["color", "object", "part", "material", "scene", "texture"]


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def read_plane(path: Path) -> np.ndarray:
    rgb = np.asarray(Image.open(path).convert("RGB"))
    return rgb[..., 0].astype(np.int64) + 256 * rgb[..., 1].astype(np.int64)


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    return generate_toyworld(tmp_path_factory.mktemp("tw") / "world", images=90, seed=3,
                             workers=2, progress=False)


def recount(world: Path) -> tuple[dict, dict]:
    """Frequency and pixel counts per (category, label) recomputed from index.csv and PNGs."""
    freq: dict = defaultdict(int)
    pixels: dict = defaultdict(int)
    for row in read_rows(world / "index.csv"):
        area = int(row["sh"]) * int(row["sw"])
        for cat in STANDARD_ORDER:
            counts: dict = defaultdict(int)
            for item in filter(None, row[cat].split(";")):
                if item.isdigit():
                    counts[int(item)] += area
                else:
                    values, n = np.unique(read_plane(world / "images" / item), return_counts=True)
                    for v, c in zip(values.tolist(), n.tolist()):
                        if v:
                            counts[v] += c
            for label, c in counts.items():
                freq[cat, label] += 1
                pixels[cat, label] += c
    return freq, pixels


def test_index_format(world):
    header = next(csv.reader(open(world / "index.csv")))
    assert header[:6] == ["image", "split", "ih", "iw", "sh", "sw"]
    assert sorted(header[6:]) == sorted(STANDARD_ORDER)
    assert header[6:] != STANDARD_ORDER                     # readers must not hard-code it
    rows = read_rows(world / "index.csv")
    assert len(rows) == 90
    assert {r["split"] for r in rows} == {"train", "val"}
    for r in rows[:12]:
        im = Image.open(world / "images" / r["image"])
        assert im.size == (224, 224) and im.mode == "RGB" and im.format == "JPEG"
        assert (r["ih"], r["iw"], r["sh"], r["sw"]) == ("224", "224", "112", "112")
        for cat in ("color", "object", "part", "material"):
            for item in filter(None, r[cat].split(";")):
                plane = Image.open(world / "images" / item)
                assert plane.size == (112, 112) and plane.format == "PNG"
    scenes = [r for r in rows if r["scene"]]
    textures = [r for r in rows if r["texture"]]
    assert len(scenes) + len(textures) == len(rows) and textures and scenes
    assert all(r["scene"].isdigit() and r["object"] and r["color"] for r in scenes)
    assert all(not r["object"] and r["color"] and not r["scene"] for r in textures)
    # Multi-labels and multi-plane cells occur, so readers are exercised.
    assert any(";" in r["texture"] for r in textures)
    assert any(len(r["part"].split(";")) == 2 for r in scenes)


def test_vocabulary_and_categories(world):
    labels = read_rows(world / "label.csv")
    numbers = [int(r["number"]) for r in labels]
    assert numbers == list(range(1, len(labels) + 1))
    categories = read_rows(world / "category.csv")
    assert sorted(c["name"] for c in categories) == sorted(STANDARD_ORDER)
    minimum = {"color": 11, "object": 8, "part": 6, "material": 4, "scene": 6, "texture": 6}
    for cat in categories:
        rows = read_rows(world / f"c_{cat['name']}.csv")
        nums = [int(r["number"]) for r in rows]
        assert len(rows) >= minimum[cat["name"]]
        assert [int(r["code"]) for r in rows] == list(range(1, len(rows) + 1))
        first_last_count = (int(cat["first"]), int(cat["last"]), int(cat["count"]))
        assert first_last_count == (min(nums), max(nums), len(nums))
        assert int(cat["frequency"]) == sum(int(r["frequency"]) for r in rows)
        # Every category has labels that really occur in a 90-image world.
        assert sum(int(r["frequency"]) > 0 for r in rows) >= min(minimum[cat["name"]], 4)
    names = {int(r["number"]): r["name"] for r in labels}
    assert sorted(n for n in names.values() if n.endswith("-c")) == sorted(toyworld.COLORS)
    assert len(toyworld.COLORS) == 11
    scenes = read_rows(world / "c_scene.csv")
    assert all(r["name"].endswith("-s") for r in scenes)
    # grass and water are both objects and materials, as fabric is in Broden.
    grass = next(r for r in labels if r["name"] == "grass")
    assert {c.split("(")[0] for c in grass["category"].split(";")} == {"object", "material"}


def test_statistics_match_the_pngs(world):
    freq, pixels = recount(world)
    area = 112 * 112
    label_rows = {int(r["number"]): r for r in read_rows(world / "label.csv")}
    total_freq: dict = defaultdict(int)
    total_cov: dict = defaultdict(float)
    for cat in STANDARD_ORDER:
        listed = set()
        for r in read_rows(world / f"c_{cat}.csv"):
            n = int(r["number"])
            listed.add(n)
            assert int(r["frequency"]) == freq[cat, n], (cat, r["name"])
            assert float(r["coverage"]) == pytest.approx(pixels[cat, n] / area, abs=1e-6)
            total_freq[n] += int(r["frequency"])
            total_cov[n] += pixels[cat, n] / area
            assert f"{cat}({r['frequency']})" in label_rows[n]["category"]
        # No pixel or image label of this category is missing from c_<cat>.csv.
        assert {n for (c, n) in freq if c == cat} <= listed
    for n, r in label_rows.items():
        assert int(r["frequency"]) == total_freq[n]
        assert float(r["coverage"]) == pytest.approx(total_cov[n], abs=1e-5)
    # The dense codes are ordered by decreasing frequency, as in Broden.
    objects = [int(r["frequency"]) for r in read_rows(world / "c_object.csv")]
    assert objects == sorted(objects, reverse=True)


def test_every_plane_label_is_known_and_in_its_category(world):
    known = {int(r["number"]) for r in read_rows(world / "label.csv")}
    in_category = {c: {LABELS[n] for n in names} for c, names in CATEGORY_LABELS.items()}
    for row in read_rows(world / "index.csv")[:40]:
        for cat in STANDARD_ORDER:
            for item in filter(None, row[cat].split(";")):
                values = {int(item)} if item.isdigit() else set(
                    np.unique(read_plane(world / "images" / item)).tolist()) - {0}
                assert values <= known and values <= in_category[cat], (row["image"], cat)


def test_deterministic_for_any_worker_count(tmp_path):
    a = generate_toyworld(tmp_path / "a", images=24, seed=5, workers=1, progress=False)
    b = generate_toyworld(tmp_path / "b", images=24, seed=5, workers=2, progress=False)
    c = generate_toyworld(tmp_path / "c", images=24, seed=6, workers=1, progress=False)
    for name in ("index.csv", "label.csv", "category.csv", "c_part.csv"):
        assert (a / name).read_bytes() == (b / name).read_bytes()
    rows = read_rows(a / "index.csv")
    files = [rows[i]["image"] for i in (0, 5, 11)]
    files += [item for r in rows[:6] for item in r["part"].split(";") + [r["color"]] if item]
    for f in files:
        assert (a / "images" / f).read_bytes() == (b / "images" / f).read_bytes()
    assert (a / "index.csv").read_bytes() != (c / "index.csv").read_bytes()


def test_ensure_toyworld_caches(tmp_path, monkeypatch):
    out = tmp_path / "cached"
    first = ensure_toyworld(out, images=12, seed=1, workers=1, progress=False)
    assert first == out.absolute()
    assert read_manifest(out)["images"] == 12 and read_manifest(out)["seed"] == 1
    stamp = (out / "index.csv").stat().st_mtime_ns

    def fail(*args, **kwargs):
        raise AssertionError("ensure_toyworld regenerated a complete toy world")

    monkeypatch.setattr(toyworld, "generate_toyworld", fail)
    assert ensure_toyworld(out, images=12, seed=1, progress=False) == first
    assert (out / "index.csv").stat().st_mtime_ns == stamp
    monkeypatch.undo()
    # Other parameters regenerate in place; no temporary folders are left behind.
    ensure_toyworld(out, images=10, seed=1, workers=1, progress=False)
    assert len(read_rows(out / "index.csv")) == 10
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cached"]


def test_refuses_to_overwrite_other_folders(tmp_path):
    other = tmp_path / "precious"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError):
        generate_toyworld(other, images=2, progress=False)
    assert (other / "notes.txt").read_text() == "keep me"


def test_color_names():
    rgb = np.array([[[0, 0, 0], [255, 255, 255], [128, 128, 128], [220, 20, 20],
                     [30, 60, 200], [40, 160, 40], [250, 230, 40], [250, 140, 10],
                     [130, 75, 35], [245, 170, 195], [120, 40, 150]]], dtype=np.uint8)
    names = {v: k for k, v in LABELS.items()}
    got = [names[n] for n in toyworld.color_labels(rgb)[0]]
    assert got == ["black-c", "white-c", "grey-c", "red-c", "blue-c", "green-c", "yellow-c",
                   "orange-c", "brown-c", "pink-c", "purple-c"]
