"""Shared pieces of the dataset layer: the in-memory masked dataset and argument checks.

Every dataset in :mod:`rightfocus.data` yields ``(image, label, mask)``: image float32
``(C, H, W)``, label an int64 scalar, mask float32 ``(1, H, W)`` in {0, 1} where 1 marks a pixel
the model must not use and an all-zero mask means "no feedback for this sample".
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

__all__ = ["SPLITS", "MaskedTensorDataset", "check_split", "resize_images", "split_seed"]

SPLITS = ("train", "test")


def check_split(split: str) -> None:
    """Raise a ValueError unless ``split`` is ``"train"`` or ``"test"``."""
    if split not in SPLITS:
        raise ValueError(
            f"split must be 'train' (the train+val pool) or 'test' (the independent test "
            f"set), got {split!r}"
        )


def split_seed(seed: int, split: str) -> int:
    """A 63-bit seed derived from ``(seed, split)`` so train and test draw independent streams."""
    check_split(split)
    ss = np.random.SeedSequence([int(seed), SPLITS.index(split)])
    return int(ss.generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


class MaskedTensorDataset(Dataset[tuple[Tensor, Tensor, Tensor]]):
    """An in-memory ``(image, label, mask)`` dataset held as three tensors.

    Args:
        images: float32 ``(N, C, H, W)``.
        labels: int64 ``(N,)``.
        masks: float32 ``(N, 1, H, W)`` in {0, 1}, or ``None`` for all-zero masks (no feedback;
            stored as a zero-copy expanded view, so treat ``.masks`` as read-only).

    Example:
        >>> ds = MaskedTensorDataset(torch.zeros(2, 1, 4, 4), torch.tensor([0, 1]))
        >>> [t.shape for t in ds[1]]
        [torch.Size([1, 4, 4]), torch.Size([]), torch.Size([1, 4, 4])]
    """

    def __init__(self, images: Tensor, labels: Tensor, masks: Tensor | None = None) -> None:
        if images.ndim != 4:
            raise ValueError(f"images must be (N, C, H, W), got shape {tuple(images.shape)}")
        n, _, h, w = images.shape
        if labels.shape != (n,):
            raise ValueError(f"labels must be ({n},) to match images, got {tuple(labels.shape)}")
        if masks is None:
            masks = torch.zeros(1, 1, h, w, dtype=torch.float32).expand(n, 1, h, w)
        elif masks.shape != (n, 1, h, w):
            raise ValueError(
                f"masks must be ({n}, 1, {h}, {w}) to match images, got {tuple(masks.shape)}"
            )
        elif masks.numel() and (float(masks.min()) < 0 or float(masks.max()) > 1):
            raise ValueError(
                f"masks must hold values in [0, 1] (1 = must not be used), got "
                f"[{float(masks.min()):g}, {float(masks.max()):g}]; divide 0/255 masks by 255"
            )
        self.images = images.to(torch.float32)
        self.labels = labels.to(torch.int64)
        self.masks = masks.to(torch.float32)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor, Tensor]:
        return self.images[index], self.labels[index], self.masks[index]

    @property
    def targets(self) -> list[int]:
        """Labels as a list of ints (the attribute torchvision datasets expose)."""
        return [int(v) for v in self.labels.tolist()]

    def resize_(self, image_size: int) -> None:
        """Resize images (bilinear, antialiased) and masks (nearest) to a square, in place."""
        if image_size <= 0:
            raise ValueError(f"image_size must be a positive int, got {image_size}")
        if self.images.shape[-2:] == (image_size, image_size):
            return
        size = (image_size, image_size)
        self.images = resize_images(self.images, size)
        self.masks = F.interpolate(self.masks, size=size, mode="nearest")


def resize_images(images: Tensor, size: tuple[int, int]) -> Tensor:
    """Bilinear, antialiased resize of a float ``(N, C, H, W)`` batch, clamped to its range."""
    lo, hi = float(images.min()), float(images.max())
    out = F.interpolate(images, size=size, mode="bilinear", align_corners=False, antialias=True)
    return out.clamp_(lo, hi)
