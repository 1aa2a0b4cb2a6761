"""Significance of labels (docs/method.md section 15): the permutation null, p- and q-values,
the Poisson bootstrap, checked against brute force, on data without signal, on planted
detectors, and through the command line."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import netdissect
from conftest import LABELS, TinyNet, make_broden, save_plane, write_csv, write_metadata
from netdissect.cli.main import main
from netdissect.significance import benjamini_hochberg, permutation_p_values
from netdissect.stats.resampling import image_permutations, poisson_weights
from netdissect.stats.tally import IoUTally

QUIET = dict(progress=False, report=False)


# -- the draws ------------------------------------------------------------------------------
def test_draws_depend_on_the_rows_and_seed_only():
    rows = torch.tensor([5, 9, 2, 40, 7])
    perms = image_permutations(rows, 50, seed=3)
    assert perms.shape == (50, 5)
    assert all(sorted(p.tolist()) == list(range(5)) for p in perms)
    assert torch.equal(perms, image_permutations(rows, 50, seed=3))
    assert not torch.equal(perms, image_permutations(rows, 50, seed=4))
    assert len({tuple(p.tolist()) for p in perms}) > 30  # 120 possible orders, most drawn differently
    weights = poisson_weights(torch.arange(4000), 30, seed=1)
    # a row's weights are the same whatever batch it comes in
    assert torch.equal(poisson_weights(torch.tensor([17, 3]), 30, seed=1), weights[:, [17, 3]])
    w = weights.double()
    assert abs(w.mean() - 1) < 0.01 and abs(w.var() - 1) < 0.02  # Poisson(1)
    assert abs((weights == 0).double().mean() - np.exp(-1)) < 0.01


def test_benjamini_hochberg_by_hand():
    p = torch.tensor([0.01, 0.04, 0.03, 0.005, 0.5], dtype=torch.float64)
    # sorted 0.005 0.01 0.03 0.04 0.5 -> m p / rank = 0.025 0.025 0.05 0.05 0.5 (running min from the top)
    assert torch.allclose(benjamini_hochberg(p), torch.tensor([0.025, 0.05, 0.05, 0.025, 0.5], dtype=torch.float64))
    p = torch.tensor([0.02, 0.9, 0.021], dtype=torch.float64)
    # 0.02*3/1 = 0.06, 0.021*3/2 = 0.0315 -> min(0.06, 0.0315) = 0.0315; 0.9
    assert torch.allclose(benjamini_hochberg(p), torch.tensor([0.0315, 0.9, 0.0315], dtype=torch.float64))
    assert float(benjamini_hochberg(torch.tensor([0.9, 0.95], dtype=torch.float64)).max()) <= 1.0


def test_permutation_p_value_counts_ties_and_the_observed_draw():
    observed = torch.tensor([0.3, 0.1, 0.0], dtype=torch.float64)
    null = torch.tensor([[0.1, 0.1, 0.0], [0.2, 0.05, 0.0], [0.3, 0.2, 0.0]], dtype=torch.float64)
    assert torch.allclose(permutation_p_values(observed, null),
                          torch.tensor([2 / 4, 3 / 4, 1.0], dtype=torch.float64))


# -- the tallies against brute force --------------------------------------------------------
def _batch(seed: int, B: int = 6, K: int = 5, L: int = 9, C: int = 3):
    g = torch.Generator().manual_seed(seed)
    acts = torch.randn(B, K, 4, 4, generator=g)
    planes = torch.randint(0, L, (B, 2, 8, 8), generator=g)
    planes[:, 1][planes[:, 1] == planes[:, 0]] = 0  # a label at most once per pixel
    image_labels = torch.randint(0, L, (B, 1), generator=g)
    image_labels[(planes == image_labels[:, :, None, None]).flatten(1).any(1)] = 0
    category = torch.tensor([-1] + [i % C for i in range(L - 1)])
    return acts, planes, image_labels, category, torch.full((K,), 0.5)


def _tally(category, C, **kwargs):
    return IoUTally(len(_batch(0)[4]), category, C, **kwargs)


def test_null_counts_are_the_tally_of_the_permuted_labels():
    acts, planes, image_labels, category, thresholds = _batch(1)
    rows = torch.tensor([11, 4, 7, 30, 2, 9])
    tally = _tally(category, 3, null=4, seed=5)
    tally.update(acts, thresholds, planes, image_labels, rows=rows)
    for n, perm in enumerate(image_permutations(rows, 4, seed=5)):
        plain = _tally(category, 3)
        plain.update(acts, thresholds, planes[perm], image_labels[perm])
        assert torch.equal(tally.null_intersection[n], plain.intersection)
        for d in plain.activation:
            assert torch.equal(tally.null_activation[d][n], plain.activation[d])
        assert torch.equal(tally.truth, plain.truth)  # G does not change under a permutation
    observed = _tally(category, 3)
    observed.update(acts, thresholds, planes, image_labels)
    assert torch.equal(tally.intersection, observed.intersection)


def test_bootstrap_counts_are_weighted_sums_of_single_images():
    acts, planes, image_labels, category, thresholds = _batch(2)
    rows = torch.arange(100, 106)
    tally = _tally(category, 3, bootstrap=7, seed=2)
    tally.update(acts, thresholds, planes, image_labels, rows=rows)
    weights = poisson_weights(rows, 7, seed=2)
    singles = []
    for j in range(len(rows)):
        one = _tally(category, 3)
        one.update(acts[j:j + 1], thresholds, planes[j:j + 1], image_labels[j:j + 1])
        singles.append(one)
    for r in range(7):
        w = weights[r].tolist()
        assert torch.equal(tally.boot_intersection[r], sum(wj * s.intersection for wj, s in zip(w, singles)))
        assert torch.equal(tally.boot_truth[r], sum(wj * s.truth for wj, s in zip(w, singles)))
        for d in tally.activation:
            assert torch.equal(tally.boot_activation[d][r], sum(wj * s.activation[d] for wj, s in zip(w, singles)))
        assert int(tally.boot_images[r]) == sum(w)


def test_bootstrap_is_independent_of_the_batches_and_merges_exactly():
    acts, planes, image_labels, category, thresholds = _batch(3)
    rows = torch.arange(6)
    whole = _tally(category, 3, bootstrap=5, null=2, seed=1)
    whole.update(acts, thresholds, planes, image_labels, rows=rows)
    first, second = _tally(category, 3, bootstrap=5, null=2, seed=1), _tally(category, 3, bootstrap=5, null=2, seed=1)
    first.update(acts[:2], thresholds, planes[:2], image_labels[:2], rows=rows[:2])
    second.update(acts[2:], thresholds, planes[2:], image_labels[2:], rows=rows[2:])
    first.merge(second)
    assert torch.equal(first.boot_intersection, whole.boot_intersection)
    assert torch.equal(first.boot_truth, whole.boot_truth)
    restored = _tally(category, 3, bootstrap=5, null=2, seed=1)
    restored.load_state_dict(first.state_dict())
    assert torch.equal(restored.null_intersection, first.null_intersection)
    with pytest.raises(ValueError, match="dataset rows"):
        whole.update(acts, thresholds, planes, image_labels)


# -- science --------------------------------------------------------------------------------
def test_random_labels_give_few_significant_detectors_though_the_rule_finds_many(tmp_path):
    """Labels drawn at random, independent of the images: the 0.04 rule (with large masks)
    finds detectors, the null says they are chance."""
    data = make_broden(tmp_path / "noise", images=120, seed=4)
    result = netdissect.dissect(TinyNet(seed=1), data, ["conv1", "conv2"], quantile=0.2,
                                null=39, out=tmp_path / "out", **QUIET)
    detectors = significant = units = 0
    for layer in ("conv1", "conv2"):
        counts = result[layer].counts()
        mean, low, high = counts["shuffled_labels"]["detectors"]
        assert low - 2 <= counts["detectors"] <= high + 2  # as many as with shuffled labels
        detectors += counts["detectors"]
        significant += counts["significant_detectors"]
        units += counts["units"]
    assert detectors >= units // 2, (detectors, units)  # the IoU rule alone: many "detectors"
    assert significant <= max(1, round(0.05 * units)), (significant, units)


class _Planted(nn.Module):
    """Unit 0 of `layer` is exactly the red channel (a label's mask painted into the image),
    the other units are noise convolutions."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.noise = nn.Conv2d(3, 7, 3, padding=1)
        self.layer = nn.Identity()

    def forward(self, x):
        red = x[:, :1] * 0.229 + 0.485  # undo the normalisation of channel 0
        return self.layer(torch.cat([red, self.noise(x)], 1))


def _planted_broden(root: Path, images: int = 60, seed: int = 0) -> Path:
    """Images whose red channel is the mask of label 4 ("box") at 32x32; labels at 32x32."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    write_metadata(root)
    rows = []
    for i in range(images):
        blocks = rng.choice([4, 5, 6, 0], size=(8, 8), p=[0.2, 0.3, 0.3, 0.2])
        plane = np.kron(blocks, np.ones((4, 4), dtype=np.int64))
        rgb = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
        rgb[..., 0] = np.where(plane == 4, 255, 0)
        Image.fromarray(rgb).save(root / "images" / f"{i:03d}.png")
        save_plane(root / "images" / f"{i:03d}_object.png", plane)
        rows.append([f"{i:03d}.png", "train", 32, 32, 32, 32, "", "", "", "", "", f"{i:03d}_object.png"])
    write_csv(root / "index.csv", ["image", "split", "ih", "iw", "sh", "sw", "texture", "color",
                                   "scene", "part", "material", "object"], rows)
    return root


def test_a_planted_detector_gets_the_smallest_p_value(tmp_path):
    data = _planted_broden(tmp_path / "planted")
    result = netdissect.dissect(_Planted(), data, ["layer"], quantile=0.3, null=199, bootstrap=40,
                                categories=["object"], out=tmp_path / "out", **QUIET)["layer"]
    unit = result.labelled_units()[0]
    assert unit.label == "box" and unit.score == 1.0  # the mask is the label, exactly
    sig = result.significance()
    assert float(sig.p_value[0]) == 1 / 200  # no permutation reaches IoU 1
    assert bool(sig.significant[0])
    low, high = sig.score_interval[0].tolist()
    assert low == high == 1.0  # every replicate: still exactly the label
    assert float(sig.q_value[0]) <= 8 / 200 and (sig.p_value[1:] > 1 / 200).any()


def test_noise_p_values_are_close_to_uniform(tmp_path):
    """64 random units on labels independent of the images: a Kolmogorov-Smirnov distance to
    the uniform distribution within the 1% critical value (plus the p-values' grid step)."""
    data = make_broden(tmp_path / "noise", images=80, seed=7)

    class Wide(nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(3)
            self.conv = nn.Conv2d(3, 64, 5, stride=2, padding=2)

        def forward(self, x):
            return self.conv(x)

    result = netdissect.dissect(Wide(), data, ["conv"], quantile=0.05, null=99, resample_seed=11,
                                out=tmp_path / "out", **QUIET)["conv"]
    p = np.sort(result.significance().p_value.numpy())
    n = len(p)
    ecdf_hi = np.arange(1, n + 1) / n
    ecdf_lo = np.arange(0, n) / n
    distance = max(np.max(ecdf_hi - p), np.max(p - ecdf_lo))
    assert distance < 1.63 / np.sqrt(n) + 1 / 100, (distance, p)


def test_bootstrap_intervals_cover_the_iou_of_a_large_fresh_sample():
    """A simulation at the level of the tally, thresholds fixed: each of 40 units is a noisy
    copy of a label's mask; the 95% interval from 40 images covers the IoU measured on 2,000
    fresh images about 95% of the time."""
    K, C = 40, 1
    category = torch.tensor([-1, 0, 0])

    def sample(n: int, seed: int):
        g = torch.Generator().manual_seed(seed)
        planes = (torch.rand(n, 1, 8, 8, generator=g) < 0.3).long() + 1  # labels 1 and 2
        noise = torch.rand(n, K, 8, 8, generator=g) < torch.linspace(0.05, 0.45, K)[None, :, None, None]
        acts = ((planes == 1) ^ noise).float()
        return acts, planes, torch.zeros(n, 0, dtype=torch.int64)

    thresholds = torch.full((K,), 0.5)
    small = IoUTally(K, category, C, bootstrap=200, seed=0)
    acts, planes, image_labels = sample(40, 1)
    small.update(acts, thresholds, planes, image_labels, rows=torch.arange(40))
    large = IoUTally(K, category, C)
    acts, planes, image_labels = sample(2000, 2)
    large.update(acts, thresholds, planes, image_labels)

    def iou(inter, act, truth):
        return inter[..., 1].double() / (act[..., 0].double() + truth[..., 1].double() - inter[..., 1].double())

    truth_iou = iou(large.intersection, large.activation["original"], large.truth)
    boot = iou(small.boot_intersection, small.boot_activation["original"], small.boot_truth[:, None])
    low, high = torch.quantile(boot, torch.tensor([0.025, 0.975], dtype=torch.float64), dim=0)
    covered = ((low <= truth_iou) & (truth_iou <= high)).double().mean()
    assert 0.8 <= float(covered) <= 1.0, covered


# -- the command line -----------------------------------------------------------------------
def test_dissect_null_and_bootstrap_from_the_command_line(tmp_path, capsys, broden_dir):
    out = tmp_path / "out"
    assert main(["dissect", "--model", "conftest:tiny_net", "--dataset", str(broden_dir),
                 "--layers", "conv2", "--out", str(out), "--null", "19", "--bootstrap", "25",
                 "--quantile", "0.2", "--no-report", "--quiet"]) == 0
    summary = json.loads((out / "conv2" / "summary.json").read_text())
    assert summary["null_permutations"] == 19 and summary["bootstrap"]["replicates"] == 25
    assert summary["settings"]["null"] == 19 and summary["settings"]["fdr"] == 0.05
    assert 0 <= summary["significant_detectors"] <= summary["detectors"]
    low, high = summary["bootstrap"]["detectors"]
    assert low <= high
    units = json.loads((out / "conv2" / "units.json").read_text())
    assert all(1 / 20 <= u["p_value"] <= 1 and u["p_value"] <= u["q_value"] <= 1 for u in units)
    assert all(u["score_interval"][0] <= u["score_interval"][1] for u in units)
    assert all("p_value" in c for u in units for c in u["categories"].values())
    with open(out / "conv2" / "tally.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0])[-4:] == ["p-value", "q-value", "score-low", "score-high"]
    by_unit = {u["unit"] + 1: u for u in units}
    assert all(float(r["p-value"]) == by_unit[int(r["unit"])]["p_value"] for r in rows)
    # relabel with another FDR: the significant count is recomputed from the saved tallies
    assert main(["relabel", str(out), "--fdr", "0.999"]) == 0
    relabelled = json.loads((out / "conv2" / "summary.json").read_text())
    assert relabelled["settings"]["fdr"] == 0.999
    # q <= 0.999 holds for every unit with p < 1: all detectors but those no draw beat
    expected = sum(u["detector"] and u["q_value"] <= 0.999 for u in units)
    assert relabelled["significant_detectors"] == expected >= summary["significant_detectors"]
    printed = capsys.readouterr().out
    assert "significant" in printed and f"{expected} (unique" in printed
    assert main(["dissect", "--model", "conftest:tiny_net", "--dataset", str(broden_dir),
                 "--layers", "conv2", "--out", str(tmp_path / "bad"), "--null", "-1", "--quiet"]) == 2
    assert "--null" in capsys.readouterr().err


def test_plain_runs_keep_their_files_and_fingerprints(tmp_path, broden_dir):
    plain = netdissect.dissect(TinyNet(), broden_dir, ["conv2"], out=tmp_path / "a", **QUIET)["conv2"]
    summary = json.loads((tmp_path / "a" / "conv2" / "summary.json").read_text())
    assert "significant_detectors" not in summary and "null" not in summary["settings"]
    assert "null" not in summary["fingerprint_components"]
    assert plain.significance() is None
    withnull = netdissect.dissect(TinyNet(), broden_dir, ["conv2"], out=tmp_path / "b", null=5,
                                  **QUIET)["conv2"]
    assert torch.equal(withnull.intersection, plain.intersection)
    assert withnull.meta["fingerprint"] != plain.meta["fingerprint"]


def test_report_shows_q_values_intervals_and_a_significant_filter(tmp_path, broden_dir):
    from netdissect.report import write_report

    out = tmp_path / "out"
    dissection = netdissect.dissect(TinyNet(), broden_dir, ["conv2"], out=out, quantile=0.2, null=19,
                                    bootstrap=20, progress=False, report=False)
    write_report(dissection, out, progress=False)
    page = (out / "conv2" / "index.html").read_text()
    sig = dissection["conv2"].significance()
    assert '<input id="significant" type="checkbox"> significant only' in page
    assert page.count('title="95% bootstrap interval"') == 16
    q = f"q {float(sig.q_value[0]):.3g}"
    assert q in page
    counts = dissection["conv2"].counts()
    assert f"{counts['significant_detectors']} significant at FDR 0.05 (permutation null, 19 draws)" in page
    data = json.loads(page.split('id="report-data">')[1].split("</script>")[0])
    assert [u["significant"] for u in sorted(data["units"], key=lambda u: u["unit"])] == sig.significant.tolist()
    overview = (out / "index.html").read_text()
    assert ">significant</th>" in overview and ">shuffled labels</th>" in overview
    plain = netdissect.dissect(TinyNet(), broden_dir, ["conv2"], out=tmp_path / "plain", progress=False)
    assert 'id="significant"' not in (tmp_path / "plain" / "conv2" / "index.html").read_text()
    assert ">significant</th>" not in (tmp_path / "plain" / "index.html").read_text()
    assert plain["conv2"].significance() is None


def test_rotate_and_compare_carry_the_significance_columns(tmp_path, broden_dir):
    from netdissect.experiments import compare, read_record
    from netdissect.experiments.compare import write_comparison

    out = tmp_path / "rot"
    assert main(["rotate", "--dataset", str(broden_dir), "--model", "conftest:tiny_net",
                 "--layer", "conv2", "--powers", "0,1", "--out", str(out), "--quantile", "0.2",
                 "--null", "9", "--bootstrap", "10", "--quiet"]) == 0
    summary = json.loads((out / "rotate.json").read_text())
    with open(out / "rotate.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    for row, power in zip(rows, summary["powers"]):
        assert int(row["significant_detectors"]) == power["significant_detectors"]
        assert float(row["detectors_low"]) == power["bootstrap"]["detectors"][0]
        assert float(row["shuffled_labels_detectors"]) == power["shuffled_labels"]["detectors"][0]
    assert "significant: a=0:" in read_record(out).summary
    # compare two dissections (here: the unrotated and the rotated views) with their intervals
    plain = netdissect.dissect(TinyNet(), broden_dir, ["conv2"], out=tmp_path / "a", quantile=0.2,
                               null=9, bootstrap=10, **QUIET)
    comparison = compare([tmp_path / "a", tmp_path / "a"])
    write_comparison(comparison, tmp_path / "cmp")
    with open(tmp_path / "cmp" / "counts.csv", newline="") as f:
        row = next(csv.DictReader(f))
    counts = plain["conv2"].counts()
    assert int(row["significant_unique_detectors_total"]) == counts["significant_unique_detectors_total"]
    assert float(row["unique_detectors_total_high"]) == counts["bootstrap"]["unique_detectors_total"][1]
