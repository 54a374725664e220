"""Figures comparing methods on Decoy MNIST: explanation grid, reliability diagrams,
explanation-uncertainty maps and training curves grouped by method. All written atomically."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from torch import Tensor

from rightfocus._events import training_curves as read_curves
from rightfocus.viz._save import pyplot as _plt
from rightfocus.viz._save import save_figure as _save
from rightfocus.viz.heatmap import _image, to_heatmap

__all__ = ["explanation_grid", "reliability_grid", "training_curves", "uncertainty_maps"]


def _outline(ax: object, mask: Tensor) -> None:
    """Red rectangle around the masked (decoy) pixels."""
    import matplotlib.patches as patches  # heavy: matplotlib

    m = mask.reshape(mask.shape[-2], mask.shape[-1]) > 0
    if not bool(m.any()):
        return
    rows, cols = np.nonzero(m.numpy())
    box = patches.Rectangle(
        (cols.min() - 0.5, rows.min() - 0.5),
        cols.max() - cols.min() + 1,
        rows.max() - rows.min() + 1,
        fill=False,
        edgecolor="red",
        linewidth=1.2,
    )
    ax.add_patch(box)  # type: ignore[attr-defined]


def explanation_grid(
    images: Tensor,
    masks: Tensor,
    labels: Tensor,
    methods: Mapping[str, tuple[Tensor, Tensor]],
    path: str | Path,
    title: str = "",
) -> Path:
    """Row 0: the test images with the decoy boxed; one row per method: its attribution
    (normalised per image) with the predicted class. ``methods``: name -> (attr, pred)."""
    plt = _plt()
    n = images.shape[0]
    fig, axes = plt.subplots(
        len(methods) + 1, n, figsize=(1.25 * n + 1.2, 1.3 * (len(methods) + 1)), squeeze=False
    )
    for j in range(n):
        axes[0, j].imshow(_image(images[j]), cmap="gray", vmin=0, vmax=1)
        _outline(axes[0, j], masks[j])
        axes[0, j].set_title(f"label {int(labels[j])}", fontsize=7)
    for i, (name, (attr, pred)) in enumerate(methods.items(), 1):
        for j in range(n):
            axes[i, j].imshow(to_heatmap(attr[j]), cmap="inferno", vmin=0, vmax=1)
            _outline(axes[i, j], masks[j])
            ok = int(pred[j]) == int(labels[j])
            axes[i, j].set_title(f"pred {int(pred[j])}", fontsize=7, color="k" if ok else "r")
        axes[i, 0].text(
            -0.15, 0.5, name, transform=axes[i, 0].transAxes, ha="right", va="center", fontsize=8
        )
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0, 0].text(
        -0.15, 0.5, "input", transform=axes[0, 0].transAxes, ha="right", va="center", fontsize=8
    )
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


def reliability_grid(
    bins: Mapping[str, Mapping[str, Sequence[float]]], path: str | Path, title: str = ""
) -> Path:
    """One reliability diagram per method from equal-width bin sums (``count``,
    ``confidence_sum``, ``correct``): accuracy per confidence bin against the diagonal, with
    ECE = sum_b (n_b / N) |acc_b - conf_b| (Guo et al. 2017, "On Calibration of Modern Neural
    Networks")."""
    plt = _plt()
    k = len(bins)
    fig, axes = plt.subplots(1, k, figsize=(2.3 * k, 2.5), squeeze=False)
    for ax, (name, b) in zip(axes[0], bins.items(), strict=True):
        count = np.asarray(b["count"], dtype=float)
        n_bins = len(count)
        has = count > 0
        acc = np.where(has, np.asarray(b["correct"]) / np.maximum(count, 1), 0.0)
        conf = np.where(has, np.asarray(b["confidence_sum"]) / np.maximum(count, 1), 0.0)
        ece = float(np.sum(count / max(count.sum(), 1) * np.abs(acc - conf)))
        centers = (np.arange(n_bins) + 0.5) / n_bins
        ax.bar(
            centers[has], acc[has], width=1 / n_bins, edgecolor="k", linewidth=0.4, label="accuracy"
        )
        ax.bar(
            centers[has],
            (conf - acc)[has],
            bottom=acc[has],
            width=1 / n_bins,
            color="r",
            alpha=0.35,
            label="gap to confidence",
        )
        ax.plot([0, 1], [0, 1], "k--", linewidth=0.8)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_title(f"{name}\nECE {ece:.3f}", fontsize=8)
        ax.set_xlabel("confidence", fontsize=7)
        ax.tick_params(labelsize=6)
    axes[0, 0].set_ylabel("accuracy", fontsize=7)
    axes[0, 0].legend(fontsize=6, loc="upper left")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


def uncertainty_maps(
    images: Tensor,
    masks: Tensor,
    methods: Mapping[str, tuple[Tensor, Tensor]],
    path: str | Path,
    n: int = 4,
) -> Path:
    """Row 0: the first ``n`` images (decoy boxed); one row per Bayesian method: the mean
    attribution over posterior samples and its per-pixel std (the explanation's epistemic
    uncertainty), side by side; each map normalised to its own maximum."""
    plt = _plt()
    n = min(n, images.shape[0])
    rows = len(methods) + 1
    fig, axes = plt.subplots(
        rows, 2 * n + 1, figsize=(1.1 * (2 * n + 1), 1.3 * rows), squeeze=False
    )
    axes[0, 0].text(0.5, 0.5, "input", ha="center", va="center", fontsize=8)
    for j in range(n):
        axes[0, 1 + 2 * j].imshow(_image(images[j]), cmap="gray", vmin=0, vmax=1)
        _outline(axes[0, 1 + 2 * j], masks[j])
    for i, (name, (mean, std)) in enumerate(methods.items(), 1):
        axes[i, 0].text(0.5, 0.5, name, ha="center", va="center", fontsize=8)
        for j in range(n):
            axes[i, 1 + 2 * j].imshow(to_heatmap(mean[j]), cmap="inferno", vmin=0, vmax=1)
            axes[i, 2 + 2 * j].imshow(to_heatmap(std[j]), cmap="viridis", vmin=0, vmax=1)
            _outline(axes[i, 1 + 2 * j], masks[j])
            _outline(axes[i, 2 + 2 * j], masks[j])
            if i == 1:
                axes[i, 1 + 2 * j].set_title("mean", fontsize=7)
                axes[i, 2 + 2 * j].set_title("std", fontsize=7)
    for ax in axes.flat:
        ax.set_axis_off()
    fig.tight_layout()
    return _save(fig, path)


def training_curves(
    runs_by_method: Mapping[str, Sequence[str]], path: str | Path, title: str = ""
) -> Path | None:
    """Validation accuracy and training loss per epoch, one colour per method: the mean over
    folds as a line, the min-max range over folds as a band. None when no run logged curves."""
    panels = (("val/acc", "validation accuracy"), ("val/loss", "validation loss"))
    data: dict[str, dict[str, list[np.ndarray]]] = {}
    for method, run_dirs in runs_by_method.items():
        for run_dir in run_dirs:
            curves = read_curves(run_dir, [t for t, _ in panels])
            for tag, _ in panels:
                part = curves[curves["tag"] == tag].sort_values("step")
                if len(part):
                    data.setdefault(method, {}).setdefault(tag, []).append(part["value"].to_numpy())
    if not data:
        return None
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.2))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, (tag, label) in zip(axes, panels, strict=True):
        for c, (method, per_tag) in enumerate(data.items()):
            series = per_tag.get(tag)
            if not series:
                continue
            n = min(len(v) for v in series)
            stack = np.stack([v[:n] for v in series])
            x = np.arange(1, n + 1)
            color = colors[c % len(colors)]
            ax.plot(x, stack.mean(0), color=color, linewidth=1.2, label=f"{method} ({len(series)})")
            if len(series) > 1:
                ax.fill_between(x, stack.min(0), stack.max(0), color=color, alpha=0.2)
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("epoch", fontsize=8)
        if tag == "val/loss":
            ax.set_yscale("log")
    axes[0].legend(fontsize=7, title="method (folds)", title_fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return _save(fig, path)
