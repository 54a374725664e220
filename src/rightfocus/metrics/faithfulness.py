"""Faithfulness: deletion / insertion curves and their AUC, and DeepLIFT's log-odds change.

Deletion (Petsiuk et al. 2018, RISE): remove pixels in decreasing attribution order, replacing
them by a baseline, and track the target probability; a faithful attribution makes it fall
fast (low AUC). Insertion starts from the baseline and inserts pixels in the same order (high
AUC is good). All images and all steps are evaluated in large batches.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from rightfocus import hooks
from rightfocus._images import gaussian_blur
from rightfocus.metrics.explanation import magnitude

__all__ = ["PerturbationCurve", "baseline_image", "deletion", "insertion", "log_odds_change"]


@dataclass
class PerturbationCurve:
    """``scores`` (B, steps + 1) at pixel fractions ``fractions``; ``auc`` (B,) trapezoid."""

    fractions: Tensor
    scores: Tensor

    @property
    def auc(self) -> Tensor:
        return torch.trapezoid(self.scores, self.fractions.to(self.scores), dim=1)


def baseline_image(x: Tensor, kind: str = "zero", blur_sigma: float = 5.0) -> Tensor:
    """What removed pixels become: ``zero``, the per-image channel ``mean``, or a ``blur``."""
    if kind == "zero":
        return torch.zeros_like(x)
    if kind == "mean":
        return x.mean(dim=(2, 3), keepdim=True).expand_as(x).clone()
    if kind == "blur":
        return gaussian_blur(x, blur_sigma)
    raise ValueError(f"baseline must be 'zero', 'mean' or 'blur', got {kind!r}")


def _curve(
    model: nn.Module,
    x: Tensor,
    attr: Tensor,
    target: Tensor,
    steps: int,
    baseline: str,
    batch_size: int,
    insert: bool,
) -> PerturbationCurve:
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if x.dim() != 4 or x.shape[0] == 0:
        raise ValueError(f"x must be a non-empty (B, C, H, W) batch, got {tuple(x.shape)}")
    a = magnitude(attr)
    if a.shape[0] != x.shape[0] or a.shape[-2:] != x.shape[-2:]:
        raise ValueError(f"attributions {tuple(attr.shape)} do not match images {tuple(x.shape)}")
    B, _, H, W = x.shape
    n = H * W
    rank = torch.empty(B, n, dtype=torch.long, device=x.device)
    order = a.flatten(1).argsort(dim=1, descending=True)
    rank.scatter_(1, order, torch.arange(n, device=x.device).expand(B, n))
    counts = torch.round(torch.linspace(0, n, steps + 1, device=x.device)).long()
    base = baseline_image(x, baseline)
    target = target.to(x.device).long()
    scores = torch.empty(B, steps + 1, dtype=x.dtype, device=x.device)
    pairs = [(b, s) for s in range(steps + 1) for b in range(B)]
    with torch.no_grad(), hooks.eval_mode(model):
        for start in range(0, len(pairs), batch_size):
            chunk = pairs[start : start + batch_size]
            bi = torch.tensor([p[0] for p in chunk], device=x.device)
            si = torch.tensor([p[1] for p in chunk], device=x.device)
            changed = (rank[bi] < counts[si][:, None]).view(-1, 1, H, W)
            keep_x = ~changed if not insert else changed
            imgs = torch.where(keep_x, x[bi], base[bi])
            probs = model(imgs).softmax(dim=-1)
            scores[bi, si] = probs.gather(1, target[bi][:, None]).squeeze(1)
    return PerturbationCurve(counts.to(x.dtype) / n, scores)


def deletion(
    model: nn.Module,
    x: Tensor,
    attr: Tensor,
    target: Tensor,
    steps: int = 28,
    baseline: str = "zero",
    batch_size: int = 1024,
) -> PerturbationCurve:
    """Target probability as the top-attributed pixels are removed (``steps`` equal chunks)."""
    return _curve(model, x, attr, target, steps, baseline, batch_size, insert=False)


def insertion(
    model: nn.Module,
    x: Tensor,
    attr: Tensor,
    target: Tensor,
    steps: int = 28,
    baseline: str = "blur",
    batch_size: int = 1024,
) -> PerturbationCurve:
    """Target probability as the top-attributed pixels are inserted into the baseline."""
    return _curve(model, x, attr, target, steps, baseline, batch_size, insert=True)


def log_odds_change(
    model: nn.Module, x: Tensor, attr: Tensor, target: Tensor, k: int, baseline: str = "zero"
) -> Tensor:
    """DeepLIFT-style pixel erasure: ``logodds(x) - logodds(x with top-k pixels erased)``,
    ``logodds = log p_c - log(1 - p_c)``, per image (higher: more faithful)."""
    n = x.shape[-2] * x.shape[-1]
    if not 0 < k <= n:
        raise ValueError(f"k must be in 1..{n}, got {k}")
    a = magnitude(attr).flatten(1)
    if a.shape[0] != x.shape[0] or a.shape[1] != n:
        raise ValueError(f"attributions {tuple(attr.shape)} do not match images {tuple(x.shape)}")
    target = target.to(x.device).long()[:, None]
    top = a.topk(k, dim=1).indices
    erased_mask = torch.zeros_like(a, dtype=torch.bool).scatter_(1, top, True)
    erased_mask = erased_mask.view(-1, 1, *x.shape[-2:])
    erased = torch.where(erased_mask, baseline_image(x, baseline), x)
    with torch.no_grad(), hooks.eval_mode(model):
        p0 = model(x).softmax(-1).gather(1, target).squeeze(1).clamp(1e-7, 1 - 1e-7)
        p1 = model(erased).softmax(-1).gather(1, target).squeeze(1).clamp(1e-7, 1 - 1e-7)
    return (p0.log() - (1 - p0).log()) - (p1.log() - (1 - p1).log())
