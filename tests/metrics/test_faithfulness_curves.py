"""Deletion / insertion curves vs a slow reference written from the definition (Petsiuk et al.
2018): one image and one step at a time, every step scored by the model."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from rightfocus.metrics.faithfulness import baseline_image, deletion, insertion


def reference_curve(model, x, attr, target, steps, baseline, insert) -> Tensor:
    B, _, H, W = x.shape
    n = H * W
    counts = torch.round(torch.linspace(0, n, steps + 1)).long()
    base = baseline_image(x, baseline)
    out = torch.empty(B, steps + 1, dtype=x.dtype)
    with torch.no_grad():
        for i in range(B):
            order = attr[i].abs().sum(0).flatten().argsort(descending=True)
            for s in range(steps + 1):
                moved = torch.zeros(n, dtype=torch.bool)
                moved[order[: counts[s]]] = True
                moved = moved.view(1, H, W)
                img = (
                    torch.where(moved, base[i], x[i])
                    if not insert
                    else torch.where(moved, x[i], base[i])
                )
                out[i, s] = model(img[None]).softmax(-1)[0, target[i]]
    return out


@pytest.fixture
def case() -> tuple[nn.Module, Tensor, Tensor, Tensor]:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 5)
    ).double()
    x = torch.rand(4, 2, 6, 6, dtype=torch.float64)
    x[:, :, :3] = 0.0  # a zero background: many deletion steps change nothing
    x[1] = 0.0  # an all-background image
    attr = torch.randn(4, 2, 6, 6, dtype=torch.float64)
    return model, x, attr, torch.tensor([0, 1, 2, 4])


@pytest.mark.parametrize("baseline", ["zero", "mean", "blur"])
def test_curves_match_the_one_at_a_time_reference(case, baseline):
    model, x, attr, t = case
    # one step; one pixel per step on the zero baseline (most steps reuse a score there)
    for steps in (1, 36 if baseline == "zero" else 12):
        for fn, insert in ((deletion, False), (insertion, True)):
            expected = reference_curve(model, x, attr, t, steps, baseline, insert)
            for batch_size in (3, 1024):
                curve = fn(model, x, attr, t, steps=steps, baseline=baseline, batch_size=batch_size)
                torch.testing.assert_close(curve.scores, expected, rtol=1e-12, atol=1e-12)
                assert curve.fractions[0] == 0 and curve.fractions[-1] == 1


def test_unchanged_steps_are_not_scored_again(case):
    """Steps that only delete background pixels into a zero baseline reuse the last score."""
    model, x, attr, t = case
    seen: list[int] = []
    hook = model.register_forward_pre_hook(lambda _m, inp: seen.append(inp[0].shape[0]))
    try:
        deletion(model, x, attr, t, steps=36, baseline="zero")
    finally:
        hook.remove()
    nonzero = int((x != 0).any(dim=1).flatten(1).sum())  # one new image per non-zero pixel
    assert sum(seen) == x.shape[0] + nonzero < x.shape[0] * 37
