"""Counterexample augmentation: fresh noise only in the masked pixels of samples with feedback."""

from __future__ import annotations

import pytest
import torch

from rightfocus import GUIDANCE
from rightfocus.guidance import Counterexamples, GuidedBatch, guided_forward


def _batch(c: int = 1) -> GuidedBatch:
    x = torch.full((3, c, 6, 6), 0.5)
    mask = torch.zeros(3, 1, 6, 6)
    mask[0, 0, :2, :2] = 1
    mask[1, 0, 4:, :] = 1
    return GuidedBatch(x, torch.tensor([0, 1, 2]), mask)


def test_only_masked_pixels_of_samples_with_feedback_change() -> None:
    batch = _batch()
    out = Counterexamples(seed=0).transform(batch)
    changed = out.x != batch.x
    assert torch.equal(changed, batch.mask.bool())  # noise never hits 0.5 exactly here
    assert torch.equal(out.x[2], batch.x[2])
    noise = out.x[batch.mask.bool()]
    assert bool(((noise >= 0) & (noise < 1)).all())
    assert torch.equal(out.y, batch.y) and torch.equal(out.mask, batch.mask)


def test_noise_is_fresh_each_batch_and_seeded() -> None:
    batch = _batch()
    a = Counterexamples(seed=3)
    first, second = a.transform(batch).x, a.transform(batch).x
    assert not torch.equal(first, second)
    torch.testing.assert_close(Counterexamples(seed=3).transform(batch).x, first)


def test_rgb_noise_is_normalised_like_the_images() -> None:
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    batch = _batch(c=3)
    out = Counterexamples(seed=1, normalization=(mean, std)).transform(batch)
    gen = torch.Generator().manual_seed(1)
    u = torch.rand(batch.x.shape, generator=gen)
    expected = (u - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    sel = batch.mask.bool().expand_as(batch.x)
    torch.testing.assert_close(out.x[sel], expected[sel])
    torch.testing.assert_close(out.x[~sel], batch.x[~sel])


def test_no_loss_terms_and_forward_sees_the_noise() -> None:
    seen = []
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(36, 3))
    model.register_forward_pre_hook(lambda m, inp: seen.append(inp[0].detach().clone()))
    logits, out, terms = guided_forward(model, _batch(), [Counterexamples(seed=0)])
    assert terms == {} and logits.shape == (3, 3)
    assert torch.equal(seen[0], out.x)


def test_validation_and_registry() -> None:
    assert GUIDANCE.get("counterexamples") is Counterexamples
    with pytest.raises(ValueError, match="one value per channel"):
        Counterexamples(normalization=((0.5,), (0.2, 0.3)))
    with pytest.raises(ValueError, match="std"):
        Counterexamples(normalization=((0.5,), (0.0,)))
    with pytest.raises(ValueError, match="channels"):
        Counterexamples(normalization=((0.5, 0.5), (0.2, 0.2))).transform(_batch())
