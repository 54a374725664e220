"""Randomisation sanity check, explanation uncertainty and linear CKA."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from rightfocus import attribute, hooks
from rightfocus.bayes import to_bayesian
from rightfocus.metrics.sanity import model_randomisation_check
from rightfocus.metrics.similarity import cka_matrix, linear_cka
from rightfocus.metrics.uncertainty import accuracy_rejection_curve, explanation_uncertainty
from rightfocus.models import LeNet


def _sobel(model, x, target):  # type: ignore[no-untyped-def]
    k = torch.tensor([[-1.0, 0, 1], [-2, 0, 2], [-1, 0, 1]]).view(1, 1, 3, 3)
    return (
        F.conv2d(x, k, padding=1) ** 2 + F.conv2d(x, k.transpose(-1, -2), padding=1) ** 2
    ).sqrt()


def test_randomisation_check_separates_saliency_from_an_edge_detector() -> None:
    from rightfocus.data.mnist import bundled_mnist

    (x, y), _ = bundled_mnist()
    model = LeNet()
    opt = torch.optim.Adam(model.parameters(), 2e-3)
    for _ in range(100):  # a briefly trained LeNet, as in Adebayo et al.
        idx = torch.randint(0, len(x), (64,))
        loss = F.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    x, y = x[:16], y[:16]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    sal = model_randomisation_check(model, x, y, method="saliency", absolute=False)
    edge = model_randomisation_check(model, x, y, method=_sobel, absolute=False)
    assert max(abs(c) for c in sal.correlation) < 0.15  # randomised: unrelated gradients
    assert min(edge.correlation) > 0.99  # the edge detector ignores the model: it fails the check
    assert sal.layers[0] == "classifier.fc3"
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    # attributions of the unmodified model given (not recomputed): the same correlations
    given = attribute(model, x, y, method="saliency")
    again = model_randomisation_check(model, x, y, "saliency", absolute=False, original=given)
    assert again == sal
    with pytest.raises(ValueError, match="one attribution per image"):
        model_randomisation_check(model, x, y, "saliency", original=given[:3])


def test_explanation_uncertainty_is_seeded_and_restores_the_model() -> None:
    model = to_bayesian(LeNet(), rho_init=-3.0).eval()
    x = torch.rand(2, 1, 28, 28)
    a = explanation_uncertainty(model, x, method="saliency", samples=4, seed=1)
    b = explanation_uncertainty(model, x, method="saliency", samples=4, seed=1)
    assert torch.equal(a.mean, b.mean) and a.std.shape == (2, 1, 28, 28)
    assert float(a.std.mean()) > 0
    assert all(getattr(m, "sample", None) is None for m in model.modules() if hasattr(m, "moments"))
    assert hooks.count_hooks(model) == 0


def test_accuracy_rejection_curve_rises_when_uncertainty_flags_errors() -> None:
    probs = torch.tensor([[0.9, 0.1]] * 6 + [[0.6, 0.4]] * 4)
    y = torch.tensor([0] * 6 + [1] * 4)
    unc = torch.tensor([0.1] * 6 + [0.9] * 4)
    _, acc = accuracy_rejection_curve(probs, y, unc, torch.tensor([1.0, 0.6]))
    assert acc.tolist() == [0.6, 1.0]


def _hsic_cka(x: torch.Tensor, y: torch.Tensor) -> float:
    n = x.shape[0]
    h = torch.eye(n, dtype=torch.float64) - 1.0 / n
    k, l = x.double() @ x.double().T, y.double() @ y.double().T

    def hsic(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.trace(a @ h @ b @ h) / (n - 1) ** 2

    return float(hsic(k, l) / (hsic(k, k) * hsic(l, l)).sqrt())


def test_cka_properties_and_hsic_reference() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(50, 12, generator=g, dtype=torch.float64)
    y = x @ torch.randn(12, 7, generator=g, dtype=torch.float64)
    y = y + 0.5 * torch.randn(50, 7, generator=g, dtype=torch.float64)
    assert linear_cka(x, x) == pytest.approx(1.0)
    q, _ = torch.linalg.qr(torch.randn(12, 12, generator=g, dtype=torch.float64))
    assert linear_cka(x @ q * 3.7, y) == pytest.approx(linear_cka(x, y), rel=1e-9)
    assert linear_cka(x, y) == pytest.approx(_hsic_cka(x, y), rel=1e-9)
    assert cka_matrix([x, y], [x]).shape == (2, 1)
    with pytest.raises(ValueError, match="samples"):
        linear_cka(x, y[:10])
