"""RISE vs a slow per-mask loop written from the paper; seeding; a model that sees one quadrant."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from rightfocus import attribute
from rightfocus.attribution.rise import RISE


def ref_rise(
    model: nn.Module, x: torch.Tensor, target: torch.Tensor, masks: torch.Tensor, p: float
) -> torch.Tensor:
    """Petsiuk et al. 2018, Eq. 6: ``S_c = 1/(N p) sum_i f_c(x ⊙ M_i) M_i``, one mask at a time."""
    out = torch.zeros(x.shape[0], 1, *x.shape[2:], dtype=x.dtype)
    for i in range(x.shape[0]):
        for m in masks:
            with torch.no_grad():
                prob = model((x[i] * m).unsqueeze(0)).softmax(dim=1)[0, target[i]]
            out[i] += prob * m
    return out / (masks.shape[0] * p)


def test_batched_equals_per_mask_loop(make_tiny_cnn: type[nn.Module]):
    model = make_tiny_cnn(in_channels=2, classes=3).double().eval()
    x = torch.rand(3, 2, 9, 11, dtype=torch.float64)
    target = torch.tensor([2, 0, 1])
    method = RISE(n_masks=20, grid_size=4, p=0.3, seed=7, internal_batch_size=7)
    masks = method.masks(9, 11, dtype=torch.float64)
    assert masks.shape == (20, 1, 9, 11)
    assert float(masks.min()) >= 0 and float(masks.max()) <= 1
    torch.testing.assert_close(method(model, x, target), ref_rise(model, x, target, masks, 0.3))


def test_masks_follow_the_paper():
    method = RISE(n_masks=400, grid_size=5, p=0.25, seed=0)
    grids, fractions = method.draws()
    assert set(grids.unique().tolist()) <= {0.0, 1.0}
    assert abs(float(grids.mean()) - 0.25) < 0.03
    masks = method.masks(20, 20, dtype=torch.float64)
    # each mask is a bilinear upsampling of its grid, cropped: mean close to the grid's mean
    assert abs(float(masks.mean()) - float(grids.mean())) < 0.03
    cell = math.ceil(20 / 5)
    shifts = (fractions * cell).long()
    assert int(shifts.min()) == 0 and int(shifts.max()) == cell - 1


def test_seeded(make_tiny_cnn: type[nn.Module]):
    model = make_tiny_cnn(in_channels=1, classes=3).double().eval()
    x = torch.rand(2, 1, 8, 8, dtype=torch.float64)
    first = attribute(model, x, None, "rise", n_masks=16, seed=1)
    torch.manual_seed(99)
    torch.testing.assert_close(attribute(model, x, None, "rise", n_masks=16, seed=1), first)
    assert not torch.equal(attribute(model, x, None, "rise", n_masks=16, seed=2), first)


class TopLeft(nn.Module):
    """Logit of class 0 = 4 * (mean of the top-left quadrant - 1/2); class 1 is constant."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[2] // 2, x.shape[3] // 2
        score = 4 * (x[:, :, :h, :w].mean(dim=(1, 2, 3)) - 0.5)
        return torch.stack([score, torch.zeros_like(score)], dim=1)


@pytest.mark.parametrize("scores", ["probability", "logit"])
def test_saliency_highest_in_the_quadrant_the_model_sees(scores):
    x = torch.rand(2, 3, 16, 16, dtype=torch.float64) + 0.5
    sal = attribute(TopLeft(), x, 0, "rise", n_masks=300, grid_size=4, seed=0, scores=scores)
    assert sal.shape == (2, 1, 16, 16)
    quadrants = [sal[:, 0, :8, :8], sal[:, 0, :8, 8:], sal[:, 0, 8:, :8], sal[:, 0, 8:, 8:]]
    means = torch.stack([q.mean(dim=(1, 2)) for q in quadrants], dim=1)
    others = means[:, 1:]
    gap = means[:, 0] - others.max(dim=1).values
    spread = others.max(dim=1).values - others.min(dim=1).values
    assert bool((gap > 2 * spread).all()), means  # top-left clearly first, the rest alike


def test_bad_options(make_tiny_cnn: type[nn.Module]):
    with pytest.raises(ValueError, match="n_masks"):
        RISE(n_masks=0)
    with pytest.raises(ValueError, match="p must be"):
        RISE(p=0.0)
    with pytest.raises(ValueError, match="scores"):
        RISE(scores="softmax")
    x = torch.rand(1, 1, 8, 8, dtype=torch.float64)
    with pytest.raises(ValueError, match="cannot be broadcast"):
        attribute(
            make_tiny_cnn().double(), x, 0, "rise", n_masks=2, seed=0, baseline=torch.ones(3, 3)
        )
