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


@pytest.fixture(scope="module", params=["always", "never"])
def both_pass2_paths(request, big_broden):
    """The engine's result with pass 2 reading the activation cache, and running the model."""
    result = netdissect.dissect(TinyNet(seed=1), big_broden, ["conv1", "conv2"], quantile=0.02,
                                batch_size=16, workers=0, progress=False, cache=request.param)
    source = {"always": "cache", "never": "model"}[request.param]
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
