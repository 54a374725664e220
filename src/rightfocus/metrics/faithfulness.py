"""Faithfulness: deletion / insertion curves and their AUC, and DeepLIFT's log-odds change.

Deletion (Petsiuk et al. 2018, RISE): remove pixels in decreasing attribution order, replacing
them by a baseline, and track the target probability; a faithful attribution makes it fall
fast (low AUC). Insertion starts from the baseline and inserts pixels in the same order (high
AUC is good). All images and all steps are evaluated in large batches; a step that changes no
pixel of an image (every pixel it removes already equals the baseline) reuses the previous
step's score instead of running the model again.
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
    """The perturbation curve of every image, scored in batches of ``batch_size`` images.

    Step ``s`` of image ``b`` changes the pixels ranked ``counts[s-1] .. counts[s]-1``; when all
    of them already equal the baseline (background pixels deleted into a zero baseline, say),
    the image is the one of step ``s-1``, so it is not scored again: its score is copied. All
    other (image, step) pairs are scored in order, ``batch_size`` per forward pass, under
    ``torch.inference_mode``.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if x.dim() != 4 or x.shape[0] == 0:
        raise ValueError(f"x must be a non-empty (B, C, H, W) batch, got {tuple(x.shape)}")
    a = magnitude(attr)
    if a.shape[0] != x.shape[0] or a.shape[-2:] != x.shape[-2:]:
        raise ValueError(f"attributions {tuple(attr.shape)} do not match images {tuple(x.shape)}")
    B, _, H, W = x.shape
    n = H * W
    device = x.device
    rank = torch.empty(B, n, dtype=torch.long, device=device)
    order = a.flatten(1).argsort(dim=1, descending=True)
    rank.scatter_(1, order, torch.arange(n, device=device).expand(B, n))
    counts = torch.round(torch.linspace(0, n, steps + 1, device=device)).long()
    base = baseline_image(x, baseline)
    target = target.to(device).long()
    # pixels (in removal order) where the image differs from the baseline; step s changes the
    # image iff one of its pixels does
    differs = (x != base).any(dim=1).flatten(1).gather(1, order).long().cumsum(dim=1)
    seen = torch.cat([differs.new_zeros(B, 1), differs[:, counts[1:] - 1]], dim=1)
    new = torch.ones(B, steps + 1, dtype=torch.bool, device=device)
    new[:, 1:] = seen[:, 1:] != seen[:, :-1]
    bi, si = new.nonzero(as_tuple=True)  # (image, step) pairs to score, image-major
    scores = torch.zeros(B, steps + 1, dtype=x.dtype, device=device)
    with torch.inference_mode(), hooks.eval_mode(model):
        for start in range(0, bi.shape[0], batch_size):
            b, s = bi[start : start + batch_size], si[start : start + batch_size]
            changed = (rank[b] < counts[s][:, None]).view(-1, 1, H, W)
            imgs = torch.where(changed if insert else ~changed, x[b], base[b])
            probs = model(imgs).softmax(dim=-1)
            scores[b, s] = probs.gather(1, target[b][:, None]).squeeze(1).to(x.dtype)
    # an unscored step repeats the score of the last scored step of its image
    last = torch.where(new, torch.arange(steps + 1, device=device), 0).cummax(dim=1).values
    return PerturbationCurve(counts.to(x.dtype) / n, scores.gather(1, last))


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
