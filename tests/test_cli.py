"""`netdissect dissect` end to end, as a user runs it: their own module:callable model."""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from PIL import Image

import netdissect
from netdissect.cli import main

MODEL_SOURCE = textwrap.dedent("""
    import torch
    from torch import nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.features = nn.Sequential(nn.Conv2d(3, 6, 3, stride=2, padding=1), nn.ReLU(),
                                          nn.Conv2d(6, 12, 3, stride=2, padding=1), nn.ReLU())
            self.fc = nn.Linear(12, 3)

        def forward(self, x):
            return self.fc(self.features(x).mean(dim=(2, 3)))

    def build():
        return Net()
""")


@pytest.fixture
def user_dir(tmp_path, monkeypatch):
    (tmp_path / "mymodel.py").write_text(MODEL_SOURCE)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def test_cli_dissect_writes_results(broden_dir, user_dir, capsys):
    out = user_dir / "out"
    code = main(["dissect", "--dataset", str(broden_dir), "--model", "mymodel:build",
                 "--layers", "features.1,features.3", "--quantile", "0.02", "--workers", "0",
                 "--batch-size", "8", "--out", str(out), "--quiet"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "features.3" in printed and str(out.resolve()) in printed
    for layer, units in (("features.1", 6), ("features.3", 12)):
        folder = out / layer
        with open(folder / "tally.csv") as f:
            rows = list(csv.DictReader(f))
        assert sorted(int(r["unit"]) for r in rows) == list(range(1, units + 1))
        scores = [float(r["score"]) for r in rows]
        assert scores == sorted(scores, reverse=True)
        records = json.loads((folder / "units.json").read_text())
        assert [r["unit"] for r in records] == list(range(units))
        summary = json.loads((folder / "summary.json").read_text())
        assert summary["settings"]["quantile"] == 0.02
        assert summary["dataset"]["images_processed"] == 60
        assert len(summary["dataset"]["fingerprint"]) == 64
        assert len(summary["model"]["weights_fingerprint"]) == 64
        assert summary["timings"]["activations_seconds"] > 0
        assert set(summary["unique_detectors"]) == {"object", "part", "scene", "material",
                                                    "texture", "color"}
    # The saved folder reloads, and the CLI result equals the API's.
    loaded = netdissect.Dissection.load(out)
    import mymodel
    api = netdissect.dissect(mymodel.build(), broden_dir, ["features.3"], quantile=0.02,
                             workers=0, progress=False)
    assert torch.equal(loaded["features.3"].intersection, api["features.3"].intersection)
    assert torch.equal(loaded["features.3"].thresholds, api["features.3"].thresholds)
    frame = loaded.frame("features.3")
    assert len(frame) == 12 and {"label", "category", "score", "object_iou"} <= set(frame.columns)


def test_cli_options_lite_categories_and_threshold(broden_dir, user_dir):
    out = user_dir / "out"
    assert main(["dissect", "--dataset", str(broden_dir), "--model", "mymodel:build",
                 "--layers", "features.3", "--categories", "object,part", "--definition", "lite",
                 "--iou-threshold", "0.01", "--mean", "0.5,0.5,0.5", "--std", "0.25",
                 "--workers", "0", "--out", str(out), "--quiet"]) == 0
    summary = json.loads((out / "features.3" / "summary.json").read_text())
    assert set(summary["unique_detectors"]) == {"object", "part"}
    assert summary["definition"] == "lite" and summary["iou_threshold"] == 0.01
    assert summary["settings"]["std"] == [0.25, 0.25, 0.25]
    header = (out / "features.3" / "tally.csv").read_text().splitlines()[0]
    assert header.startswith("unit,category,label,score,object-label")
    assert "color-label" not in header


def test_python_m_netdissect_entry_point(broden_dir, user_dir):
    env = {**os.environ, "PYTHONPATH": str(user_dir) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    done = subprocess.run([sys.executable, "-m", "netdissect", "dissect", "--dataset", str(broden_dir),
                           "--model", "mymodel:build", "--layers", "features.3", "--workers", "0",
                           "--out", str(user_dir / "out2"), "--quiet"],
                          capture_output=True, text=True, env=env, cwd=user_dir)
    assert done.returncode == 0, done.stderr
    assert (user_dir / "out2" / "features.3" / "tally.csv").is_file()


def test_cli_errors_are_one_line(broden_dir, user_dir, capsys):
    code = main(["dissect", "--dataset", str(broden_dir), "--model", "mymodel:build",
                 "--layers", "feature.3", "--out", str(user_dir / "o"), "--quiet"])
    assert code == 2
    err = capsys.readouterr().err
    assert "feature.3" in err and "features.3" in err and "Traceback" not in err
    code = main(["dissect", "--dataset", str(broden_dir), "--model", "mymodel:build",
                 "--layers", "fc", "--workers", "0", "--out", str(user_dir / "o"), "--quiet"])
    assert code == 2
    assert "N x C x H x W" in capsys.readouterr().err
    assert not (user_dir / "o").exists()


def test_toyworld_and_train_demo_commands(tmp_path, capsys):
    world = tmp_path / "world"
    assert main(["toyworld", "--out", str(world), "--images", "40", "--seed", "3", "--quiet"]) == 0
    assert (world / "index.csv").is_file() and str(world) in capsys.readouterr().out
    weights = tmp_path / "demo.pt"
    assert main(["train-demo", "--dataset", str(world), "--images", "40", "--world-seed", "3",
                 "--epochs", "1", "--out", str(weights), "--quiet"]) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert 0.0 <= printed["train_accuracy"] <= 1.0
    from netdissect.models.zoo import build_model

    info = build_model("demo_cnn", weights=str(weights))
    assert info.weights == str(weights) and info.default_layers[-1] == "conv5"


def lite_and_original_ious(stats: dict) -> dict[str, np.ndarray]:
    """IoU[k, c] = I / (A[k, cat(c)] + G[c] - I) from stats.pt's int64 tallies, per definition,
    in plain numpy (0 where the union is 0 or the label is not scored)."""
    inter = stats["intersection"].numpy().astype(np.float64)
    truth = stats["truth"].numpy().astype(np.float64)
    cat = stats["labels"]["category"].numpy()
    ious = {}
    for definition in ("lite", "original"):
        act = stats[f"activation_{definition}"].numpy().astype(np.float64)[:, np.maximum(cat, 0)]
        union = act + truth[None] - inter
        iou = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
        ious[definition] = np.where(cat[None] >= 0, iou, 0.0)
    return ious


def test_cli_definition_lite_changes_the_ious(broden_dir, user_dir):
    """--definition lite by its effect: every category's best IoU in units.json is lite's
    I / (A_lite + G - I) recomputed from stats.pt, and differs from original's for some unit."""
    out = user_dir / "out"
    assert main(["dissect", "--dataset", str(broden_dir), "--model", "mymodel:build",
                 "--layers", "features.1", "--definition", "lite", "--quantile", "0.02",
                 "--workers", "0", "--out", str(out), "--quiet", "--no-report"]) == 0
    stats = torch.load(out / "features.1" / "stats.pt", weights_only=True)
    ious = lite_and_original_ious(stats)
    cat = stats["labels"]["category"].numpy()
    categories = list(stats["labels"]["categories"])
    records = json.loads((out / "features.1" / "units.json").read_text())
    changed = 0
    for record in records:
        k = record["unit"]
        best = {c: ious["lite"][k][cat == ci].max(initial=0.0) for ci, c in enumerate(categories)}
        assert {c: v["iou"] for c, v in record["categories"].items()} == \
            pytest.approx(best, rel=1e-12, abs=1e-15)
        assert record["score"] == pytest.approx(max(best.values()), rel=1e-12, abs=1e-15)
        original = max(ious["original"][k][cat >= 0])
        changed += abs(original - record["score"]) > 1e-9
    assert changed > 0


def read_rgb(path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


IDENTITY_SOURCE = textwrap.dedent("""
    from torch import nn

    def build():
        return nn.Sequential(nn.Identity())  # layer "0" is the normalised input itself
""")


def test_cli_mean_and_std_normalise_the_pixels(broden_dir, user_dir):
    """--mean and --std by their effect: on a model whose layer is its input, each channel's
    threshold is numpy's quantile of the pixels normalised by hand, (x / 255 - mean) / std."""
    (user_dir / "ident.py").write_text(IDENTITY_SOURCE)
    mean, std, q = (0.3, 0.5, 0.7), (0.2, 0.25, 0.5), 0.05
    out = user_dir / "out"
    assert main(["dissect", "--dataset", str(broden_dir), "--model", "ident:build", "--layers", "0",
                 "--mean", ",".join(map(str, mean)), "--std", ",".join(map(str, std)),
                 "--quantile", str(q), "--workers", "0", "--out", str(out), "--quiet", "--no-report"]) == 0
    with open(broden_dir / "index.csv") as f:
        names = [row["image"] for row in csv.DictReader(f)]
    pixels = np.stack([read_rgb(broden_dir / "images" / n) for n in names])
    thresholds = [r["threshold"] for r in json.loads((out / "0" / "units.json").read_text())]
    assert len(thresholds) == 3
    default = []
    for c in range(3):
        x = pixels[..., c].astype(np.float32) / np.float32(255)
        normalised = (x - np.float32(mean[c])) / np.float32(std[c])
        assert thresholds[c] == pytest.approx(float(np.quantile(normalised, 1 - q)), rel=1e-6, abs=1e-7)
        imagenet = (x - np.float32((0.485, 0.456, 0.406)[c])) / np.float32((0.229, 0.224, 0.225)[c])
        default.append(float(np.quantile(imagenet, 1 - q)))
    assert all(abs(t - d) > 0.1 for t, d in zip(thresholds, default))  # not the default normalisation


def test_cli_definition_pnas_and_its_relabel_refusal(broden_dir, user_dir, capsys):
    out = user_dir / "out"
    assert main(["dissect", "--dataset", str(broden_dir), "--model", "mymodel:build",
                 "--layers", "features.3", "--definition", "pnas", "--workers", "0",
                 "--out", str(out), "--quiet"]) == 0
    summary = json.loads((out / "features.3" / "summary.json").read_text())
    assert summary["definition"] == "pnas"
    assert summary["settings"]["quantile"] == 0.01 and summary["settings"]["thresholds"] == "upsampled"
    rows = (out / "features.3" / "tally.csv").read_text().splitlines()
    assert len(rows) == 13  # 12 units
    pages = "".join(p.read_text() for p in out.rglob("*.html"))
    assert "IoU &gt; 0.04" in pages and "IoU &gt;= 0.04" not in pages
    capsys.readouterr()
    assert main(["relabel", str(out), "--definition", "original"]) == 2
    assert "run `netdissect dissect` again with --definition original" in capsys.readouterr().err
    assert main(["relabel", str(out), "--iou-threshold", "0.02"]) == 0
    assert json.loads((out / "features.3" / "summary.json").read_text())["definition"] == "pnas"
