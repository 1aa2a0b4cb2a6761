"""The mergeable statistics against numpy and against themselves split in pieces."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from netdissect.stats import TopImages, TopQuantile, quantile_buffer_size


@pytest.mark.parametrize("q", [0.005, 0.01, 0.1, 0.37, 0.0001])
@pytest.mark.parametrize("n", [1, 2, 7, 1000, 20011])
def test_threshold_equals_numpy(q, n):
    rng = np.random.default_rng(n)
    values = rng.standard_normal((5, n)).astype(np.float32)
    values[1] = np.round(values[1])  # many ties
    values[2] = 0.0  # a dead unit
    stat = TopQuantile(5, q, n)
    for start in range(0, n, 97):
        stat.update(torch.from_numpy(values[:, start:start + 97]))
    expected = np.quantile(values, 1 - q, axis=1)
    np.testing.assert_allclose(stat.thresholds().numpy(), expected, rtol=1e-6, atol=1e-7)


def test_buffer_is_small_and_sized_by_quantile():
    assert quantile_buffer_size(1000, 0.005) == 6  # positions 994..999 of 1000 (h = 994.005)
    assert quantile_buffer_size(10, 0.0) == 1
    stat = TopQuantile(3, 0.005, 100_000)
    assert stat.pool.shape == (3, 2 * quantile_buffer_size(100_000, 0.005))


def test_merge_and_state_dict_give_identical_thresholds():
    rng = np.random.default_rng(0)
    values = torch.from_numpy(rng.standard_normal((4, 5000)).astype(np.float32))
    whole = TopQuantile(4, 0.01, 5000)
    whole.update(values)
    a, b = TopQuantile(4, 0.01, 5000), TopQuantile(4, 0.01, 5000)
    a.update(values[:, :1234])
    b.update(values[:, 1234:])
    restored = TopQuantile(4, 0.01, 5000)
    restored.load_state_dict(a.state_dict())
    restored.merge(b)
    assert torch.equal(whole.thresholds(), restored.thresholds())


def test_fewer_values_than_capacity_still_exact():
    # skipped images: the buffers were sized for more values than arrive
    values = torch.arange(300, dtype=torch.float32).view(1, 300)
    stat = TopQuantile(1, 0.05, 1000)
    stat.update(values)
    assert float(stat.thresholds()[0]) == pytest.approx(np.quantile(np.arange(300), 0.95))


def test_top_images_ties_broken_by_index_and_merge():
    maxima = torch.tensor([[1.0, 5.0], [3.0, 5.0], [3.0, 0.0], [2.0, 5.0]])  # 4 images, 2 units
    index = torch.tensor([10, 11, 12, 13])
    top = TopImages(2, k=3)
    top.update(maxima[2:], index[2:])
    top.update(maxima[:2], index[:2])
    assert top.indices.tolist() == [[11, 12, 13], [10, 11, 13]]
    assert top.values.tolist() == [[3.0, 3.0, 2.0], [5.0, 5.0, 5.0]]
    other = TopImages(2, k=3)
    other.update(torch.tensor([[3.0, 9.0]]), torch.tensor([5]))
    top.merge(other)
    assert top.indices.tolist() == [[5, 11, 12], [5, 10, 11]]


def test_top_images_with_fewer_images_than_k():
    top = TopImages(1, k=4)
    top.update(torch.tensor([[2.0], [1.0]]), torch.tensor([0, 1]))
    assert top.indices.tolist() == [[0, 1, -1, -1]]
