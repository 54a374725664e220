"""PNG rendering for the studio: the image as shown, heatmap overlays, masks."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

__all__ = ["heatmap_png", "image_png", "png_bytes", "to_display"]


def to_display(image: Tensor, normalization: Any = None) -> np.ndarray:
    """``(C, H, W)`` model input -> uint8 ``(H, W, 3)`` for the screen (normalization undone,
    clipped to [0, 1])."""
    x = image.detach().float().cpu()
    if normalization is not None:
        mean, std = (torch.as_tensor(v, dtype=torch.float32).view(-1, 1, 1) for v in normalization)
        x = x * std + mean
    x = x.clamp(0, 1)
    if x.shape[0] == 1:
        x = x.expand(3, -1, -1)
    elif x.shape[0] != 3:
        x = x[:1].expand(3, -1, -1)
    return (x.permute(1, 2, 0).numpy() * 255.0 + 0.5).astype(np.uint8)


def png_bytes(arr: np.ndarray) -> bytes:
    """Encode a uint8 ``(H, W)``, ``(H, W, 3)`` or ``(H, W, 4)`` array as PNG."""
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def image_png(image: Tensor, normalization: Any = None) -> bytes:
    return png_bytes(to_display(image, normalization))


# A perceptually ordered ramp (transparent -> yellow -> red) for "where the model looks".
_STOPS = np.array([[0, 0, 0, 0], [255, 230, 0, 150], [255, 40, 0, 235]], dtype=np.float64)


def heatmap_png(attr: Tensor, signed: bool = False) -> bytes:
    """An RGBA heatmap PNG of an attribution ``(C, H, W)`` or ``(H, W)``.

    The map is ``sum_c |a_c|`` scaled by its maximum; ``signed=True`` keeps the sign (red
    positive, blue negative), scaled by the largest magnitude.
    """
    a = attr.detach().float().cpu()
    if a.dim() == 3:
        a = a.sum(0) if signed else a.abs().sum(0)
    a_np = a.numpy()
    if signed:
        m = float(np.abs(a_np).max()) or 1.0
        v = np.clip(a_np / m, -1, 1)
        rgba = np.zeros((*v.shape, 4), dtype=np.float64)
        rgba[..., 0] = np.where(v > 0, 255, 0)
        rgba[..., 2] = np.where(v < 0, 255, 0)
        rgba[..., 3] = np.abs(v) * 230
    else:
        m = float(a_np.max()) or 1.0
        v = np.clip(a_np / m, 0, 1) * (len(_STOPS) - 1)
        lo = np.floor(v).astype(int).clip(0, len(_STOPS) - 2)
        t = (v - lo)[..., None]
        rgba = _STOPS[lo] * (1 - t) + _STOPS[lo + 1] * t
    return png_bytes(rgba.round().astype(np.uint8))
