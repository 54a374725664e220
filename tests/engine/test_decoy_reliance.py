"""Decoy-reliance probes: a model that reads only the decoy is caught by them."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from rightfocus.data.decoy_mnist import patch_masks
from rightfocus.engine.decoy import decoy_probes, reliance


class PositionReader(nn.Module):
    """Predicts the class whose decoy position holds the most ink (the position shortcut)."""

    masks: Tensor

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("masks", patch_masks("position").float().flatten(1))  # (10, 784)
        self.scale = nn.Parameter(torch.tensor(50.0))

    def forward(self, x: Tensor) -> Tensor:
        return self.scale * (x.flatten(1) @ self.masks.T) / 16.0


class GrayReader(nn.Module):
    """Predicts v from the uniform 4x4 patch's gray 255 - 25 v (the color shortcut)."""

    masks: Tensor

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("masks", patch_masks("color").float().flatten(1))
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, x: Tensor) -> Tensor:
        flat = x.flatten(1)
        mean = flat @ self.masks.T / 16.0  # (B, 10) per position
        var = (flat * flat) @ self.masks.T / 16.0 - mean**2
        patch = (var.abs() < 1e-6) & (mean > 0)  # the decoy is the one uniform, inked square
        gray = torch.where(patch, mean, torch.zeros_like(mean)).amax(1)
        v = ((1.0 - gray) * 255.0 / 25.0).round().clamp(0, 9).long()
        return nn.functional.one_hot(v, 10).float() * 20.0 + self.dummy


@pytest.mark.parametrize(
    ("variant", "model"), [("position", PositionReader), ("color", GrayReader)]
)
def test_a_decoy_reader_follows_the_decoy_and_fails_on_clean_digits(variant, model) -> None:
    probes = decoy_probes(variant, seed=3, limit=300)
    diag = reliance(model().eval(), probes, bayesian=False, mc_samples=1)
    assert diag["follows_decoy"] > 0.95  # chance 0.10
    assert diag["matching_accuracy"] > 0.9
    assert diag["clean_accuracy"] < 0.3


def test_probes_are_what_they_claim() -> None:
    probes = decoy_probes("position", seed=3, limit=50)
    clean, labels = probes["clean"]
    test, test_labels = probes["test"]
    assert torch.equal(labels, test_labels) and clean.shape == test.shape == (50, 1, 28, 28)
    blank, decoy_class = probes["blank"]
    positions = patch_masks("position").flatten(1).float()
    ink = blank.flatten(1) @ positions.T  # the only ink is the patch at position = class
    assert torch.equal((ink > 0).float().argmax(1), decoy_class)
    assert int((blank.flatten(1) > 0).sum(1).max()) <= 16
    matching, _ = probes["matching"]
    where = (matching - clean).abs().flatten(1) @ positions.T
    assert bool((where.argmax(1) == labels).float().mean() > 0.95)
