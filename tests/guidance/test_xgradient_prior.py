"""X-Gradient attribution priors: masked penalty, Gini prior, one backward, homogeneity guard."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.func import functional_call, grad

from rightfocus import GUIDANCE
from rightfocus.guidance import GuidedBatch, XGradientPrior, guided_forward
from rightfocus.guidance.attribution_prior import gini, gini_pairwise


def _xdnn() -> nn.Module:
    """A bias-free ReLU CNN: positively homogeneous of degree 1."""
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1, bias=False),
        nn.ReLU(),
        nn.Conv2d(4, 4, 3, padding=1, bias=False),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 3, bias=False),
    ).double()


def _batch() -> GuidedBatch:
    x = torch.rand(4, 1, 6, 6, dtype=torch.float64)
    mask = torch.zeros(4, 1, 6, 6, dtype=torch.float64)
    mask[:2, :, :2, :] = 1
    return GuidedBatch(x, torch.tensor([0, 1, 2, 1]), mask)


def _reference_attr(model: nn.Module, batch: GuidedBatch) -> torch.Tensor:
    jac = torch.autograd.functional.jacobian(
        lambda x: model(x)[torch.arange(4), batch.y].sum(), batch.x
    )
    return batch.x * jac


def test_gini_matches_pairwise_definition() -> None:
    for v in (torch.rand(50, dtype=torch.float64), torch.rand(3, 4, dtype=torch.float64) ** 4):
        torch.testing.assert_close(gini(v), gini_pairwise(v))
    assert gini(torch.ones(10)).item() == pytest.approx(0.0, abs=1e-7)
    onehot = torch.zeros(10)
    onehot[3] = 5.0
    assert gini(onehot).item() == pytest.approx(1 - 1 / 10)


def test_masked_and_gini_terms_against_hand_computation() -> None:
    model, batch = _xdnn(), _batch()
    prior = XGradientPrior(lam=2.0, gini_lam=0.5, force=True)
    _, _, terms = guided_forward(model, batch, [prior])
    attr = _reference_attr(model, batch)
    torch.testing.assert_close(terms["xgrad_mask"], 2.0 * (batch.mask * attr).pow(2).sum())
    torch.testing.assert_close(terms["xgrad_gini"], -0.5 * gini_pairwise(attr.abs().mean(0)))


def test_parameter_gradient_matches_torch_func() -> None:
    model, batch = _xdnn(), _batch()
    params = {k: v.detach() for k, v in model.named_parameters()}

    def loss(p: dict[str, torch.Tensor]) -> torch.Tensor:
        def score(x: torch.Tensor) -> torch.Tensor:
            return functional_call(model, p, (x,))[torch.arange(4), batch.y].sum()

        attr = batch.x * grad(score)(batch.x)
        return (batch.mask * attr).pow(2).sum() - 0.1 * gini_pairwise(attr.abs().mean(0))

    expected = grad(loss)(params)
    _, _, terms = guided_forward(model, batch, [XGradientPrior(lam=1.0, gini_lam=0.1, force=True)])
    sum(terms.values()).backward()
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.grad, expected[name], msg=name)


def test_gini_only_needs_no_masks() -> None:
    model, b = _xdnn(), _batch()
    batch = GuidedBatch(b.x, b.y, torch.zeros_like(b.mask))
    _, _, terms = guided_forward(model, batch, [XGradientPrior(lam=0.0, gini_lam=1.0, force=True)])
    assert set(terms) == {"xgrad_gini"}


def test_validation() -> None:
    assert GUIDANCE.get("xgradient_prior") is XGradientPrior
    with pytest.raises(ValueError, match="at least one"):
        XGradientPrior(lam=0.0, gini_lam=0.0)
    with pytest.raises(ValueError, match="target"):
        XGradientPrior(target="all")


def test_refuses_non_homogeneous_model_unless_forced(make_tiny_cnn: type[nn.Module]) -> None:
    model, batch = make_tiny_cnn(classes=3).double(), _batch()
    with pytest.raises(ValueError, match="force=True"):
        XGradientPrior().check(model)
    with pytest.raises(ValueError, match="force=True"):
        guided_forward(model, batch, [XGradientPrior()])
    _, _, terms = guided_forward(model, batch, [XGradientPrior(force=True)])
    assert terms["xgrad_mask"] > 0
    XGradientPrior().check(_xdnn())  # a bias-free ReLU net passes
    _, _, terms = guided_forward(_xdnn(), batch, [XGradientPrior()])
    assert terms["xgrad_mask"] > 0


def test_dynamic_guard_catches_bias_free_but_non_homogeneous_model() -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(36, 3, bias=False), nn.Sigmoid()).double()
    XGradientPrior().check(model)  # no bias: the static check cannot tell
    with pytest.raises(ValueError, match="not positively homogeneous on this batch"):
        guided_forward(model, _batch(), [XGradientPrior()])
