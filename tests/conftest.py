"""Shared fixtures: tiny models and data, seeded."""

from __future__ import annotations

import pytest
import torch
from torch import nn


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


class TinyCNN(nn.Module):
    """Two convs, ReLU modules, global average pool + linear head (CAM-compatible)."""

    def __init__(self, in_channels: int = 1, classes: int = 4, act: type[nn.Module] = nn.ReLU):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 4, 3, padding=1),
            act(),
            nn.Conv2d(4, 6, 3, padding=1),
            act(),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(6, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.features(x)).flatten(1))


@pytest.fixture
def tiny_cnn() -> nn.Module:
    return TinyCNN().double().eval()


@pytest.fixture
def tiny_batch() -> torch.Tensor:
    return torch.rand(3, 1, 8, 8, dtype=torch.float64)
