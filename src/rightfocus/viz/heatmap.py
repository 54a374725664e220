"""Heatmap overlays and figure grids of attributions."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
from torch import Tensor

from rightfocus.viz._save import pyplot, save_figure

__all__ = ["attribution_grid", "to_heatmap"]


def to_heatmap(attr: Tensor) -> np.ndarray:
    """(C, H, W) or (H, W) attribution -> (H, W) array in [0, 1] (sum |.| over channels)."""
    a = attr.detach().float().cpu()
    if a.dim() == 3:
        a = a.abs().sum(0)
    a = a - a.min()
    return (a / (a.max() + 1e-12)).numpy()


def _image(x: Tensor) -> np.ndarray:
    img = x.detach().float().cpu()
    img = (img - img.min()) / (img.max() - img.min() + 1e-12)
    if img.shape[0] == 1:
        return img[0].numpy()
    return img.permute(1, 2, 0).numpy()


def attribution_grid(
    images: Tensor,
    attributions: Mapping[str, Tensor],
    path: str | Path,
    masks: Tensor | None = None,
    titles: list[str] | None = None,
    dpi: int = 100,
) -> Path:
    """Write a PNG grid: one row per image, columns image (mask outlined) + one per method.

    The file is written atomically (temporary file, then rename).
    """
    plt = pyplot()
    n = images.shape[0]
    for name, attr in attributions.items():
        if attr.shape[0] != n:
            raise ValueError(f"{name}: {attr.shape[0]} attributions for {n} images")
    cols = 1 + len(attributions)
    fig, axes = plt.subplots(n, cols, figsize=(1.6 * cols, 1.6 * n), squeeze=False)
    for i in range(n):
        ax = axes[i, 0]
        ax.imshow(_image(images[i]), cmap="gray")
        if masks is not None and bool(masks[i].any()):
            ax.contour(masks[i, 0].float().cpu().numpy(), levels=[0.5], colors="red", linewidths=1)
        ax.set_title(titles[i] if titles else "input", fontsize=7)
        for j, (name, attr) in enumerate(attributions.items(), start=1):
            axes[i, j].imshow(to_heatmap(attr[i]), cmap="inferno", vmin=0, vmax=1)
            if i == 0:
                axes[i, j].set_title(name, fontsize=7)
    for ax in axes.flat:
        ax.set_axis_off()
    fig.tight_layout()
    return save_figure(fig, path, dpi=dpi)
