"""Figure of class model visualisations: one panel per class image, written atomically."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from torch import Tensor

from rightfocus.viz._save import pyplot, save_figure
from rightfocus.viz.heatmap import _image

__all__ = ["class_visualization_figure"]


def class_visualization_figure(
    images: Tensor, labels: Sequence[object], path: str | Path, columns: int = 5
) -> Path:
    """Write a PNG grid of ``(K, C, H, W)`` images (1 or 3 channels), titled by ``labels``.

    Each image is min-max scaled to [0, 1] on its own, since optimised images have no natural
    range. Typically ``images`` is ``class_visualization(...).images``.
    """
    if not isinstance(images, Tensor) or images.dim() != 4 or images.shape[1] not in (1, 3):
        got = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise ValueError(f"images must be a (K, 1 or 3, H, W) tensor, got {got}")
    k = images.shape[0]
    if len(labels) != k:
        raise ValueError(f"{len(labels)} labels for {k} images; pass one label per image")
    if k == 0:
        raise ValueError("images is empty; pass at least one image")
    if columns < 1:
        raise ValueError(f"columns must be a positive int, got {columns!r}")
    plt = pyplot()
    cols = min(columns, k)
    rows = math.ceil(k / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(1.6 * cols, 1.7 * rows), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.set_axis_off()
        if i < k:
            ax.imshow(_image(images[i]), cmap="gray", vmin=0, vmax=1)
            ax.set_title(str(labels[i]), fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)
