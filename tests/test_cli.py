"""`netdissect dissect` end to end, as a user runs it: their own module:callable model."""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

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
