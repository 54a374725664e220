"""Right-for-the-right-reasons metrics: overlap with a "do not use" mask, pointing game,
relevance mass and relevance rank accuracy.

Attributions of shape ``(B, C, H, W)`` are reduced to a ``(B, 1, H, W)`` map of magnitudes by
summing ``|attr|`` over channels; masks are ``(B, 1, H, W)`` with the same spatial size.
Negative attributions count by their magnitude (the paper's overlap uses absolute input
gradients and ReLU'd Grad-CAM maps, for which this changes nothing). Mask values must lie in
[0, 1] (binary {0, 1} or soft weights); an 8-bit 0/255 mask is refused, not silently
mis-weighted.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from rightfocus.errors import UserError

__all__ = [
    "check_mask_values",
    "magnitude",
    "overlap",
    "pointing_game",
    "relevance_mass",
    "relevance_rank",
]


def magnitude(attr: Tensor, mask: Tensor | None = None) -> Tensor:
    """``sum_c |attr_c|`` as ``(B, 1, H, W)``; checks the mask's shape against it."""
    if not isinstance(attr, Tensor) or attr.dim() != 4:
        raise ValueError(f"attributions must be (B, C, H, W), got {getattr(attr, 'shape', attr)}")
    if attr.shape[0] == 0:
        raise ValueError("attributions are an empty batch")
    if not bool(torch.isfinite(attr).all()):
        raise ValueError("attributions contain NaN or Inf values")
    if mask is not None:
        if not isinstance(mask, Tensor) or mask.dim() != 4 or mask.shape[1] != 1:
            raise ValueError(f"mask must be (B, 1, H, W), got {getattr(mask, 'shape', mask)}")
        if mask.shape[0] != attr.shape[0] or mask.shape[-2:] != attr.shape[-2:]:
            raise ValueError(
                f"mask {tuple(mask.shape)} does not match attributions {tuple(attr.shape)}: "
                "same batch size and spatial size needed (upsample CAMs to the input first)"
            )
        check_mask_values(mask)
    return attr.abs().sum(dim=1, keepdim=True)


def check_mask_values(mask: Tensor, name: str = "mask") -> Tensor:
    """A mask must be finite with values in [0, 1] (1 = must not be used).

    Raises:
        UserError: NaN/Inf or values outside [0, 1], e.g. an 8-bit 0/255 mask.
    """
    if mask.numel() == 0:
        return mask
    m = mask.detach()
    if m.dtype == torch.bool:
        return mask
    if not bool(torch.isfinite(m).all()):
        raise UserError(f"{name} contains NaN or Inf values; masks hold values in [0, 1]")
    lo, hi = float(m.min()), float(m.max())
    if lo < 0 or hi > 1:
        hint = "divide an 8-bit 0/255 mask by 255" if hi > 1 else "clip it to [0, 1]"
        raise UserError(
            f"{name} values must lie in [0, 1] (1 = must not be used), got [{lo:g}, {hi:g}]",
            hint=hint,
        )
    return mask


def overlap(attr: Tensor, mask: Tensor, reduction: str = "none") -> Tensor:
    """Share of attribution on the masked region (paper's overlap; lower is better).

    ``overlap_n = sum(mask_n * |attr_n|) / (sum |attr_n| + 1e-8)`` per image; ``reduction``
    ``"none"`` returns ``(B,)``, ``"mean"`` the average.
    """
    a = magnitude(attr, mask)
    per = (a * mask.to(a)).flatten(1).sum(1) / (a.flatten(1).sum(1) + 1e-8)
    if reduction == "mean":
        return per.mean()
    if reduction != "none":
        raise ValueError(f"reduction must be 'none' or 'mean', got {reduction!r}")
    return per


def pointing_game(attr: Tensor, relevant: Tensor, tolerance: int = 15) -> Tensor:
    """Hit (1.0) if the attribution maximum is within ``tolerance`` pixels (square window) of the
    relevant region (Zhang et al. 2018, "Top-down Neural Attention by Excitation Backprop")."""
    a = magnitude(attr, relevant)
    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance}")
    region = relevant.to(a)
    if tolerance:
        region = F.max_pool2d(region, 2 * tolerance + 1, stride=1, padding=tolerance)
    idx = a.flatten(1).argmax(dim=1)
    return region.flatten(1).gather(1, idx[:, None]).squeeze(1).clamp(0, 1)


def relevance_mass(attr: Tensor, relevant: Tensor) -> Tensor:
    """Relevance mass accuracy (Arras et al. 2022): ``sum_in |R| / sum |R|`` per image."""
    return overlap(attr, relevant)


def relevance_rank(attr: Tensor, relevant: Tensor) -> Tensor:
    """Relevance rank accuracy (Arras et al. 2022): of the ``K = |region|`` top-ranked pixels,
    the fraction inside the region, per image (NaN for an empty region)."""
    a = magnitude(attr, relevant).flatten(1)
    region = relevant.flatten(1) > 0
    out = torch.full((a.shape[0],), float("nan"), dtype=a.dtype, device=a.device)
    for n in range(a.shape[0]):
        k = int(region[n].sum())
        if k:
            top = a[n].topk(k).indices
            out[n] = region[n, top].to(a.dtype).mean()
    return out
