"""RISE: randomized input sampling for explanation (Petsiuk et al. 2018, BMVC).

``N`` random masks ``M_i``: a binary ``s x s`` grid whose cells are 1 with probability ``p``,
upsampled bilinearly to ``(s + 1) * ceil(H / s) x (s + 1) * ceil(W / s)`` and cropped to
``H x W`` at a uniformly random shift in ``[0, ceil(H / s)) x [0, ceil(W / s))``. The saliency is
the Monte-Carlo estimate of ``E[f_c(x ⊙ M) | M(p) = 1]``:
``S_c = 1 / (N p) * sum_i f_c(x ⊙ M_i) M_i``.

Randomness and batch independence: the grids and shifts come from a CPU ``torch.Generator``
seeded with ``seed`` alone (``None``: one seed drawn from torch's global generator per call)
and every image of the batch uses the same masks, so an image's saliency never depends on the
other images; masks are upsampled chunk by chunk, so memory stays bounded for large ``N``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rightfocus.attribution.base import (
    Attribution,
    broadcast_baseline,
    copies_per_pass,
    images_per_pass,
    pass_options,
    positive_int,
    register_method,
    split_batch,
)
from rightfocus.attribution.targets import Target, fix_target, select

__all__ = ["RISE", "rise_masks"]


def rise_masks(grids: Tensor, shifts: Tensor, height: int, width: int) -> Tensor:
    """Upsample binary ``grids (k, s, s)`` and crop at ``shifts (k, 2)``: masks ``(k, 1, H, W)``."""
    k, s = grids.shape[0], grids.shape[-1]
    ch, cw = math.ceil(height / s), math.ceil(width / s)
    up = F.interpolate(
        grids.unsqueeze(1), size=((s + 1) * ch, (s + 1) * cw), mode="bilinear",
        align_corners=False,
    )[:, 0]  # fmt: skip
    rows = shifts[:, 0, None] + torch.arange(height, device=grids.device)
    cols = shifts[:, 1, None] + torch.arange(width, device=grids.device)
    n = torch.arange(k, device=grids.device)[:, None, None]
    return up[n, rows[:, :, None], cols[:, None, :]].unsqueeze(1)


@register_method("rise")
class RISE(Attribution):
    """RISE (Petsiuk et al. 2018, "RISE: Randomized input sampling for explanation of black-box
    models"): ``S_c = 1 / (N p) sum_i f_c(x ⊙ M_i) M_i``, a ``(B, 1, H, W)`` map.

    Args:
        n_masks: ``N`` (the paper uses 4000 for ResNet-50 on ImageNet).
        grid_size: ``s``, cells per side of the random grid (paper: 7).
        p: probability that a cell is kept (paper: 0.5).
        baseline: what masked pixels become, ``x ⊙ M + b ⊙ (1 - M)``; the paper's 0 by
            default, a number or a tensor broadcastable to ``x``.
        scores: ``"probability"`` (softmax over the outputs, the paper's ``f_c``) or ``"logit"``
            (the raw outputs, as the other methods explain). A callable target receives the
            outputs after this transformation.
        seed: seeds the masks (``None``: drawn from torch's global generator).
        internal_batch_size: masked images per forward pass, or ``"auto"`` (default: see
            :func:`rightfocus.attribution.base.images_per_pass`).
        memory_budget: bytes (or ``"2GB"``) for ``auto``.

    Several targets (a ``(B, K)`` class tensor) are scored from the same masked passes.
    """

    model_agnostic = True
    stochastic = True
    output = "map"

    def __init__(
        self,
        *,
        n_masks: int = 4000,
        grid_size: int = 7,
        p: float = 0.5,
        baseline: float | Tensor = 0.0,
        scores: str = "probability",
        seed: int | None = None,
        internal_batch_size: int | str | None = "auto",
        memory_budget: int | str | None = None,
        eval_mode: bool | None = None,
    ) -> None:
        super().__init__(eval_mode=eval_mode)
        if not 0 < p <= 1:
            raise ValueError(f"p must be in (0, 1], got {p!r}")
        if scores not in ("probability", "logit"):
            raise ValueError(f"scores must be 'probability' or 'logit', got {scores!r}")
        self.n_masks = positive_int(n_masks, "n_masks")
        self.grid_size = positive_int(grid_size, "grid_size")
        self.p = float(p)
        self.baseline = baseline
        self.scores = scores
        self.seed = seed
        self.internal_batch_size, self.memory_budget = pass_options(
            internal_batch_size, memory_budget
        )

    def draws(self, seed: int | None = None) -> tuple[Tensor, Tensor]:
        """The random grids ``(N, s, s)`` (float64 in {0, 1}) and shifts ``(N, 2)`` in cells.

        Shifts are drawn as fractions in [0, 1) and scaled to ``ceil(size / s)`` by
        :meth:`masks`, so the same seed gives the same masks' layout at every image size.
        """
        seed = self.seed if seed is None else seed
        if seed is None:
            seed = int(torch.randint(0, 2**62, (1,)))
        gen = torch.Generator().manual_seed(seed)
        s = self.grid_size
        grids = torch.rand(self.n_masks, s, s, generator=gen, dtype=torch.float64) < self.p
        fractions = torch.rand(self.n_masks, 2, generator=gen, dtype=torch.float64)
        return grids.to(torch.float64), fractions

    def masks(
        self,
        height: int,
        width: int,
        *,
        seed: int | None = None,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ) -> Tensor:
        """All ``N`` masks ``(N, 1, H, W)`` used with ``seed`` (default: ``self.seed``)."""
        grids, fractions = self.draws(seed)
        return self._masks(grids, fractions, height, width, dtype, torch.device(device))

    def _masks(
        self, grids: Tensor, fractions: Tensor, height: int, width: int,
        dtype: torch.dtype, device: torch.device,
    ) -> Tensor:  # fmt: skip
        cells = torch.tensor(
            [math.ceil(height / self.grid_size), math.ceil(width / self.grid_size)],
            dtype=torch.float64,
        )
        shifts = (fractions * cells).long().clamp_max(cells.long() - 1)
        return rise_masks(grids.to(device, dtype), shifts.to(device), height, width)

    def _score(self, outputs: Tensor, target: Any) -> Tensor:
        if self.scores == "probability":
            if outputs.dim() != 2:
                raise ValueError(
                    f"scores='probability' needs (B, classes) outputs, got {tuple(outputs.shape)}"
                    "; use scores='logit' with a callable target"
                )
            outputs = outputs.softmax(dim=1)
        return select(outputs, target)

    def _attribute(self, model: nn.Module, x: Tensor, target: Target) -> Tensor:
        return self._attribute_multi(model, x, target)

    def _attribute_multi(self, model: nn.Module, x: Tensor, targets: Target) -> Tensor:
        draws = self.draws()
        images = images_per_pass(self.internal_batch_size, model, x, self.memory_budget)
        if images < x.shape[0]:
            return split_batch(lambda xs, ts: self._saliency(model, xs, ts, images, draws), x,
                               targets, images)  # fmt: skip
        return self._saliency(model, x, targets, images, draws)

    def _saliency(
        self, model: nn.Module, x: Tensor, target: Any, images: int, draws: tuple[Tensor, Tensor]
    ) -> Tensor:
        B, _, H, W = x.shape
        base = broadcast_baseline(self.baseline, x)
        grids, fractions = draws
        per_pass = copies_per_pass(images, B, self.n_masks)
        with torch.no_grad():
            fixed = fix_target(model(x), target)
            multi = isinstance(fixed, Tensor) and fixed.dim() == 2
            K = fixed.shape[1] if isinstance(fixed, Tensor) and multi else 1
            total = x.new_zeros(B, K, H, W)
            for start in range(0, self.n_masks, per_pass):
                stop = start + per_pass
                m = self._masks(grids[start:stop], fractions[start:stop], H, W, x.dtype, x.device)
                k = m.shape[0]
                masked = (base + m.unsqueeze(1) * (x - base)).reshape(k * B, *x.shape[1:])
                if isinstance(fixed, Tensor):
                    tgt: Any = fixed.repeat(k, 1) if multi else fixed.repeat(k)
                else:
                    tgt = fixed
                scores = self._score(model(masked), tgt).view(k, B, K)
                total += torch.einsum("kbt,khw->bthw", scores, m[:, 0])
        sal = total / (self.n_masks * self.p)
        return sal.unsqueeze(2) if multi else sal
