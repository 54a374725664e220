"""``metrics.sanity.spearman`` against scipy, ties included."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from rightfocus.metrics.sanity import spearman


def test_rows_match_scipy_with_ties() -> None:
    g = torch.Generator().manual_seed(0)
    a = torch.randint(0, 5, (4, 30), generator=g).double()  # many ties
    b = a + torch.randint(0, 3, (4, 30), generator=g).double()
    b[3] = -a[3]
    ours = spearman(a, b)
    ref = [spearmanr(a[i].numpy(), b[i].numpy()).statistic for i in range(4)]
    np.testing.assert_allclose(ours.double().numpy(), ref, rtol=1e-6)
    assert ours.shape == (4,) and float(ours[3]) == pytest.approx(-1.0)
    with pytest.raises(ValueError, match=r"\(B, N\)"):
        spearman(a, b[:, :3])


def test_many_rows_match_torchmetrics_and_scipy() -> None:
    """Saliency-like rows (many exact zeros tie) at the randomisation check's size."""
    from torchmetrics.functional import spearman_corrcoef

    g = torch.Generator().manual_seed(1)
    a = torch.randn(64, 784, generator=g).relu().round(decimals=1)
    b = a + 0.3 * torch.randn(64, 784, generator=g).relu()
    ours = spearman(a, b)
    ref = spearman_corrcoef(a.double().T, b.double().T)
    np.testing.assert_allclose(ours.numpy(), ref.numpy(), rtol=1e-6)  # its eps in the ranks
    exact = [spearmanr(a[i].numpy(), b[i].numpy()).statistic for i in range(64)]
    np.testing.assert_allclose(ours.numpy(), exact, rtol=1e-9)
