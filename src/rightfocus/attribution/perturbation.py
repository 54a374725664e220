"""Perturbation methods: explain with forward passes only.

``occlusion`` (Zeiler & Fergus 2014) slides an occluding window over the image and records how
much the target score drops.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from rightfocus.attribution.base import (
    Attribution,
    broadcast_baseline,
    copies_per_pass,
    images_per_pass,
    parse_bytes,
    pass_size_option,
    register_method,
    renamed_option,
    split_batch,
)
from rightfocus.attribution.targets import Target, fix_target, select

__all__ = ["Occlusion", "occlusion_windows"]


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


OCCLUSION_PASS_ELEMENTS = 2**19
"""Occlusion's ``auto`` pass size: its passes are forward-only (no autograd graph), and twice
the gradient methods' size ran fastest on LeNet-5 (7x7 windows, batch 256: 512 images per
pass 3,156 img/s, 256 2,941, 1,024 1,726; ``python benchmarks/pass_size.py``)."""


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
        internal_batch_size: occluded images per forward pass, or ``"auto"`` (default: see
            :func:`rightfocus.attribution.base.images_per_pass`). ``perturbations_per_eval``
            (Captum's name, copies of the batch per pass) is the deprecated form.
        memory_budget: bytes (or ``"2GB"``) for ``auto``.

    Several targets (a ``(B, K)`` class tensor) are scored from the same occluded passes.
    """

    model_agnostic = True

    def __init__(
        self,
        *,
        window: int | Sequence[int] = (8, 8),
        strides: int | Sequence[int] | None = None,
        baseline: float | Tensor = 0.0,
        internal_batch_size: int | str | None = "auto",
        memory_budget: int | str | None = None,
        eval_mode: bool | None = None,
        **deprecated: Any,
    ) -> None:
        super().__init__(eval_mode=eval_mode)
        self._copies: int | None = None
        if "perturbations_per_eval" in deprecated:
            ppe = renamed_option(deprecated, "perturbations_per_eval")
            if isinstance(ppe, bool) or not isinstance(ppe, int) or ppe < 1:
                raise ValueError(f"perturbations_per_eval must be >= 1, got {ppe!r}")
            self._copies = ppe
        if deprecated:
            raise TypeError(f"Occlusion got unexpected options {sorted(deprecated)}")
        if memory_budget is not None:
            parse_bytes(memory_budget)
        _triple(window, 1, "window")
        if strides is not None:
            _triple(strides, 1, "strides")
        self.window = window
        self.strides = strides
        self.baseline = baseline
        self.internal_batch_size = pass_size_option(internal_batch_size)
        self.memory_budget = memory_budget

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
        return self._attribute_multi(model, x, target)

    def _attribute_multi(self, model: nn.Module, x: Tensor, targets: Target) -> Tensor:
        B = x.shape[0]
        if self._copies is not None:
            images = self._copies * B
        else:
            images = images_per_pass(
                self.internal_batch_size, model, x, self.memory_budget,
                pass_elements=OCCLUSION_PASS_ELEMENTS,
            )  # fmt: skip
        if images < B:
            return split_batch(lambda xs, ts: self._occlude(model, xs, ts, images), x, targets,
                               images)  # fmt: skip
        return self._occlude(model, x, targets, images)

    def _occlude(self, model: nn.Module, x: Tensor, target: Any, images: int) -> Tensor:
        windows = self._geometry(x)
        base = self._baseline(x)
        B = x.shape[0]
        per_pass = copies_per_pass(images, B, len(windows))
        with torch.no_grad():
            outputs = model(x)
            fixed = fix_target(outputs, target)
            score = select(outputs, fixed)  # (B,) or (B, K)
            extra = score.shape[1:]
            total = x.new_zeros(B, *extra, *x.shape[1:])
            counts = torch.zeros(x.shape[1:], dtype=x.dtype, device=x.device)
            for start in range(0, len(windows), per_pass):
                chunk = windows[start : start + per_pass]
                masks = torch.zeros((len(chunk), *x.shape[1:]), dtype=x.dtype, device=x.device)
                for m, sl in zip(masks, chunk):
                    m[sl] = 1.0
                drop = self._score_drops(model, x, base, masks, fixed, score)
                total += torch.einsum("kb...,kchw->b...chw", drop, masks)
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
        """``S_c(x) - S_c(x_W)`` for every window ``W`` in ``masks``: ``(k, B)`` / ``(k, B, K)``."""
        k, B = masks.shape[0], x.shape[0]
        m = masks.unsqueeze(1)
        occluded = (x.unsqueeze(0) + m * (base - x).unsqueeze(0)).reshape(k * B, *x.shape[1:])
        if isinstance(fixed, Tensor):
            tgt: Any = fixed.repeat(k, 1) if fixed.dim() == 2 else fixed.repeat(k)
        else:
            tgt = fixed
        return score.unsqueeze(0) - select(model(occluded), tgt).view(k, *score.shape)
