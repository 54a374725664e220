"""RRR: the penalty against torch.autograd.functional, parameter gradients against torch.func."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad

from rightfocus import GUIDANCE
from rightfocus.guidance import RRR, GuidedBatch, guided_forward


def _batch(b: int = 3, c: int = 1) -> GuidedBatch:
    x = torch.rand(b, c, 8, 8, dtype=torch.float64)
    y = torch.arange(b) % 4
    mask = torch.zeros(b, 1, 8, 8, dtype=torch.float64)
    mask[0, 0, :3, :3] = 1
    mask[1, 0, 5:, 2:6] = 1  # sample 2 keeps no feedback
    return GuidedBatch(x, y, mask)


def _score(model: nn.Module, x: torch.Tensor, y: torch.Tensor, mode: str) -> torch.Tensor:
    logp = F.log_softmax(model(x), dim=1)
    if mode == "sum":
        return logp.sum()
    if mode == "target":
        return logp[torch.arange(len(y)), y].sum()
    return F.cross_entropy(model(x), y, reduction="sum")


@pytest.mark.parametrize("mode", ["sum", "target", "loss"])
def test_penalty_equals_squared_masked_input_gradient(tiny_cnn: nn.Module, mode: str) -> None:
    batch = _batch()
    rrr = RRR(lam=7.0, log_prob=mode)
    _, _, terms = guided_forward(tiny_cnn, batch, [rrr])
    jac = torch.autograd.functional.jacobian(lambda x: _score(tiny_cnn, x, batch.y, mode), batch.x)
    expected = 7.0 * (batch.mask * jac).pow(2).sum()
    torch.testing.assert_close(terms["rrr"], expected)
    assert terms["rrr"] > 0


def test_rgb_mask_broadcasts_over_channels(make_tiny_cnn: type[nn.Module]) -> None:
    model = make_tiny_cnn(in_channels=3).double()
    batch = _batch(c=3)
    _, _, terms = guided_forward(model, batch, [RRR(lam=1.0)])
    jac = torch.autograd.functional.jacobian(lambda x: _score(model, x, batch.y, "sum"), batch.x)
    torch.testing.assert_close(terms["rrr"], (batch.mask.expand_as(jac) * jac).pow(2).sum())


def test_parameter_gradient_is_the_double_backward(tiny_cnn: nn.Module) -> None:
    batch = _batch()
    params = {k: v.detach() for k, v in tiny_cnn.named_parameters()}

    def penalty(p: dict[str, torch.Tensor]) -> torch.Tensor:
        def score(x: torch.Tensor) -> torch.Tensor:
            return F.log_softmax(functional_call(tiny_cnn, p, (x,)), dim=1).sum()

        return 3.0 * (batch.mask * grad(score)(batch.x)).pow(2).sum()

    expected = grad(penalty)(params)
    tiny_cnn.zero_grad()
    _, _, terms = guided_forward(tiny_cnn, batch, [RRR(lam=3.0)])
    terms["rrr"].backward()
    for name, p in tiny_cnn.named_parameters():
        torch.testing.assert_close(p.grad, expected[name], msg=name)


def test_no_mask_no_penalty(tiny_cnn: nn.Module) -> None:
    b = _batch()
    batch = GuidedBatch(b.x, b.y, torch.zeros_like(b.mask))
    rrr = RRR(lam=5.0, empty_masks="ignore")
    _, _, terms = guided_forward(tiny_cnn, batch, [rrr])
    assert terms["rrr"].item() == 0.0


def test_registered_and_validates() -> None:
    assert GUIDANCE.get("rrr") is RRR
    with pytest.raises(ValueError, match="log_prob"):
        RRR(log_prob="mean")
    with pytest.raises(ValueError, match="lam"):
        RRR(lam=-1)


def test_refuses_input_without_grad(tiny_cnn: nn.Module) -> None:
    batch = _batch()
    logits = tiny_cnn(batch.x)
    with pytest.raises(ValueError, match="require grad"):
        RRR().loss_terms(tiny_cnn, batch, logits)


def test_dataset_without_masks_is_an_error(tiny_cnn: nn.Module) -> None:
    b = _batch(b=64)
    batch = GuidedBatch(b.x, b.y, torch.zeros_like(b.mask))
    with pytest.raises(ValueError, match="carries no masks"):
        guided_forward(tiny_cnn, batch, [RRR()])
