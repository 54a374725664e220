"""Metric figures: reliability diagram, explanation uncertainty (mean / std), CKA heatmap.
All written atomically as PNG."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

from rightfocus.metrics.calibration import ReliabilityData
from rightfocus.viz._save import pyplot, save_figure
from rightfocus.viz.heatmap import _image, to_heatmap

__all__ = ["cka_heatmap", "explanation_uncertainty_figure", "reliability_diagram"]


def reliability_diagram(data: ReliabilityData, path: str | Path, title: str = "") -> Path:
    """Bars of per-bin accuracy against the diagonal of perfect calibration, with the ECE."""
    plt = pyplot()
    edges = data.edges.double().cpu()
    lo, hi = edges[:-1], edges[1:]
    has = data.count.cpu() > 0
    fig, ax = plt.subplots(figsize=(3.6, 3.6))
    ax.bar(
        lo[has],
        data.accuracy.cpu()[has],
        width=(hi - lo)[has],
        align="edge",
        edgecolor="black",
        color="#4c72b0",
        label="accuracy",
    )
    ax.plot([0, 1], [0, 1], "--", color="gray", label="perfect calibration")
    weights = data.count / data.count.sum()
    ece = float((weights[has] * data.gaps[has]).sum())
    ax.set_xlabel("confidence")
    ax.set_ylabel("accuracy")
    ax.set_title(f"{title} ECE={ece:.3f}".strip())
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    return save_figure(fig, path)


def explanation_uncertainty_figure(
    images: Tensor, mean: Tensor, std: Tensor, path: str | Path, titles: Sequence[str] = ()
) -> Path:
    """One row per image: the image, the mean attribution and its per-pixel std over samples."""
    plt = pyplot()
    n = images.shape[0]
    fig, axes = plt.subplots(n, 3, figsize=(4.8, 1.6 * n), squeeze=False)
    for i in range(n):
        axes[i, 0].imshow(_image(images[i]), cmap="gray")
        axes[i, 0].set_title(titles[i] if i < len(titles) else "input", fontsize=7)
        axes[i, 1].imshow(to_heatmap(mean[i]), cmap="inferno", vmin=0, vmax=1)
        axes[i, 2].imshow(to_heatmap(std[i]), cmap="viridis", vmin=0, vmax=1)
        if i == 0:
            axes[i, 1].set_title("mean attribution", fontsize=7)
            axes[i, 2].set_title("std over posterior", fontsize=7)
    for ax in axes.flat:
        ax.set_axis_off()
    fig.tight_layout()
    return save_figure(fig, path)


def cka_heatmap(
    matrix: Tensor, path: str | Path, rows: Sequence[str] = (), cols: Sequence[str] = ()
) -> Path:
    """Heatmap of a layer-by-layer CKA matrix."""
    plt = pyplot()
    m = torch.as_tensor(matrix).double().cpu().numpy()
    fig, ax = plt.subplots(figsize=(1 + 0.5 * m.shape[1], 1 + 0.5 * m.shape[0]))
    im = ax.imshow(m, vmin=0, vmax=1, cmap="magma")
    ax.set_xticks(range(m.shape[1]), list(cols) or None, rotation=90, fontsize=7)
    ax.set_yticks(range(m.shape[0]), list(rows) or None, fontsize=7)
    fig.colorbar(im, ax=ax, fraction=0.046)
    ax.set_title("linear CKA", fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)
