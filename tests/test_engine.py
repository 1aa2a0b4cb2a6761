"""The engine against the brute-force reference of tests/reference.py: every count equal."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import netdissect
from conftest import TinyNet, make_broden
from reference import reference_dissect, reference_iou


@pytest.fixture(scope="module")
def big_broden(tmp_path_factory):
    return make_broden(tmp_path_factory.mktemp("engine") / "broden", images=240, seed=3)


@pytest.fixture(scope="module", params=["always", "never", "labels"])
def both_pass2_paths(request, big_broden):
    """The engine's result with pass 2 reading the activation cache, running the model, and
    running the model with the labels from the cache (the outputs over the cache limit of
    1 MB: 2.9 MB, the labels 0.6 MB)."""
    options = {"labels": dict(cache="always", cache_limit_gb=2**-10)}.get(
        request.param, dict(cache=request.param))
    result = netdissect.dissect(TinyNet(seed=1), big_broden, ["conv1", "conv2"], quantile=0.02,
                                batch_size=16, workers=0, progress=False, **options)
    source = {"always": "cache", "never": "model", "labels": "model"}[request.param]
    assert all(r.meta["pass2_source"] == source for r in result.layers.values())
    return result


@pytest.mark.parametrize("layer", ["conv1", "conv2"])
def test_engine_equals_brute_force(big_broden, both_pass2_paths, layer):
    model = TinyNet(seed=1)
    q = 0.02
    ref = reference_dissect(big_broden, model, layer, q=q)
    r = both_pass2_paths[layer]
    np.testing.assert_allclose(r.thresholds.numpy(), ref["thresholds"], rtol=1e-6, atol=0)
    L = ref["I"].shape[1]
    assert np.array_equal(r.truth.numpy()[:L], ref["G"])
    assert np.array_equal(r.intersection.numpy()[:, :L], ref["I"])
    assert r.intersection.sum() > 0
    for definition in ("original", "lite"):
        assert np.array_equal(r.activation[definition].numpy(), ref["A"][definition])
        np.testing.assert_allclose(r.iou(definition).numpy()[:, :L], reference_iou(ref, definition),
                                   rtol=1e-12, atol=0)
    # The two definitions really differ on this data (parts are partially annotated).
    assert not np.array_equal(ref["A"]["original"], ref["A"]["lite"])


def test_workers_and_batches_do_not_change_results(big_broden):
    model = TinyNet(seed=1)
    a = netdissect.dissect(model, big_broden, ["conv2"], quantile=0.02, batch_size=7, workers=2,
                           progress=False)["conv2"]
    b = netdissect.dissect(model, big_broden, ["conv2"], quantile=0.02, batch_size=64, workers=0,
                           progress=False, cache_limit_gb=0)["conv2"]
    assert torch.equal(a.thresholds, b.thresholds)
    assert torch.equal(a.intersection, b.intersection)
    assert torch.equal(a.top_indices, b.top_indices)
    assert torch.equal(a.top_maps, b.top_maps)


def test_labels_are_decoded_once_when_only_they_are_cached(big_broden, monkeypatch):
    """Outputs over the cache limit, labels under it: pass 2 runs the model but decodes no
    label file; the numbers equal those of a run without any cache."""
    from netdissect.data.broden import BrodenImages

    decoded = []
    original = BrodenImages._load_labels

    def counting(self, row):
        decoded.append(row.image)
        return original(self, row)

    monkeypatch.setattr(BrodenImages, "_load_labels", counting)
    labels_only = netdissect.dissect(TinyNet(seed=1), big_broden, ["conv1", "conv2"], quantile=0.02,
                                     batch_size=16, workers=0, progress=False, cache="always",
                                     cache_limit_gb=2**-10)
    assert sorted(decoded) == sorted(row.image for row in netdissect.load_broden(big_broden).rows)
    decoded.clear()
    plain = netdissect.dissect(TinyNet(seed=1), big_broden, ["conv1", "conv2"], quantile=0.02,
                               batch_size=16, workers=0, progress=False, cache="never")
    assert len(decoded) == 2 * 240  # without a cache, pass 2 decodes every image's labels again
    for layer in ("conv1", "conv2"):
        assert torch.equal(labels_only[layer].intersection, plain[layer].intersection)
        assert labels_only[layer].meta["pass2_source"] == "model"
