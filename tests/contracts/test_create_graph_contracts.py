"""``create_graph=True`` gives the RIGHT parameter gradient, for every differentiable method.

For ``L(theta) = sum(w * attribution(model_theta, x))`` with a fixed random ``w``, the gradient
autograd returns through the attribution (double backpropagation) must match central finite
differences ``(L(theta + h e_j) - L(theta - h e_j)) / 2h`` on one entry of every layer's
weight (float64, ``h = 1e-6``; the ReLU pattern does not change within ``h``).
"""

from __future__ import annotations

import inspect
from typing import Any

import pytest
import torch
from torch import nn

from rightfocus import METHODS

DIFFERENTIABLE = [n for n in METHODS.names() if METHODS.get(n).differentiable]
CHEAP: dict[str, Any] = {"n_steps": 4, "n_samples": 3}
FAST: dict[str, dict[str, Any]] = {
    "deepshap": {"baselines": torch.linspace(0, 1, 300, dtype=torch.float64).view(2, 3, 5, 10)},
}


def _method(name: str) -> Any:
    cls = METHODS.get(name)
    params = inspect.signature(cls.__init__).parameters
    opts = {k: v for k, v in CHEAP.items() if k in params}
    opts.update(FAST.get(name, {}))
    if cls.stochastic:
        opts["seed"] = 0
    return cls(create_graph=True, **opts)


def _model() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(4, 5, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(5, 3),
    )
    return model.double().eval()


@pytest.mark.parametrize("name", DIFFERENTIABLE)
def test_parameter_gradient_matches_finite_differences(name: str) -> None:
    model = _model()
    g = torch.Generator().manual_seed(1)
    x = torch.rand(2, 3, 5, 10, dtype=torch.float64, generator=g)
    target = torch.tensor([0, 2])
    method = _method(name)
    attr = method(model, x, target)
    w = torch.randn(attr.shape, dtype=torch.float64, generator=g)

    def loss() -> torch.Tensor:
        return (w * method(model, x, target)).sum()

    params = [p for name, p in model.named_parameters() if name.endswith("weight")]
    grads = torch.autograd.grad(loss(), params, allow_unused=True)
    h = 1e-6
    checked = 0
    for p, grad in zip(params, grads, strict=True):
        grad = torch.zeros_like(p) if grad is None else grad
        for j in torch.randperm(p.numel(), generator=g)[:1].tolist():
            flat = p.data.view(-1)
            old = float(flat[j])
            flat[j] = old + h  # through .data: no autograd record of the change
            up = float(loss())
            flat[j] = old - h
            down = float(loss())
            flat[j] = old
            fd = (up - down) / (2 * h)
            assert float(grad.reshape(-1)[j]) == pytest.approx(fd, rel=1e-4, abs=1e-7), (
                name,
                tuple(p.shape),
                j,
            )
            checked += 1
    assert checked == len(params)
    assert any(gr is not None and bool(gr.abs().sum() > 0) for gr in grads), name
