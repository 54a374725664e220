"""Integrated Gradients through an affine first layer (``attribution/_entry.py``): which layers
qualify, and the closed forms give the step-by-step result (one and several targets, a model
that also uses its input elsewhere, a model that refuses channels-last)."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

import rightfocus.attribution.gradient as gradient
import rightfocus.attribution.smoothing as smoothing
from rightfocus import attribute
from rightfocus.attribution._entry import affine_entry
from rightfocus.bayes import to_bayesian
from rightfocus.models import LeNet


class SkipCNN(nn.Module):
    """Uses its input twice: through the first conv and again, pooled, in the head."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(2, 4, 3, padding=1)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(4, 3, 3, padding=1)
        self.fc = nn.Linear(3 + 2, 4)

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv2(self.relu(self.conv1(x)))
        return self.fc(torch.cat([h.mean(dim=(2, 3)), (x * x).mean(dim=(2, 3))], dim=1))


class ViewCNN(nn.Module):
    """Flattens with ``.view`` (refuses channels-last feature maps)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(2, 3, 3, padding=1)
        self.fc = nn.Linear(3 * 6 * 6, 4)

    def forward(self, x: Tensor) -> Tensor:
        h = torch.relu(self.conv1(x))
        return self.fc(h.view(h.shape[0], -1))


class Scaled(nn.Module):
    """Scales its input before the first conv (the conv does not see the input itself)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(2, 3, 3, padding=1)
        self.fc = nn.Linear(3, 4)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.conv1(2 * x).mean(dim=(2, 3)))


class Twice(Scaled):
    """Calls its first conv twice."""

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv1(x)
        return self.fc((h + self.conv1(x.flip(-1))).mean(dim=(2, 3)))


def test_only_an_affine_layer_that_sees_the_input_itself_once_qualifies() -> None:
    lenet = LeNet().eval()
    x = torch.rand(1, 1, 28, 28)
    assert affine_entry(lenet, x) is lenet.features.conv1
    assert affine_entry(Scaled().eval(), torch.rand(1, 2, 6, 6)) is None
    assert affine_entry(Twice().eval(), torch.rand(1, 2, 6, 6)) is None
    assert affine_entry(to_bayesian(LeNet()).eval(), x) is None  # sampled weights: not affine
    mlp = nn.Sequential(nn.Linear(5, 3), nn.ReLU(), nn.Linear(3, 2)).eval()
    assert affine_entry(mlp, torch.rand(1, 5)) is mlp[0]
    bn = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2)).train()
    assert affine_entry(bn, torch.rand(1, 1, 5, 5)) is None  # not probed: no statistics update
    assert int(bn[1].num_batches_tracked) == 0


def _step_by_step(monkeypatch: pytest.MonkeyPatch, *args, **kwargs) -> Tensor:  # type: ignore[no-untyped-def]
    with monkeypatch.context() as m:
        m.setattr(gradient, "affine_entry", lambda model, probe: None)
        return attribute(*args, **kwargs)


@pytest.mark.parametrize("model_cls", [SkipCNN, ViewCNN])
@pytest.mark.parametrize("several", [False, True])
def test_closed_forms_equal_the_step_by_step_integral(
    model_cls: type[nn.Module], several: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    torch.manual_seed(0)
    model = model_cls().double().eval()
    x = torch.randn(5, 2, 6, 6, dtype=torch.float64)
    target = torch.tensor([[0, 3], [1, 2], [2, 2], [3, 0], [1, 1]]) if several else None
    opts = {"method": "integrated_gradients", "n_steps": 7, "baseline": 0.3,
            "internal_batch_size": 10}  # fmt: skip
    assert affine_entry(model, x[:1]) is model.conv1
    used = []
    with monkeypatch.context() as m:  # the call takes the closed forms (models in eval mode)
        real = gradient.entry_path_gradients
        m.setattr(gradient, "entry_path_gradients", lambda *a: used.append(1) or real(*a))
        fast = attribute(model, x, target, **opts)
    assert used == [1]
    slow = _step_by_step(monkeypatch, model, x, target, **opts)
    assert fast.shape == slow.shape == ((5, 2, 2, 6, 6) if several else (5, 2, 6, 6))
    torch.testing.assert_close(fast, slow, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("model_cls", [SkipCNN, ViewCNN])
@pytest.mark.parametrize("several", [False, True])
def test_smoothgrad_through_the_entry_equals_the_noise_tunnel(
    model_cls: type[nn.Module], several: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SmoothGrad of the plain gradient takes the same shortcut for its mean over the noise."""
    torch.manual_seed(2)
    model = model_cls().double().eval()
    x = torch.randn(5, 2, 6, 6, dtype=torch.float64)
    target = torch.tensor([[0, 3], [1, 2], [2, 2], [3, 0], [1, 1]]) if several else None
    opts = {"method": "smoothgrad", "n_samples": 6, "seed": 3, "internal_batch_size": 10}
    fast = attribute(model, x, target, **opts)
    with monkeypatch.context() as m:
        m.setattr(smoothing, "affine_entry", lambda model, probe: None)
        slow = attribute(model, x, target, **opts)
    torch.testing.assert_close(fast, slow, rtol=1e-10, atol=1e-12)
    # the squared and variance forms are not linear in the gradient: no shortcut
    with monkeypatch.context() as m:
        m.setattr(smoothing, "weighted_entry_gradients", None)
        attribute(model, x, target, **{**opts, "method": "vargrad"})
        attribute(model, x, target, **{**opts, "abs": True})
