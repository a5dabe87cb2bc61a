"""Normalizer: eps-safe, running updates equal full-batch statistics, merged across ranks."""

from __future__ import annotations

import pytest
import torch

from modules.blocks import Normalizer


def test_running_updates_equal_the_full_batch_statistics():
    x = torch.randn(500, 3) * torch.tensor([3.0, 0.1, 10.0]) + 2
    norm = Normalizer(3)
    for chunk in x.split(77):
        norm.update(chunk)
    torch.testing.assert_close(norm.mean, x.mean(0), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(norm.std, x.std(0, correction=0), atol=1e-4, rtol=1e-4)
    assert int(norm.count) == 500


def test_update_merges_the_moments_of_every_rank():
    """Two simulated ranks: each adds the other's moments, as an all-reduce sum would."""
    x = torch.randn(200, 2)
    halves = x[:120], x[120:]

    def moments(d):
        d = d.double()
        return torch.cat([d.new_tensor([len(d)]), d.sum(0), (d**2).sum(0)])

    ranks = [Normalizer(2), Normalizer(2)]
    for r, norm in enumerate(ranks):
        norm.update(halves[r], lambda t, r=r: t + moments(halves[1 - r]))
    for norm in ranks:
        torch.testing.assert_close(norm.mean, x.mean(0), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(norm.std, x.std(0, correction=0), atol=1e-5, rtol=1e-5)
        assert int(norm.count) == 200
    assert torch.equal(ranks[0].std, ranks[1].std)


def test_constant_features_and_bad_data():
    norm = Normalizer(2)
    norm.fit(torch.tensor([[1.0, 5.0], [1.0, 6.0]]))
    assert norm.std[0] == norm.eps and torch.isfinite(norm.normalize(torch.ones(1, 2))).all()
    with pytest.raises(ValueError, match="NaN or inf"):
        norm.update(torch.tensor([[float("nan"), 0.0]]))
    with pytest.raises(ValueError, match=r"expected \[N, 2\]"):
        norm.fit(torch.zeros(3, 4))
