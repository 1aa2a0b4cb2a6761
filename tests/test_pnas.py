"""The pnas definition (docs/method.md section 14): thresholds over upsampled maps, plain IoU,
argmax over every concept, detectors with IoU > 0.04, checked against brute force."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import netdissect
from conftest import TinyNet, make_broden
from netdissect.engine.settings import Settings
from netdissect.errors import SettingsError
from netdissect.stats import UpsampledQuantile
from netdissect.stats.upsampled_quantile import float_keys, keys_to_float
from reference import reference_dissect, reference_iou


def _feed_all_rounds(stats: list[UpsampledQuantile], shares: list[torch.Tensor], size, batch=5):
    """Run every round: each stat gets its share in batches; rounds close on the merge."""
    while stats[0].rounds_left:
        for stat, acts in zip(stats, shares):
            for b in range(0, len(acts), batch):
                stat.update(acts[b:b + batch], size)
        merged = stats[0].__class__(stats[0].units, stats[0].q, stats[0].capacity_count)
        merged.load_state_dict(stats[0].state_dict())
        for other in stats[1:]:
            merged.merge(other)
        for stat in stats:
            stat.advance(merged)
    return stats[0].thresholds()


def _brute(acts: torch.Tensor, size, q: float) -> np.ndarray:
    """numpy's quantile of every map upsampled on its own ((B*K, 1, h, w): torch rounds a
    (B, K, h, w) batch differently in the last bit, and exactness sees every bit)."""
    B, K, h, w = acts.shape
    up = F.interpolate(acts.reshape(B * K, 1, h, w), size=size, mode="bilinear", align_corners=False)
    return np.quantile(up.reshape(B, K, -1).transpose(0, 1).reshape(K, -1).numpy(), 1 - q, axis=1).astype(np.float32)


def test_float_keys_keep_the_order_and_invert():
    x = torch.tensor([-math.inf, -3e38, -2.5, -1e-40, -0.0, 0.0, 1e-40, 1e-30, 2.5, 3e38, math.inf])
    keys = float_keys(x)
    assert bool((keys[1:] > keys[:-1]).all())
    assert torch.equal(keys_to_float(keys).view(torch.int32), x.view(torch.int32))


@pytest.mark.parametrize("q, kind", [(0.01, "relu"), (0.005, "signed"), (0.2, "ties"), (0.5, "relu"),
                                     (0.9, "signed"), (0.001, "constant")])
def test_upsampled_quantile_equals_numpy(q, kind):
    torch.manual_seed(int(q * 1000))
    acts = torch.randn(37, 6, 3, 5)
    acts = {"relu": acts.relu(), "signed": acts * 10, "ties": acts.round(),
            "constant": torch.full_like(acts, 0.25)}[kind]
    size = (11, 9)
    stat = UpsampledQuantile(6, q, capacity_count=37 * 11 * 9 + 123)
    got = _feed_all_rounds([stat], [acts], size)
    assert np.array_equal(got.numpy(), _brute(acts, size, q))


def test_upsampled_quantile_shares_merge_exactly_and_state_round_trips():
    torch.manual_seed(5)
    acts = torch.randn(60, 4, 4, 4).relu() ** 2
    size, q = (16, 16), 0.01
    whole = _feed_all_rounds([UpsampledQuantile(4, q, 60 * 256)], [acts], size)
    shares = [UpsampledQuantile(4, q, 60 * 256) for _ in range(3)]
    split = _feed_all_rounds(shares, [acts[:7], acts[7:40], acts[40:]], size)
    assert torch.equal(whole, split)
    # A saved state mid-round resumes to the same thresholds.
    a = UpsampledQuantile(4, q, 60 * 256)
    a.update(acts[:30], size)
    b = UpsampledQuantile(4, q, 60 * 256)
    b.load_state_dict(a.state_dict())
    b.update(acts[30:], size)
    assert torch.equal(_finish(b, acts, size), whole)


def _finish(stat: UpsampledQuantile, acts: torch.Tensor, size) -> torch.Tensor:
    """Close round 0 of a stat that saw every value, then run the other rounds."""
    stat.advance(stat)
    while stat.rounds_left:
        stat.update(acts, size)
        stat.advance(stat)
    return stat.thresholds()


def test_upsampled_quantile_skips_maps_below_its_floor():
    """Most maps never reach the top 1%: after the first batches they are not upsampled."""
    torch.manual_seed(0)
    acts = torch.randn(200, 8, 4, 4).relu()
    acts[:, :, :, :] *= torch.rand(200, 1, 1, 1) ** 4  # a few images activate strongly
    stat = UpsampledQuantile(8, 0.01, 200 * 32 * 32)
    for b in range(0, 200, 20):
        stat.update(acts[b:b + 20], (32, 32))
    floor_value = keys_to_float(stat.floor << 20)
    maxima = acts.amax(dim=(2, 3))
    assert float((maxima >= floor_value).float().mean()) < 0.3
    assert np.array_equal(_finish(stat, acts, (32, 32)).numpy(), _brute(acts, (32, 32), 0.01))


def test_settings_pnas_defaults_and_fingerprint():
    assert Settings(definition="pnas").quantile == 0.01
    assert Settings(definition="pnas", quantile=0.005).quantile == 0.005
    assert Settings().quantile == 0.005 and Settings(definition="lite").quantile == 0.005
    from netdissect.engine.settings import fingerprint_components
    original = fingerprint_components(Settings(quantile=0.01), "d", ["object"], "w", {}, "f")
    pnas = fingerprint_components(Settings(definition="pnas"), "d", ["object"], "w", {}, "f")
    assert pnas != original and pnas["thresholds"] == "upsampled" and "thresholds" not in original


@pytest.fixture(scope="module")
def broden(tmp_path_factory):
    return make_broden(tmp_path_factory.mktemp("pnas") / "broden", images=90, seed=4)


@pytest.fixture(scope="module", params=["always", "never"])
def pnas_result(request, broden):
    return netdissect.dissect(TinyNet(seed=2), broden, ["conv1", "conv2"], definition="pnas",
                              batch_size=16, workers=0, progress=False, cache=request.param)


@pytest.mark.parametrize("layer", ["conv1", "conv2"])
def test_pnas_dissection_equals_brute_force(broden, pnas_result, layer):
    ref = reference_dissect(broden, TinyNet(seed=2), layer, q=0.01, upsampled=True)
    r = pnas_result[layer]
    assert r.meta["settings"]["quantile"] == 0.01 and r.meta["settings"]["thresholds"] == "upsampled"
    # The quantile itself is exact (the tests above, on the same values); the model's
    # activations in a batch and image by image can differ in the last bits.
    np.testing.assert_allclose(r.thresholds.numpy(), ref["thresholds"], rtol=1e-6, atol=0)
    L = ref["I"].shape[1]
    assert np.array_equal(r.intersection.numpy()[:, :L], ref["I"])
    assert np.array_equal(r.activation["pnas"].numpy(), ref["A"]["pnas"])
    iou = reference_iou(ref, "pnas")
    np.testing.assert_allclose(r.iou().numpy()[:, :L], iou, rtol=1e-12, atol=0)
    # The label is the argmax over every concept; a detector has IoU > 0.04.
    units = r.labelled_units()
    best = iou.argmax(axis=1)
    for u in units:
        if iou[u.unit].max() > 0:
            assert u.label_number == best[u.unit] and u.score == pytest.approx(iou[u.unit].max(), abs=1e-15)
        assert u.detector == (iou[u.unit].max() > 0.04)
    assert r.counts()["detectors"] == int((iou.max(axis=1) > 0.04).sum())
    assert r.counts()["definition"] == "pnas"


def test_pnas_counts_strictly_above_the_threshold(pnas_result):
    r = pnas_result["conv2"]
    score = max(u.score for u in r.labelled_units())
    at = r.counts(iou_threshold=score)
    assert at["detectors"] == 0  # IoU > t: a unit exactly at t is not a detector


def test_relabel_refuses_to_cross_between_threshold_kinds(broden, pnas_result, tmp_path):
    with pytest.raises(SettingsError, match="--definition original"):
        pnas_result["conv1"].iou("original")
    original = netdissect.dissect(TinyNet(seed=2), broden, ["conv1"], quantile=0.01, workers=0,
                                  progress=False)
    with pytest.raises(SettingsError, match="run `netdissect dissect` again"):
        original.relabel(definition="pnas")
    original.relabel(definition="lite")  # the other two still relabel freely


def test_an_interrupted_threshold_pass_resumes_and_equals_an_uninterrupted_run(broden, tmp_path):
    """16 images in batches of 8, no cache: the model runs twice per pass, four passes.  It
    fails in the second threshold pass (call 5); the resumed run redoes that pass and the
    tally (4 calls), not pass 1 or the first threshold pass, and the result is the same."""
    from conftest import FailingNet

    small = make_broden(tmp_path / "small", images=16, seed=3)
    options = dict(definition="pnas", workers=0, progress=False, report=False, batch_size=8,
                   checkpoint_seconds=0.0, cache_limit_gb=0.0)
    out = tmp_path / "out"
    with pytest.raises(RuntimeError, match="on purpose"):
        netdissect.dissect(FailingNet(fail_at=5), small, ["conv2"], out=out, **options)
    assert (out / ".netdissect-state" / "state-rank0-of-1.pt").is_file()

    class Counting(TinyNet):
        calls = 0

        def forward(self, x):
            Counting.calls += 1
            return super().forward(x)

    resumed = netdissect.dissect(Counting(), small, ["conv2"], out=out, **options)["conv2"]
    assert Counting.calls == 4
    whole = netdissect.dissect(TinyNet(), small, ["conv2"], out=tmp_path / "whole", **options)["conv2"]
    for name in ("thresholds", "intersection", "truth", "top_indices", "top_maps"):
        assert torch.equal(getattr(resumed, name), getattr(whole, name)), name
    assert torch.equal(resumed.activation["pnas"], whole.activation["pnas"])
