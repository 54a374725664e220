"""A grid of a batch's images with their explanation masks outlined (one figure per dataset)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from rightfocus.data.transforms import denormalize
from rightfocus.viz._save import save_figure

__all__ = ["batch_figure"]


def _unnormalize(
    images: Tensor, normalization: tuple[Sequence[float], Sequence[float]] | None
) -> Tensor:
    return denormalize(images.detach().to(torch.float32).cpu(), normalization).clamp(0.0, 1.0)


def _check(images: Tensor, masks: Tensor, labels: Sequence[object] | Tensor | None) -> None:
    if not isinstance(images, Tensor) or not isinstance(masks, Tensor):
        raise TypeError("images and masks must be torch tensors (B, C, H, W) and (B, 1, H, W)")
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"images must be (B, 1 or 3, H, W), got {tuple(images.shape)}")
    b, _, h, w = images.shape
    if masks.shape != (b, 1, h, w):
        raise ValueError(
            f"masks must be ({b}, 1, {h}, {w}) to match images, got {tuple(masks.shape)}"
        )
    if b == 0:
        raise ValueError("the batch is empty: pass at least one image")
    if labels is not None and len(labels) != b:
        raise ValueError(f"{len(labels)} labels for {b} images")


def batch_figure(
    images: Tensor,
    masks: Tensor,
    path: str | Path,
    labels: Sequence[object] | Tensor | None = None,
    normalization: tuple[Sequence[float], Sequence[float]] | None = None,
    ncols: int = 8,
    dpi: int = 100,
) -> Path:
    """Write a PNG grid of ``images`` with the outline of each ``mask`` (1 = must not be used).

    Args:
        images: ``(B, C, H, W)``, C in {1, 3}; values in [0, 1] or normalised (see below).
        masks: ``(B, 1, H, W)``; pixels > 0.5 are outlined in red (an all-zero mask: no line).
        path: the PNG file to write (atomically; parent folders are created).
        labels: optional per-image titles (class names or ints).
        normalization: the ``(mean, std)`` the images were normalised with, undone for display.
        ncols: images per row.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    # heavy: matplotlib is slow to import; only figure writers need it
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    _check(images, masks, labels)
    x = _unnormalize(images, normalization)
    m = (masks.detach().cpu() > 0.5).numpy()
    b = x.shape[0]
    cols = max(1, min(ncols, b))
    rows = math.ceil(b / cols)
    fig = Figure(figsize=(1.6 * cols, 1.7 * rows), dpi=dpi)
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    for i, ax in enumerate(axes):
        ax.set_axis_off()
        if i >= b:
            continue
        img = x[i, 0].numpy() if x.shape[1] == 1 else x[i].permute(1, 2, 0).numpy()
        ax.imshow(img, cmap="gray" if x.shape[1] == 1 else None, vmin=0.0, vmax=1.0)
        if m[i, 0].any() and not m[i, 0].all():
            ax.contour(m[i, 0].astype(float), levels=[0.5], colors="red", linewidths=1.0)
        elif m[i, 0].all():  # everything masked: a red frame
            h, w = m.shape[-2:]
            ax.add_patch(Rectangle((-0.5, -0.5), w, h, fill=False, edgecolor="red", linewidth=2))
        if labels is not None:
            label = labels[i]
            ax.set_title(str(label.item() if isinstance(label, Tensor) else label), fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path, dpi=dpi, fmt="png")
