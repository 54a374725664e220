"""Mask helpers shared by the guidance methods: resizing to a layer, the empty-mask guard.

A mask is ``(B, 1, H, W)`` with 1 where the model must not look. Resizing to a layer's
``(h, w)`` follows "Regularizing Explanations in Bayesian Convolutional Neural Networks":

* ``pool="max"`` (Decoy MNIST, ISIC): ``adaptive_max_pool2d(mask, (h, w))`` - a cell is masked
  if any pixel it covers is masked;
* ``pool="min"`` (Oxford-IIIT-Pet, SBD): ``1 - adaptive_max_pool2d(1 - mask, (h, w))`` - a cell
  is masked only if every pixel it covers is masked.
"""

from __future__ import annotations

import warnings

import torch.nn.functional as F
from torch import Tensor

__all__ = ["POOL_MODES", "EmptyMaskGuard", "check_pool", "resize_mask"]

POOL_MODES = ("max", "min")
EMPTY_MASK_POLICIES = ("error", "warn", "ignore")


def check_pool(pool: str) -> str:
    """Validate a mask pooling mode (``"max"`` or ``"min"``)."""
    if pool not in POOL_MODES:
        raise ValueError(
            f"pool must be 'max' (a cell is masked if any pixel is) or 'min' (only if all "
            f"pixels are), got {pool!r}"
        )
    return pool


def resize_mask(mask: Tensor, size: tuple[int, int], pool: str = "max") -> Tensor:
    """Resize a ``(B, 1, H, W)`` mask to ``(B, 1, h, w)`` with max- or min-pooling.

    Example:
        >>> import torch
        >>> m = torch.zeros(1, 1, 4, 4); m[0, 0, 0, 0] = 1
        >>> resize_mask(m, (2, 2), "max")[0, 0].tolist()
        [[1.0, 0.0], [0.0, 0.0]]
        >>> resize_mask(m, (2, 2), "min")[0, 0].tolist()
        [[0.0, 0.0], [0.0, 0.0]]
    """
    check_pool(pool)
    if mask.dim() != 4:
        raise ValueError(f"mask must be (B, 1, H, W), got {tuple(mask.shape)}")
    size = (int(size[0]), int(size[1]))
    if tuple(mask.shape[-2:]) == size:
        return mask
    if pool == "max":
        return F.adaptive_max_pool2d(mask, size)
    return 1.0 - F.adaptive_max_pool2d(1.0 - mask, size)


class EmptyMaskGuard:
    """Detects training on a dataset without masks (every mask all-zero).

    A method that needs masks learns nothing from samples without them. The guard counts the
    samples seen until the first non-empty mask; once ``min_samples`` samples (the first batch
    for batches of at least that size) all had empty masks, it acts on ``policy``: ``"error"``
    raises a ``ValueError`` (default), ``"warn"`` warns once, ``"ignore"`` does nothing. After the
    first non-empty mask it never checks again, so batches that happen to carry no feedback (the
    paper keeps masks for 70 % of the samples) are fine.
    """

    def __init__(self, method: str, policy: str = "error", min_samples: int = 64) -> None:
        if policy not in EMPTY_MASK_POLICIES:
            raise ValueError(f"empty_masks must be one of {EMPTY_MASK_POLICIES}, got {policy!r}")
        self.method = method
        self.policy = policy
        self.min_samples = int(min_samples)
        self.seen = 0
        self.found = False
        self._warned = False

    def update(self, mask: Tensor) -> None:
        """Record one batch of masks; act on the policy when no mask was seen yet."""
        if self.found or self.policy == "ignore":
            return
        if bool((mask > 0).any()):
            self.found = True
            return
        self.seen += int(mask.shape[0])
        if self.seen < self.min_samples:
            return
        message = (
            f"{self.method} needs explanation masks, but the first {self.seen} training samples "
            "all had empty (all-zero) masks: the dataset carries no masks. Use a dataset with "
            "masks (registry metadata has_masks=True), or pass empty_masks='warn'/'ignore' to "
            f"{self.method} if batches without feedback are intended."
        )
        if self.policy == "error":
            raise ValueError(message)
        if not self._warned:
            warnings.warn(message, stacklevel=3)
            self._warned = True
