"""Perturbation methods: explain with forward passes only.

``occlusion`` (Zeiler & Fergus 2014) slides an occluding window over the image and records how
much the target score drops.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from rightfocus.attribution.base import Attribution, broadcast_baseline, register_method
from rightfocus.attribution.targets import Target, fix_target, select

__all__ = ["Occlusion", "occlusion_windows"]

_MAX_IMAGES_PER_PASS = 512


def _triple(value: int | Sequence[int], channels: int, name: str) -> tuple[int, int, int]:
    """``(h, w)`` -> ``(channels, h, w)``; an int ``k`` -> ``(channels, k, k)``."""
    vals = (value, value) if isinstance(value, int) else tuple(value)
    if len(vals) == 2:
        vals = (channels, *vals)
    if len(vals) != 3 or not all(isinstance(v, int) and v >= 1 for v in vals):
        raise ValueError(
            f"{name} must be a positive int, (h, w) or (c, h, w) of positive ints, got {value!r}"
        )
    return vals  # type: ignore[return-value]


def occlusion_windows(
    shape: Sequence[int], window: Sequence[int], strides: Sequence[int]
) -> list[tuple[slice, slice, slice]]:
    """Index slices ``(c, h, w)`` of every window position over an image of ``shape``.

    Windows start at multiples of the stride; along each axis there are
    ``ceil((size - window) / stride) + 1`` positions and the last one is cut at the border (as
    Captum's ``Occlusion``), so every pixel is covered when ``stride <= window``.
    """
    axes = []
    for size, win, step in zip(shape, window, strides):
        if win > size:
            raise ValueError(f"The window {tuple(window)} is larger than the image {tuple(shape)}")
        if step > win and win < size:
            raise ValueError(
                f"A stride {tuple(strides)} larger than the window {tuple(window)} leaves pixels "
                "that are never occluded; use strides <= window"
            )
        count = math.ceil((size - win) / step) + 1
        axes.append([slice(i * step, min(i * step + win, size)) for i in range(count)])
    return [(c, h, w) for c in axes[0] for h in axes[1] for w in axes[2]]


@register_method("occlusion")
class Occlusion(Attribution):
    """Occlusion (Zeiler & Fergus 2014, "Visualizing and understanding convolutional networks").

    For each window position ``W`` the occluded image ``x_W`` has ``baseline`` inside ``W``; the
    attribution of pixel ``p`` is the mean score drop over the windows covering it,
    ``A_p = mean_{W ∋ p} (S_c(x) - S_c(x_W))``. Matches Captum's ``Occlusion``.

    Args:
        window: ``(h, w)`` (all channels), ``(c, h, w)`` or an int ``k`` for ``(k, k)``.
        strides: same forms as ``window`` (an int or ``(h, w)`` keeps the channel stride at
            1 or the window's channel extent); default: half the window (rounded up), i.e.
            neighbouring windows overlap by half. Captum's default is 1.
        baseline: the occluder's value, a number or a tensor broadcastable to ``x``.
        perturbations_per_eval: occluded copies of the batch per forward pass (default: as many
            as keep a pass at or below 512 images).
    """

    model_agnostic = True

    def __init__(
        self,
        *,
        window: int | Sequence[int] = (8, 8),
        strides: int | Sequence[int] | None = None,
        baseline: float | Tensor = 0.0,
        perturbations_per_eval: int | None = None,
        eval_mode: bool | None = None,
    ) -> None:
        super().__init__(eval_mode=eval_mode)
        if perturbations_per_eval is not None and perturbations_per_eval < 1:
            raise ValueError(f"perturbations_per_eval must be >= 1, got {perturbations_per_eval}")
        _triple(window, 1, "window")
        if strides is not None:
            _triple(strides, 1, "strides")
        self.window = window
        self.strides = strides
        self.baseline = baseline
        self.perturbations_per_eval = perturbations_per_eval

    def _geometry(self, x: Tensor) -> list[tuple[slice, slice, slice]]:
        C = x.shape[1]
        window = _triple(self.window, C, "window")
        if self.strides is None:
            strides = (window[0], *(max(1, math.ceil(w / 2)) for w in window[1:]))
        else:
            strides = _triple(self.strides, 1, "strides")
            if not isinstance(self.strides, int) and len(tuple(self.strides)) == 2:
                strides = (window[0], *strides[1:])
        return occlusion_windows(x.shape[1:], window, strides)

    def _baseline(self, x: Tensor) -> Tensor:
        return broadcast_baseline(self.baseline, x)

    def _attribute(self, model: nn.Module, x: Tensor, target: Target) -> Tensor:
        windows = self._geometry(x)
        base = self._baseline(x)
        B = x.shape[0]
        per_pass = self.perturbations_per_eval or max(1, _MAX_IMAGES_PER_PASS // B)
        with torch.no_grad():
            outputs = model(x)
            fixed = fix_target(outputs, target)
            score = select(outputs, fixed)
            total = torch.zeros_like(x)
            counts = torch.zeros(x.shape[1:], dtype=x.dtype, device=x.device)
            for start in range(0, len(windows), per_pass):
                chunk = windows[start : start + per_pass]
                masks = torch.zeros((len(chunk), *x.shape[1:]), dtype=x.dtype, device=x.device)
                for m, sl in zip(masks, chunk):
                    m[sl] = 1.0
                drop = self._score_drops(model, x, base, masks, fixed, score)
                total += torch.einsum("kb,kchw->bchw", drop, masks)
                counts += masks.sum(dim=0)
        return total / counts

    @staticmethod
    def _score_drops(
        model: nn.Module,
        x: Tensor,
        base: Tensor,
        masks: Tensor,
        fixed: Tensor | Callable[[Tensor], Tensor],
        score: Tensor,
    ) -> Tensor:
        """``S_c(x) - S_c(x_W)`` for every window ``W`` in ``masks``, shape ``(k, B)``."""
        k, B = masks.shape[0], x.shape[0]
        m = masks.unsqueeze(1)
        occluded = (x.unsqueeze(0) + m * (base - x).unsqueeze(0)).reshape(k * B, *x.shape[1:])
        tgt = fixed.repeat(k) if isinstance(fixed, Tensor) else fixed
        return score.unsqueeze(0) - select(model(occluded), tgt).view(k, B)
