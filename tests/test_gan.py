"""GAN dissection (issue 14): gan-dissect, gan-ablate and gan-insert on a planted generator.

tests/planted_gan.py builds a generator whose unit 3 draws 4 red cells and unit 1 draws 2
more (both only in samples whose first latent value is above 0), while units 0, 2, 4 and 5
change nothing in the image; a colour-rule segmenter labels red pixels "red-thing".  So
every expected number follows from the latents: a positive sample has 6 red cells of 16
pixels each in a 32 x 32 image.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from netdissect.cli.main import main
from netdissect.engine.passes import Passes
from netdissect.engine.settings import Settings
from netdissect.errors import LayerError, ModelError, OutputError, SettingsError
from netdissect.experiments import gan
from netdissect.experiments.gan import (gan_ablate, gan_dissect, gan_insert, parse_units,
                                        parse_where, sample_name)
from netdissect.models.generators import build_generator, parse_output_range
from planted_gan import CELLS, PLANTED, PlantedGenerator

GEN, SEG = "planted_gan:PlantedGenerator", "planted_gan:RedSegmenter"
N, SEED = 40, 1
FAST = dict(samples=N, seed=SEED, batch_size=16, progress=False)
AREA = 32 * 32


def positives(seed: int = SEED, samples: int = N) -> int:
    """Samples whose latent draws red (z0 > 0)."""
    gen = build_generator(GEN)
    return int((gen.latents(seed, torch.arange(samples))[:, 0] > 0).sum())


def red_fraction(cells: int) -> float:
    """The red share of all generated pixels when `cells` red cells are drawn per positive."""
    return positives() * cells * 16 / (N * AREA)


@pytest.fixture(scope="module")
def dissected(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("gan") / "dissect"
    gan_dissect(GEN, SEG, out, layers=["features"], workers=0, **FAST)
    return out


# -- the generator ----------------------------------------------------------------------------
def test_latents_are_a_function_of_seed_and_sample():
    gen = build_generator(GEN)
    z = gen.latents(3, torch.arange(2000))
    assert z.shape == (2000, 8) and z.dtype == torch.float32
    assert torch.equal(gen.latents(3, torch.tensor([7, 1999])), z[[7, 1999]])
    assert not torch.equal(gen.latents(4, torch.arange(10)), z[:10])
    assert abs(float(z.mean())) < 0.03 and abs(float(z.std()) - 1) < 0.03


def test_build_generator_finds_the_latent_layout_and_maps_the_output_range(tmp_path):
    gen = build_generator(GEN)
    assert (gen.z_dim, gen.latent_shape, gen.image_size) == (8, (8,), (32, 32))
    assert build_generator("planted_gan:Planted4d").latent_shape == (8, 1, 1)
    z = torch.zeros(1, 8)
    z[0, 0] = 1.0
    image = gen.images(z)[0]
    assert image[:, 8, 8].tolist() == [255, 0, 0] and image[:, 0, 0].tolist() == [128, 128, 128]
    ranged = build_generator(GEN, output_range="0,1")
    assert ranged.images(z)[0][:, 8, 8].tolist() == [255, 0, 0]
    assert ranged.images(z)[0][:, 0, 0].tolist() == [0, 0, 0]  # 0 is black on 0,1
    assert parse_output_range("0,1") == (0.0, 1.0)
    # weights load through the one weights path and enter the fingerprint
    model = PlantedGenerator()
    model.features.a.mul_(2)
    torch.save(model.state_dict(), tmp_path / "g.pt")
    loaded = build_generator(GEN, weights=str(tmp_path / "g.pt"))
    assert torch.equal(loaded.model.features.a, model.features.a)
    assert loaded.fingerprint(0) != gen.fingerprint(0) and gen.fingerprint(0) != gen.fingerprint(1)


def test_generator_errors_name_the_option():
    with pytest.raises(SettingsError, match="--z-dim: generator 'planted_gan:NoZDim' has no z_dim"):
        build_generator("planted_gan:NoZDim")
    assert build_generator("planted_gan:NoZDim", z_dim=8).z_dim == 8
    with pytest.raises(SettingsError, match=r"--z-dim 5: .* does not run on latents of 5 values "
                                            r"\(its z_dim attribute says 8\)"):
        build_generator(GEN, z_dim=5)
    with pytest.raises(SettingsError, match="--output-range"):
        build_generator(GEN, output_range="1,-1")
    with pytest.raises(ModelError, match="unknown generator 'nope'"):
        build_generator("nope")
    with pytest.raises(ModelError, match=r"returned \(1, 6, 8, 8\) for one latent"):
        build_generator("planted_gan:Features", z_dim=8)
    with pytest.raises(LayerError, match="layer 'nope' not found"):
        build_generator(GEN).check_layers(["nope"])


def test_units_and_where_are_parsed_strictly():
    assert parse_units("top:20") == ("top", 20)
    assert parse_units("3,17,42") == ("given", [3, 17, 42])
    for bad in ("top:0", "top:x", "a,b", "3,3"):
        with pytest.raises(SettingsError, match="--units"):
            parse_units(bad)
    assert parse_where("1,2,3,4", (8, 8)) == (1, 2, 3, 4)
    for bad in ("1,2,3", "3,2,1,4", "0,0,9,1", "a,b,c,d"):
        with pytest.raises(SettingsError, match="--where"):
            parse_where(bad, (8, 8))


# -- gan-dissect ------------------------------------------------------------------------------
def test_gan_dissect_labels_the_planted_units_only(dissected):
    units = json.loads((dissected / "features" / "units.json").read_text())
    labels = {u["unit"]: (u["label"], u["detector"]) for u in units}
    assert labels == {0: ("", False), 1: ("red-thing", True), 2: ("", False),
                      3: ("red-thing", True), 4: ("", False), 5: ("", False)}
    assert all(u["score"] == 0.0 for u in units if u["unit"] not in PLANTED)
    summary = json.loads((dissected / "features" / "summary.json").read_text())
    assert summary["settings"]["definition"] == "pnas" and summary["settings"]["quantile"] == 0.01
    assert (dissected / "index.html").is_file()
    # the samples are the generator's images of the recorded latents, named by sample number
    record = json.loads((dissected / "samples" / "latents.json").read_text())
    assert (record["seed"], record["samples"], record["z_dim"]) == (SEED, N, 8)
    gen = build_generator(GEN)
    for i in (0, 17, N - 1):
        png = np.asarray(Image.open(dissected / "samples" / "images" / sample_name(i)))
        expected = gen.images(gen.latents(SEED, torch.tensor([i])))[0].permute(1, 2, 0).numpy()
        assert np.array_equal(png, expected)
    rows = list(csv.DictReader(open(dissected / "dataset" / "index.csv")))
    assert [r["image"] for r in rows] == [f"{i:08d}.jpg" for i in range(N)]
    assert (rows[0]["ih"], rows[0]["sh"]) == ("32", "16")


def test_gan_dissect_resumes_and_reuses_everything(dissected, monkeypatch):
    (dissected / "samples" / "images" / sample_name(5)).unlink()
    before = {p.name: p.stat().st_mtime_ns for p in (dissected / "samples" / "images").iterdir()}

    def refuse(self):
        raise AssertionError("the passes ran again")

    monkeypatch.setattr(Passes, "run", refuse)
    again = gan_dissect(GEN, SEG, dissected, layers=["features"], workers=0, **FAST)
    assert [u.label for u in again["features"].labelled_units()].count("red-thing") == 2
    after = {p.name: p.stat().st_mtime_ns for p in (dissected / "samples" / "images").iterdir()}
    assert set(after) == set(before) | {sample_name(5)}
    assert all(after[name] == t for name, t in before.items())  # nothing else regenerated
    # other samples in the same folder are refused
    with pytest.raises(OutputError, match=r"other settings \(seed differ\)"):
        gan_dissect(GEN, SEG, dissected, layers=["features"], workers=0,
                    **{**FAST, "seed": SEED + 1})
    with pytest.raises(SettingsError, match="uses the PNAS rule"):
        gan_dissect(GEN, SEG, dissected, layers=["features"], settings=Settings(), **FAST)
    with pytest.raises(OutputError, match="holds 40 samples, more than --samples 10"):
        gan_dissect(GEN, SEG, dissected, layers=["features"], workers=0, **{**FAST, "samples": 10})


# -- gan-ablate --------------------------------------------------------------------------------
def test_ablating_the_planted_units_removes_the_concept_and_random_units_do_not(dissected, tmp_path):
    result = gan_ablate(GEN, SEG, "features", "red-thing", tmp_path / "ablate", units="top:2",
                        counts=[1, 2], dissection=dissected, **FAST)
    assert set(result.units) == set(PLANTED)
    before = red_fraction(6)
    first, both = result.curve
    assert first == {"removed": 1, "fraction_before": before,
                     "fraction_after_top": red_fraction(6 - CELLS[result.units[0]]),
                     "fraction_after_random": first["fraction_after_random"],
                     "fraction_after_random_std": first["fraction_after_random_std"]}
    assert both == {"removed": 2, "fraction_before": before, "fraction_after_top": 0.0,
                    "fraction_after_random": before, "fraction_after_random_std": 0.0}
    saved = json.loads((tmp_path / "ablate" / "ablate.json").read_text())
    assert (saved["concept"], saved["layer"], saved["units"]) == ("red-thing", "features", result.units)
    assert saved["curve"] == result.curve
    rows = list(csv.DictReader(open(tmp_path / "ablate" / "ablate.csv")))
    assert [float(r["fraction_after_top"]) for r in rows] == [first["fraction_after_top"], 0.0]
    grid = Image.open(tmp_path / "ablate" / "ablate_grid.png")
    assert grid.size == (3 * 34 - 2, 4 * 34 - 2)
    for name in ("ablate.png", "ablate.svg", "experiment.json"):
        assert (tmp_path / "ablate" / name).is_file()


def test_ranking_by_single_unit_effect_and_by_a_dissection_made_on_the_fly(tmp_path, monkeypatch):
    monkeypatch.setattr(gan, "IMAGES_PER_RUN", 16)  # one edit per generator run: the same counts
    result = gan_ablate(GEN, SEG, "features", "red-thing", None, units="top:6", counts=[2],
                        rank="effect", grid=0, **FAST)
    assert result.units == [3, 1, 0, 2, 4, 5]  # unit 3 removes 4 cells, unit 1 2, others none
    assert result.scores == [red_fraction(4), red_fraction(2), 0.0, 0.0, 0.0, 0.0]
    assert result.curve[0]["fraction_after_top"] == 0.0
    assert result.curve[0]["fraction_after_random"] == red_fraction(6)
    made = gan_ablate(GEN, SEG, "features", "red-thing", tmp_path / "a", units="top:2",
                      counts=[2], draws=2, **{**FAST, "samples": 24})
    assert set(made.units) == set(PLANTED)
    assert (tmp_path / "a" / "dissection" / "features" / "units.json").is_file()
    given = gan_ablate(GEN, SEG, "features", "red-thing", None, units=[3], counts=[1], draws=0,
                       grid=0, **FAST)
    assert given.curve[0]["fraction_after_top"] == red_fraction(2)
    assert given.curve[0]["fraction_after_random"] is None


# -- gan-insert --------------------------------------------------------------------------------
def test_inserting_the_planted_units_paints_the_concept_inside_the_region_only(dissected, tmp_path):
    result = gan_insert(GEN, SEG, "features", "red-thing", "5,5,7,7", tmp_path / "insert",
                        units="top:2", dissection=dissected, **FAST)
    assert set(result.units) == set(PLANTED) and all(v > 0 for v in result.values)
    outside = positives() * 6 * 16 / (N * (AREA - 64))
    assert result.image_region == (20, 20, 28, 28)
    assert result.fractions == {"inside_before": 0.0, "inside_after": 1.0,
                                "outside_before": outside, "outside_after": outside}
    assert result.ace == 1.0
    saved = json.loads((tmp_path / "insert" / "insert.json").read_text())
    assert saved["ace"] == 1.0 and saved["units"] == result.units and saved["where"] == [5, 5, 7, 7]
    assert Image.open(tmp_path / "insert" / "insert_grid.png").size == (2 * 34 - 2, 4 * 34 - 2)
    # a value of 0 inserts nothing; units other than the planted ones draw nothing
    nothing = gan_insert(GEN, SEG, "features", "red-thing", (5, 5, 7, 7), units=[0, 2],
                         value=5.0, grid=0, **FAST)
    assert nothing.ace == 0.0 and nothing.fractions["inside_after"] == 0.0


# -- the command line ---------------------------------------------------------------------------
def test_cli_gan_dissect_ablate_insert_end_to_end(tmp_path, capsys):
    common = ["--generator", GEN, "--segmenter", SEG, "--samples", "24", "--seed", "2",
              "--batch-size", "16", "--quiet", "--device", "cpu"]
    out = tmp_path / "d"
    assert main(["gan-dissect", *common, "--layers", "features", "--workers", "0",
                 "--quantile", "0.02", "--out", str(out)]) == 0
    assert "features" in capsys.readouterr().out
    settings = json.loads((out / "features" / "summary.json").read_text())["settings"]
    assert (settings["definition"], settings["quantile"]) == ("pnas", 0.02)
    units = json.loads((out / "features" / "units.json").read_text())
    assert sorted(u["unit"] for u in units if u["label"] == "red-thing") == list(PLANTED)
    edit = [*common, "--layer", "features", "--concept", "red-thing", "--dissection", str(out)]
    assert main(["gan-ablate", *edit, "--units", "top:2", "--counts", "2",
                 "--out", str(tmp_path / "a")]) == 0
    curve = json.loads((tmp_path / "a" / "ablate.json").read_text())["curve"]
    assert curve[0]["fraction_after_top"] == 0.0 and curve[0]["fraction_before"] > 0
    assert main(["gan-insert", *edit, "--units", "3,1", "--where", "5,5,7,7",
                 "--out", str(tmp_path / "i")]) == 0
    assert json.loads((tmp_path / "i" / "insert.json").read_text())["ace"] == 1.0
    capsys.readouterr()

    def fails(argv: list[str], message: str) -> None:
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err

    fails(["gan-dissect", *common, "--layers", "nope", "--out", str(tmp_path / "x")],
          "netdissect gan-dissect: error: layer 'nope' not found")
    fails(["gan-dissect", *common, "--z-dim", "5", "--layers", "features", "--out",
           str(tmp_path / "x")], "error: --z-dim 5: generator")
    fails(["gan-ablate", *common, "--layer", "features", "--concept", "tree", "--out",
           str(tmp_path / "x")], "error: --concept 'tree': not a label of segmenter")
    fails(["gan-insert", *edit, "--where", "1,2,3", "--out", str(tmp_path / "x")],
          "error: --where '1,2,3': give x0,y0,x1,y1")
    fails(["gan-ablate", *edit, "--units", "top:x", "--out", str(tmp_path / "x")],
          "error: --units 'top:x'")
    fails(["gan-ablate", *edit, "--units", "9", "--out", str(tmp_path / "x")],
          "error: --units: unit 9 is not in layer 'features'")
    assert not (tmp_path / "x").exists()
