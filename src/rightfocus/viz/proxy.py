"""Proxy Attention figure: original training images over their proxies."""

from __future__ import annotations

from pathlib import Path

from torch import Tensor

from rightfocus.viz._save import pyplot, save_figure

__all__ = ["proxy_figure"]


def proxy_figure(originals01: Tensor, proxies01: Tensor, path: str | Path, n: int = 8) -> Path:
    """PNG with up to ``n`` originals (top row) over their proxies (bottom row), in [0, 1].

    Proxies are the images Proxy Attention (Mukherjee 2023, "Proxy Attention: Comparing and
    Combining Augmentation with Attention") makes from misclassified training images.
    """
    if originals01.shape != proxies01.shape:
        raise ValueError(
            f"originals {tuple(originals01.shape)} and proxies {tuple(proxies01.shape)} must "
            "have the same shape"
        )
    n = min(n, originals01.shape[0])
    if n <= 0:
        raise ValueError("no proxy images to plot")
    plt = pyplot()
    fig, axes = plt.subplots(2, n, figsize=(1.6 * n, 3.4), squeeze=False)
    for j in range(n):
        for row, (images, title) in enumerate(((originals01, "original"), (proxies01, "proxy"))):
            img = images[j].detach().float().cpu().clamp(0, 1)
            ax = axes[row, j]
            if img.shape[0] == 1:
                ax.imshow(img[0].numpy(), cmap="gray", vmin=0, vmax=1)
            else:
                ax.imshow(img.permute(1, 2, 0).numpy())
            ax.set_title(title, fontsize=7)
            ax.axis("off")
    fig.tight_layout()
    return save_figure(fig, path, dpi=100, fmt="png")
