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
