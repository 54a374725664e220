"""Tiny, random-weight members of every model family (built through the registered zoo)."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

pytest.importorskip("timm")

from rightfocus.models import build_model

VIT: dict[str, Any] = {
    "image_size": 32,
    "patch_size": 8,
    "embed_dim": 32,
    "depth": 2,
    "num_heads": 2,
}
# (registered zoo name, options): small enough for the whole matrix to stay fast
TINY: dict[str, tuple[str, dict[str, Any]]] = {
    "convnext": ("convnext_atto", {"dims": (8, 16, 24, 32), "depths": (1, 1, 1, 1)}),
    "mobilenetv3": ("mobilenetv3_small_050", {}),
    "regnet": ("regnetx_002", {}),
    "densenet": (
        "densenet",
        {"growth_rate": 4, "block_config": (2, 2), "num_init_features": 8, "bn_size": 2},
    ),
    "resnet18": ("resnet18", {"image_size": 32}),
    "vit": ("vit", VIT),
    "deit": ("deit_distilled", VIT),
    "swin": (
        "swin",
        {
            "image_size": 32,
            "patch_size": 4,
            "window_size": 4,
            "embed_dim": 16,
            "depths": (1, 1),
            "num_heads": (1, 2),
        },
    ),
}
# heavier members, used only in tests marked slow
HEAVY: dict[str, tuple[str, dict[str, Any]]] = {
    "efficientnet": ("efficientnet_b0", {}),
    "resnet50": ("resnet50", {}),
}
TRANSFORMERS = ("vit", "deit", "swin")
CLASSES = 5


def build(family: str, dtype: torch.dtype = torch.float32, seed: int = 0) -> nn.Module:
    name, options = {**TINY, **HEAVY}[family]
    torch.manual_seed(seed)
    model = build_model(name, num_classes=CLASSES, **options)
    return model.to(dtype).eval()


def batch(b: int = 2, dtype: torch.dtype = torch.float32, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 3, 32, 32, generator=g, dtype=torch.float64).to(dtype)
