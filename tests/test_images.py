"""The shared Gaussian blur: a direct 2-D convolution with replicated borders as reference."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from rightfocus._images import gaussian_blur


def _reference(x: torch.Tensor, sigma: float) -> torch.Tensor:
    r = max(1, math.ceil(3 * sigma))
    t = torch.arange(-r, r + 1, dtype=x.dtype)
    g = torch.exp(-(t**2) / (2 * sigma**2))
    k2 = torch.outer(g, g) / g.sum() ** 2
    pad = F.pad(x, (r, r, r, r), mode="replicate")
    c = x.shape[1]
    return F.conv2d(pad, k2.expand(c, 1, -1, -1), groups=c)


@pytest.mark.parametrize(("sigma", "size"), [(0.7, 9), (3.0, 8), (5.0, 28)])
def test_matches_direct_convolution(sigma: float, size: int) -> None:
    x = torch.rand(2, 3, size, size + 1, dtype=torch.float64)
    out = gaussian_blur(x, sigma)
    assert out.shape == x.shape and out.dtype == x.dtype
    torch.testing.assert_close(out, _reference(x, sigma), rtol=1e-10, atol=1e-12)
    const = torch.full((1, 1, 6, 6), 0.3, dtype=torch.float64)
    torch.testing.assert_close(gaussian_blur(const, sigma), const)
    with pytest.raises(ValueError, match="sigma"):
        gaussian_blur(x, 0.0)
