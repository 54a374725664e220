"""Overlap, pointing game, relevance mass/rank and deletion/insertion on hand-made inputs."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from rightfocus.metrics.explanation import overlap, pointing_game, relevance_mass, relevance_rank
from rightfocus.metrics.faithfulness import deletion, insertion, log_odds_change


def _mask() -> torch.Tensor:
    m = torch.zeros(1, 1, 8, 8)
    m[..., :4, :4] = 1
    return m


def test_overlap_known_answers() -> None:
    mask = _mask()
    inside = mask.clone() * 3.0
    assert float(overlap(inside, mask)) == pytest.approx(1.0)
    assert float(overlap(1 - mask, mask)) == pytest.approx(0.0)
    half = torch.ones(1, 3, 8, 8) * 0.5  # uniform over 3 channels: 16/64 inside
    assert float(overlap(half, mask)) == pytest.approx(0.25)
    signed = torch.where(mask.bool(), -2.0, 0.0)  # magnitudes count
    assert float(overlap(signed, mask)) == pytest.approx(1.0)
    assert overlap(torch.cat([inside, 1 - mask]), torch.cat([mask, mask]), "mean") == pytest.approx(
        0.5
    )


def test_pointing_game_relevance_mass_and_rank() -> None:
    region = _mask()
    attr = torch.zeros(1, 1, 8, 8)
    attr[0, 0, 1, 1] = 5.0
    assert float(pointing_game(attr, region, tolerance=0)) == 1.0
    far = torch.zeros(1, 1, 8, 8)
    far[0, 0, 7, 7] = 5.0
    assert float(pointing_game(far, region, tolerance=0)) == 0.0
    assert float(pointing_game(far, region, tolerance=3)) == 0.0  # 4 px (Chebyshev) from (3, 3)
    assert float(pointing_game(far, region, tolerance=4)) == 1.0
    assert float(relevance_mass(attr, region)) == pytest.approx(1.0)
    ranked = torch.arange(64.0).view(1, 1, 8, 8)  # top 16 pixels are rows 6-7
    assert float(relevance_rank(ranked, region)) == 0.0
    assert float(relevance_rank(ranked.flip(-1).flip(-2), region)) == pytest.approx(0.5)


class _Sum(nn.Module):
    """Logit of class 1 = 4 * mean of the top-left quadrant; class 0 = 0."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x[:, :, :4, :4].mean(dim=(1, 2, 3)) * 4
        return torch.stack([torch.zeros_like(s), s], dim=1)


def test_perfect_ordering_gives_best_deletion_and_insertion_auc() -> None:
    x = torch.ones(2, 1, 8, 8)
    target = torch.ones(2, dtype=torch.long)
    good = _mask().repeat(2, 1, 1, 1) + 0.01 * torch.rand(2, 1, 8, 8)
    bad = (1 - _mask()).repeat(2, 1, 1, 1) + 0.01 * torch.rand(2, 1, 8, 8)
    model = _Sum()
    d_good, d_bad = (
        deletion(model, x, good, target, steps=16),
        deletion(model, x, bad, target, steps=16),
    )
    assert bool((d_good.auc < d_bad.auc).all())
    i_good = insertion(model, x, good, target, steps=16, baseline="zero")
    i_bad = insertion(model, x, bad, target, steps=16, baseline="zero")
    assert bool((i_good.auc > i_bad.auc).all())
    assert d_good.scores.shape == (2, 17)
    # Batched result equals a per-image computation.
    single = deletion(model, x[:1], good[:1], target[:1], steps=16, batch_size=3)
    assert torch.allclose(single.scores, d_good.scores[:1])
    assert bool(
        (
            log_odds_change(model, x, good, target, k=16)
            > log_odds_change(model, x, bad, target, k=16)
        ).all()
    )


def test_mismatched_shapes_are_clear_errors() -> None:
    with pytest.raises(ValueError, match="does not match"):
        overlap(torch.ones(2, 1, 8, 8), torch.ones(2, 1, 4, 4))
    with pytest.raises(ValueError, match="empty"):
        overlap(torch.ones(0, 1, 8, 8), torch.ones(0, 1, 8, 8))
    with pytest.raises(ValueError, match="NaN"):
        overlap(torch.full((1, 1, 8, 8), float("nan")), _mask())
