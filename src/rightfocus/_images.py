"""Image operations shared by several parts (the one Gaussian blur)."""

from __future__ import annotations

import math

import torch.nn.functional as F
from torch import Tensor

__all__ = ["gaussian_blur"]


def gaussian_blur(x: Tensor, sigma: float) -> Tensor:
    """Separable Gaussian blur of ``(B, C, H, W)`` images with edge-replicating borders.

    The kernel is ``k(t) ∝ exp(-t^2 / (2 sigma^2))`` for ``|t| <= r = max(1, ceil(3 sigma))``
    (torchvision's ``gaussian_blur``). torchvision pads by reflection and needs ``r < H, W``;
    padding by ``r`` replicated pixels first (and cropping after) gives replicated borders and
    any kernel size on small images.
    """
    # heavy: torchvision, only the blur fills need it
    from torchvision.transforms.v2.functional import gaussian_blur as tv_gaussian_blur

    if not sigma > 0:
        raise ValueError(f"sigma must be > 0, got {sigma!r}")
    if x.dim() != 4:
        raise ValueError(f"images must be (B, C, H, W), got {tuple(x.shape)}")
    r = max(1, math.ceil(3 * sigma))
    padded = F.pad(x, (r, r, r, r), mode="replicate")
    out = tv_gaussian_blur(padded, kernel_size=[2 * r + 1, 2 * r + 1], sigma=[sigma, sigma])
    return out[..., r:-r, r:-r]
