"""Compositional explanations (`netdissect explain`): exact counts, the beam search against an
exhaustive search, a unit built to fire on a known formula, the API and the command line."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import netdissect
from netdissect.api import as_probe
from netdissect.cli.main import main
from netdissect.engine.checkpoint import RecomputeWarning
from netdissect.report import write_report
from netdissect.compositional.atoms import ConceptAtoms
from netdissect.compositional.formula import OPS, Formula
from netdissect.compositional.search import beam_search

from conftest import TinyNet

NAMES = [""] + [f"l{i}" for i in range(1, 10)]


def random_batch(seed: int, images: int = 12, units: int = 4, h: int = 4, sh: int = 8, labels: int = 8):
    """Activations, label planes (two, de-duplicated as BrodenImages gives them), an
    image-level label on every third image, and thresholds: the top 20% of each unit."""
    g = torch.Generator().manual_seed(seed)
    acts = torch.randn(images, units, h, h, generator=g)
    planes = torch.randint(0, labels + 1, (images, 2, sh, sh), generator=g)
    planes[:, 1] = torch.where(torch.rand(images, sh, sh, generator=g) < 0.6, 0, planes[:, 1])
    planes = planes.sort(dim=1).values
    planes[:, 1][planes[:, 1] == planes[:, 0]] = 0
    image_labels = torch.zeros(images, 1, dtype=torch.int64)
    image_labels[::3, 0] = labels + 1
    thresholds = torch.quantile(acts.transpose(0, 1).reshape(units, -1), 0.8, dim=1)
    return acts, planes, image_labels, thresholds


def unit_masks(acts, thresholds, size) -> np.ndarray:
    """(units, images, sh, sw) bool, by the rule of docs/method.md: bilinear, then > T_k."""
    up = F.interpolate(acts.float(), size=size, mode="bilinear", align_corners=False)
    return (up > thresholds[None, :, None, None]).numpy().transpose(1, 0, 2, 3)


def concept_masks(planes, image_labels, labels) -> dict[int, np.ndarray]:
    return {n: ((planes == n).any(1) | (image_labels == n).any(1)[:, None, None]).numpy()
            for n in labels}


def plain_iou(mask: np.ndarray, formula: Formula, concepts: dict) -> float:
    """IoU of a unit mask and a formula, from the pixel masks with numpy."""
    fm = formula.evaluate(lambda n: torch.from_numpy(concepts[n])).numpy()
    inter = int((mask & fm).sum())
    union = int(mask.sum()) + int(fm.sum()) - inter
    return inter / union if union else 0.0


def exhaustive(mask, concepts, labels, length, penalty=1.0):
    """The best formula of every left-deep chain from a primitive with IoU > 0."""
    primitives = [Formula(n) for n in labels if plain_iou(mask, Formula(n), concepts) > 0]
    every, frontier = list(primitives), list(primitives)
    for _ in range(length - 1):
        frontier = list(dict.fromkeys(f.extend(op, n) for f in frontier for op in OPS for n in labels))
        every += frontier
    if not every:
        return None, 0.0
    scored = {f: plain_iou(mask, f, concepts) for f in dict.fromkeys(every)}
    best = min(scored, key=lambda f: (-scored[f] * penalty ** (f.length - 1), f.length, f.text(NAMES)))
    return best, scored[best]


def table_of(acts, planes, image_labels, thresholds, parts=(5,)):
    stat = ConceptAtoms(acts.shape[1], thresholds)
    bounds = [0, *parts, len(acts)]
    for a, b in zip(bounds[:-1], bounds[1:]):
        stat.update(acts[a:b], planes[a:b], image_labels[a:b])
    return stat.table()


# -- formulas ---------------------------------------------------------------------------------
def test_formula_text_tree_and_length():
    names = ["", "water", "river", "blue"]
    f = Formula(1).extend("or", 2).extend("and not", 3)
    assert f.text(names) == "((water OR river) AND NOT blue)"
    assert f.tree(names) == ["and", ["or", "water", "river"], ["not", "blue"]]
    assert f.length == 4  # three leaves, and NOT counts one
    assert Formula(1).extend("and not", 2).length == 3
    assert Formula(1).extend("and", 2).length == 2
    assert Formula(1).length == 1 and Formula(1).leaves == 1


# -- the counts -------------------------------------------------------------------------------
def test_atoms_count_every_pixel_and_every_mask_pixel():
    acts, planes, image_labels, thresholds = random_batch(0)
    t = table_of(acts, planes, image_labels, thresholds)
    assert int(t.pixels.sum()) == planes.shape[0] * 64
    masks = unit_masks(acts, thresholds, (8, 8))
    per_unit = torch.zeros(acts.shape[1], dtype=torch.int64).index_add_(0, t.unit, t.count)
    assert per_unit.tolist() == [int(m.sum()) for m in masks]
    # each atom's pixels are the pixels whose label set is exactly its row
    concepts = concept_masks(planes, image_labels, range(1, 10))
    for row, n in zip(t.atoms.tolist(), t.pixels.tolist()):
        present = {x for x in row if x}
        exact = np.ones_like(concepts[1])
        for label, mask in concepts.items():
            exact &= mask if label in present else ~mask
        assert int(exact.sum()) == n


def test_atoms_merge_and_state_dict_equal_one_pass():
    acts, planes, image_labels, thresholds = random_batch(1)
    whole = table_of(acts, planes, image_labels, thresholds, parts=())
    a, b = ConceptAtoms(4, thresholds), ConceptAtoms(4, thresholds)
    a.update(acts[:7], planes[:7], image_labels[:7])
    b.update(acts[7:], planes[7:], image_labels[7:])
    restored = ConceptAtoms(4, torch.zeros(4))
    restored.load_state_dict(a.state_dict())
    restored.merge(b)
    merged = restored.table()
    for name in ("atoms", "pixels", "unit", "atom", "count"):
        assert torch.equal(getattr(merged, name), getattr(whole, name)), name
    assert restored.images == 12


# -- the search -------------------------------------------------------------------------------
@pytest.mark.parametrize("seed,penalty", [(0, 1.0), (1, 1.0), (2, 0.9)])
def test_wide_beam_equals_exhaustive_search(seed, penalty):
    acts, planes, image_labels, thresholds = random_batch(seed)
    labels = list(range(1, 10))
    found = beam_search(table_of(acts, planes, image_labels, thresholds), 4, torch.tensor(labels),
                        NAMES, length=3, beam=10 ** 6, penalty=penalty)
    masks, concepts = unit_masks(acts, thresholds, (8, 8)), concept_masks(planes, image_labels, labels)
    for u, e in enumerate(found):
        best, iou = exhaustive(masks[u], concepts, labels, 3, penalty)
        assert e.formula == best, (u, e.formula.text(NAMES), best.text(NAMES))
        assert e.iou == pytest.approx(iou, abs=1e-15)


def test_reported_ious_equal_a_plain_reference():
    acts, planes, image_labels, thresholds = random_batch(3, units=6)
    labels = list(range(1, 10))
    found = beam_search(table_of(acts, planes, image_labels, thresholds), 6, torch.tensor(labels),
                        NAMES, length=4, beam=5)
    masks, concepts = unit_masks(acts, thresholds, (8, 8)), concept_masks(planes, image_labels, labels)
    for u, e in enumerate(found):
        assert e.formula.leaves <= 4
        assert e.iou == pytest.approx(plain_iou(masks[u], e.formula, concepts), abs=1e-15)
        # the best single label, by brute force (ties: the smaller name)
        single = min(labels, key=lambda n: (-plain_iou(masks[u], Formula(n), concepts), NAMES[n]))
        assert e.single == single
        assert e.single_iou == pytest.approx(plain_iou(masks[u], Formula(single), concepts), abs=1e-15)
        assert e.iou_by_length[0] == e.single_iou and e.iou_by_length[-1] == e.iou
        assert all(a <= b for a, b in zip(e.iou_by_length, e.iou_by_length[1:]))


def test_a_unit_built_on_red_and_not_car_gets_that_formula():
    """Unit 0 fires exactly on `red AND NOT car` (the maps at the label resolution, so the
    upsampling is the identity); unit 1 on `car OR tree`."""
    names = ["", "red", "green", "car", "tree"]
    g = torch.Generator().manual_seed(5)
    images, s = 10, 8
    colour = torch.randint(1, 3, (images, s, s), generator=g)  # red or green everywhere
    objects = torch.randint(0, 3, (images, s, s), generator=g)  # none, car or tree
    objects = torch.where(objects == 0, 0, objects + 2)
    planes = torch.stack([colour, objects], 1)
    red, car, tree = colour == 1, objects == 3, objects == 4
    acts = torch.stack([(red & ~car).float(), (car | tree).float()], 1)
    table = table_of(acts, planes, torch.zeros(images, 0, dtype=torch.int64), torch.tensor([0.5, 0.5]))
    found = beam_search(table, 2, torch.tensor([1, 2, 3, 4]), names, length=3, beam=5)
    assert found[0].formula.text(names) == "(red AND NOT car)" and found[0].iou == 1.0
    assert found[0].formula.length == 3
    assert found[1].formula.text(names) == "(car OR tree)" and found[1].iou == 1.0
    assert found[1].single in (3, 4) and found[1].single_iou < 1.0


def test_a_unit_that_never_fires_has_no_formula():
    acts, planes, image_labels, _ = random_batch(4, units=2)
    found = beam_search(table_of(acts, planes, image_labels, torch.tensor([1e9, 1e9])), 2,
                        torch.arange(1, 10), NAMES, length=3, beam=5)
    assert all(e.formula is None and e.iou == 0.0 and e.iou_by_length == [0.0, 0.0, 0.0] for e in found)


# -- the API and the command line -------------------------------------------------------------
def test_explain_reuses_the_dissection_and_its_thresholds(broden_dir, tmp_path, monkeypatch):
    out = tmp_path / "out"
    dissection = netdissect.dissect(TinyNet(), broden_dir, ["conv2"], out=out, report=False,
                                    progress=False, workers=0)
    from netdissect.engine import passes

    def refuse(*args, **kwargs):
        raise AssertionError("the dissection ran again")

    monkeypatch.setattr(passes.Passes, "run", refuse)
    found = netdissect.explain(TinyNet(), broden_dir, ["conv2"], out=out, report=False,
                               progress=False, workers=0)["conv2"]
    # the unit masks are the dissection's: recompute them from the model and the thresholds
    broden = netdissect.load_broden(broden_dir)
    from netdissect.data.broden import BrodenImages, collate_samples

    batch = collate_samples([BrodenImages(broden, input_size=(32, 32))[i] for i in range(len(broden.rows))])
    probe = as_probe(TinyNet(), ["conv2"])
    probe.preprocess = probe.preprocess.replace(size=(32, 32))
    with torch.inference_mode():
        acts = probe(batch["image"])["conv2"]
    masks = unit_masks(acts, dissection["conv2"].thresholds, (16, 16))
    labels = [n for n in range(1, len(broden.label_names)) if broden.label_category[n] >= 0]
    concepts = concept_masks(batch["planes"], batch["image_labels"], labels)
    assert len(found.units) == 16
    for u, e in enumerate(found.units):
        assert int(masks[u].sum()) > 0
        assert e.formula is not None
        assert e.iou == pytest.approx(plain_iou(masks[u], e.formula, concepts), abs=1e-15)
    saved = json.loads((out / "conv2" / "explanations.json").read_text())
    assert saved["units"][0]["unit"] == 1 and saved["settings"]["length"] == 3
    assert saved["mean_iou_by_length"] == pytest.approx(
        [np.mean([e.iou_by_length[n] for e in found.units]) for n in range(3)])


def test_explain_command_end_to_end(broden_dir, tmp_path, capsys):
    out = tmp_path / "cli"
    code = main(["explain", "--dataset", str(broden_dir), "--model", "conftest:tiny_net",
                 "--layers", "conv1", "--length", "2", "--beam", "3", "--workers", "0",
                 "--out", str(out), "--quiet"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "conv1: mean IoU by formula length 1:" in printed and "report:" in printed
    with open(out / "conv1" / "explanations.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["unit", "formula", "iou", "length", "single_label", "single_iou"]
    assert [int(r["unit"]) for r in rows] == list(range(1, 9))
    records = json.loads((out / "conv1" / "explanations.json").read_text())["units"]
    for row, record in zip(rows, records):
        assert row["formula"] == record["formula"] and float(row["iou"]) == record["iou"]
        assert len(record["iou_by_length"]) == 2 and record["length"] <= 3
        assert record["iou"] >= record["single_iou"]
    assert (out / "conv1" / "tally.csv").is_file() and (out / "index.html").is_file()


@pytest.mark.parametrize("option,value,message", [("--length", "0", "--length"),
                                                  ("--beam", "0", "--beam"),
                                                  ("--penalty", "1.5", "--penalty")])
def test_explain_refuses_bad_options(broden_dir, tmp_path, capsys, option, value, message):
    code = main(["explain", "--dataset", str(broden_dir), "--model", "conftest:tiny_net",
                 "--layers", "conv1", option, value, "--out", str(tmp_path / "o"), "--quiet"])
    assert code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_report_shows_formulas_only_for_the_dissection_they_were_made_for(broden_dir, tmp_path):
    out = tmp_path / "out"
    found = netdissect.explain(TinyNet(), broden_dir, ["conv1"], out=out, progress=False, workers=0)
    page = (out / "conv1" / "index.html").read_text()
    first = found["conv1"].records()[0]
    assert "explanations.json" in page and "formula <b" in page
    assert 'id="unit-0"' in page and first["formula"].split(" ")[0].strip("(") in page
    # dissected again with another quantile: the formulas no longer belong to these results
    with pytest.warns(RecomputeWarning, match="quantile changed"):
        netdissect.dissect(TinyNet(), broden_dir, ["conv1"], out=out, progress=False, workers=0,
                           quantile=0.05, report=False)
    with pytest.warns(UserWarning, match="another dissection"):
        write_report(out, progress=False)
    assert "formula <b" not in (out / "conv1" / "index.html").read_text()


@pytest.mark.timeout(240)
def test_two_process_torchrun_explain_equals_one_process(broden_dir, tmp_path):
    """Under torchrun each process builds the atoms of its share of the images; merged, the
    formulas are those of one process, byte for byte."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    tests = str(Path(__file__).parent)
    env = {**os.environ, "PYTHONPATH": tests + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "OMP_NUM_THREADS": "1"}
    args = ["-m", "netdissect", "explain", "--dataset", str(broden_dir), "--model", "conftest:tiny_net",
            "--layers", "conv1,conv2", "--batch-size", "7", "--workers", "0", "--no-report", "--quiet"]
    one = subprocess.run([sys.executable, *args, "--out", str(tmp_path / "one")], env=env,
                         capture_output=True, text=True, timeout=200)
    assert one.returncode == 0, one.stderr[-3000:]
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                          "--nproc_per_node=2", *args, "--out", str(tmp_path / "two")], env=env,
                         capture_output=True, text=True, timeout=200)
    assert two.returncode == 0, two.stderr[-3000:]
    for layer in ("conv1", "conv2"):
        assert (tmp_path / "one" / layer / "explanations.csv").read_bytes() == \
            (tmp_path / "two" / layer / "explanations.csv").read_bytes()
        a = json.loads((tmp_path / "one" / layer / "explanations.json").read_text())
        b = json.loads((tmp_path / "two" / layer / "explanations.json").read_text())
        assert a["units"] == b["units"] and a["meta"]["atoms"] == b["meta"]["atoms"]


@pytest.mark.parametrize("top", [9, 1 << 20])  # packed into one int64 key / column by column
def test_unique_rows_equals_torch_unique(top):
    from netdissect.stats.labelsets import unique_rows as _unique_rows

    g = torch.Generator().manual_seed(0)
    rows = torch.randint(0, 4, (500, 5), generator=g) * (top // 3)
    mine, expected = _unique_rows(rows), torch.unique(rows, dim=0, return_inverse=True)
    assert torch.equal(mine[0], expected[0]) and torch.equal(mine[1], expected[1])
