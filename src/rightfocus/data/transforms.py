"""Paired image + mask transforms and mask-file reading for the image datasets.

Every spatial transform is applied identically to the image and its mask: both go through one
``torchvision.transforms.v2`` pipeline, the mask as a :class:`tv_tensors.Mask` (resized by
nearest neighbour, padded with 0, never normalised).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

__all__ = [
    "IMAGENET_NORMALIZATION",
    "IMAGE_EXTENSIONS",
    "MASK_EXTENSIONS",
    "Normalization",
    "PairedTransform",
    "binarize_mask",
    "denormalize",
    "normalize",
    "read_mask",
]

#: Per-channel ``(mean, std)`` of an image normalisation ``x = (image01 - mean) / std``.
Normalization = tuple[Sequence[float], Sequence[float]]

#: ImageNet mean and std (RGB), the normalisation of the paper's AlexNet datasets.
IMAGENET_NORMALIZATION: tuple[tuple[float, ...], tuple[float, ...]] = (
    (0.485, 0.456, 0.406),
    (0.229, 0.224, 0.225),
)
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm")
MASK_EXTENSIONS = (".png", ".npy", ".bmp", ".tif", ".tiff", ".gif", ".jpg", ".jpeg")
AUGMENTATIONS = (None, "crop_flip")


def _stats(normalization: Normalization, like: Tensor) -> tuple[Tensor, Tensor]:
    if len(normalization) != 2:
        raise ValueError(f"normalization must be (mean, std), got {normalization!r}")
    mean, std = (like.new_tensor([float(v) for v in s]).view(1, -1, 1, 1) for s in normalization)
    if mean.shape[1] not in (1, like.shape[1]) or std.shape[1] not in (1, like.shape[1]):
        raise ValueError(
            f"normalization has {mean.shape[1]} means / {std.shape[1]} stds for "
            f"{like.shape[1]}-channel images; pass one value per channel"
        )
    return mean, std


def normalize(images01: Tensor, normalization: Normalization | None) -> Tensor:
    """``(images01 - mean) / std`` per channel for ``(B, C, H, W)`` images (None: unchanged)."""
    if normalization is None:
        return images01
    mean, std = _stats(normalization, images01)
    return (images01 - mean) / std


def denormalize(x: Tensor, normalization: Normalization | None) -> Tensor:
    """Back to image space: ``x * std + mean`` per channel (None: unchanged); not clamped."""
    if normalization is None:
        return x
    mean, std = _stats(normalization, x)
    return x * std + mean


def binarize_mask(values: np.ndarray, name: str, threshold: float | None = None) -> np.ndarray:
    """A ``(H, W)`` array as a {0, 1} uint8 mask (1 = must not be used).

    Accepted without a threshold: values in {0, 1}, or in {0, 255} for 8-bit files. With
    ``threshold`` (soft masks), values are scaled to [0, 1] (8-bit: / 255) and
    ``mask = value > threshold``.

    Raises:
        ValueError: other values without a threshold, or a mask that is not 2-D.
    """
    if values.ndim == 3 and values.shape[-1] in (1, 3, 4):
        values = values[..., 0] if values.shape[-1] == 1 else values[..., :3].max(axis=-1)
    if values.ndim != 2:
        raise ValueError(f"mask {name} must be a 2-D (H, W) array, got shape {values.shape}")
    if threshold is not None:
        scaled = values.astype(np.float64)
        if values.dtype == np.uint8 or (scaled.size and scaled.max() > 1.0):
            scaled = scaled / 255.0
        return (scaled > float(threshold)).astype(np.uint8)
    uniq = np.unique(values)
    if np.isin(uniq, (0, 1)).all():
        return values.astype(np.uint8)
    if np.isin(uniq, (0, 255)).all():
        return (values == 255).astype(np.uint8)
    bad = uniq[~np.isin(uniq, (0, 1, 255))][:3].tolist()
    raise ValueError(
        f"mask {name} has values other than 0/1 (e.g. {bad}); masks must be binary "
        "(1 = must not be used). For soft masks pass mask_threshold=t (mask = value > t, "
        "values scaled to [0, 1])."
    )


def read_mask(path: str | Path, threshold: float | None = None) -> np.ndarray:
    """Read a mask file (image or ``.npy``) as a binary ``(H, W)`` uint8 array."""
    path = Path(path)
    if path.suffix.lower() == ".npy":
        values = np.load(path, allow_pickle=False)
    else:
        with Image.open(path) as im:
            values = np.asarray(im)
    if values.dtype == bool:
        values = values.astype(np.uint8)
    return binarize_mask(values, str(path), threshold)


class PairedTransform:
    """Resize, optional random crop + flip, to-float and normalise, shared by image and mask.

    Args:
        image_size: output side (square); ``None`` keeps the input size.
        normalization: ``(mean, std)`` applied to the image only; ``None`` keeps [0, 1].
        augment: ``None`` or ``"crop_flip"`` (a random crop of ``image_size`` from the image
            zero-padded by ``image_size // 8`` on each side, then a horizontal flip with p=0.5).
        extra: an optional ``v2`` transform (or any callable on ``(Image, Mask)``) applied after
            the resize and before the normalisation.

    ``__call__(image, mask)`` takes a PIL image or (C, H, W) tensor and an ``(H, W)`` /
    ``(1, H, W)`` binary mask, and returns float32 ``(C, S, S)`` and float32 ``(1, S, S)``.
    """

    def __init__(
        self,
        image_size: int | None = 224,
        normalization: tuple[tuple[float, ...], tuple[float, ...]] | None = IMAGENET_NORMALIZATION,
        augment: str | None = None,
        extra: Callable[..., Any] | None = None,
    ) -> None:
        # heavy: torchvision.transforms, only when a transform is built
        from torchvision.transforms import v2

        if augment not in AUGMENTATIONS:
            raise ValueError(f"augment must be one of {AUGMENTATIONS}, got {augment!r}")
        if image_size is not None and (not isinstance(image_size, int) or image_size <= 0):
            raise ValueError(f"image_size must be a positive int or None, got {image_size!r}")
        steps: list[Any] = []
        if image_size is not None:
            steps.append(v2.Resize((image_size, image_size), antialias=True))
        if augment == "crop_flip":
            if image_size is None:
                raise ValueError("augment='crop_flip' needs an image_size")
            steps.append(v2.RandomCrop(image_size, padding=image_size // 8, fill=0))
            steps.append(v2.RandomHorizontalFlip(p=0.5))
        if extra is not None:
            steps.append(extra)
        steps.append(v2.ToDtype(torch.float32, scale=True))
        if normalization is not None:
            steps.append(v2.Normalize(list(normalization[0]), list(normalization[1])))
        self.pipeline = v2.Compose(steps)

    def __call__(
        self, image: Image.Image | Tensor, mask: np.ndarray | Tensor
    ) -> tuple[Tensor, Tensor]:
        # heavy: torchvision.transforms, only when a transform runs
        from torchvision import tv_tensors
        from torchvision.transforms.v2 import functional as TF

        img = TF.pil_to_tensor(image) if isinstance(image, Image.Image) else image
        m = torch.as_tensor(np.asarray(mask) if not isinstance(mask, Tensor) else mask)
        m = m.to(torch.uint8).reshape(1, *m.shape[-2:])
        if tuple(m.shape[-2:]) != tuple(img.shape[-2:]):
            raise ValueError(
                f"mask size {tuple(m.shape[-2:])} differs from image size "
                f"{tuple(img.shape[-2:])}; masks must have the image's height and width"
            )
        out_img, out_mask = self.pipeline(tv_tensors.Image(img), tv_tensors.Mask(m))
        return out_img.as_subclass(Tensor), out_mask.as_subclass(Tensor).to(torch.float32)
