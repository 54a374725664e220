"""X-DNNs (Hesse et al. 2021): bias removal, homogeneity check, X-Gradient = IG(0) vs Captum."""

from __future__ import annotations

import pytest
import torch
from captum.attr import IntegratedGradients
from torch import nn

from rightfocus import bayes
from rightfocus.attribution import attribute
from rightfocus.models import build_model
from rightfocus.models.lenet import LeNet
from rightfocus.models.xdnn import (
    ChannelScale,
    XResNet,
    check_homogeneous,
    homogeneity_error,
    to_xdnn,
)


def _no_bias(model: nn.Module) -> bool:
    return all(getattr(m, "bias", None) is None for m in model.modules() if m is not model) and all(
        not name.endswith("bias") for name, _ in model.named_parameters()
    )


def test_to_xdnn_removes_every_bias_and_leaves_the_original() -> None:
    model = LeNet().double()
    x = torch.rand(4, 1, 28, 28, dtype=torch.float64)
    xnet = to_xdnn(model)
    assert _no_bias(xnet)
    assert model.features.conv1.bias is not None  # original untouched
    assert check_homogeneous(xnet, x)
    # random biases make the original inhomogeneous
    assert not check_homogeneous(model, x)
    assert homogeneity_error(model, x) > 1e-3


def test_bayesian_models_lose_their_bias_too() -> None:
    model = bayes.to_bayesian(LeNet(), rho_init=-30.0).double()
    xnet = to_xdnn(model)
    assert not any(n.endswith(("bias_mu", "bias_rho")) for n, _ in xnet.named_parameters())
    assert check_homogeneous(xnet, torch.rand(3, 1, 28, 28, dtype=torch.float64))


@pytest.mark.parametrize("layer", [nn.Tanh(), nn.Sigmoid(), nn.GroupNorm(1, 4), nn.Softplus()])
def test_non_homogeneous_layers_are_refused_by_name(layer: nn.Module) -> None:
    model = nn.Sequential(nn.Conv2d(1, 4, 3), layer, nn.Flatten(), nn.LazyLinear(2))
    with pytest.raises(ValueError, match=rf"'1' \({type(layer).__name__}\).*not positively"):
        to_xdnn(model)


def test_batchnorm_is_refused_unless_folded() -> None:
    bn = nn.BatchNorm2d(4)
    with torch.no_grad():
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
        bn.weight.uniform_(0.5, 2)
        bn.bias.uniform_(-1, 1)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), bn, nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))
    model = model.double()
    with pytest.raises(ValueError, match="fold_batchnorm=True"):
        to_xdnn(model)
    xnet = to_xdnn(model, fold_batchnorm=True)
    assert isinstance(xnet[1], ChannelScale)
    expected = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    torch.testing.assert_close(xnet[1].scale.detach(), expected.detach())
    assert check_homogeneous(xnet, torch.rand(2, 1, 8, 8, dtype=torch.float64))


def test_zoo_xdnns_are_homogeneous_and_originals_are_not() -> None:
    x = torch.rand(2, 3, 64, 64)
    torch.manual_seed(0)
    alex = build_model("alexnet", num_classes=5, image_size=64)
    for module in alex.modules():  # torchvision zero-initialises some biases; make them count
        if isinstance(module, (nn.Conv2d, nn.Linear)) and module.bias is not None:
            nn.init.uniform_(module.bias, 0.05, 0.2)
    assert not check_homogeneous(alex, x)
    assert check_homogeneous(to_xdnn(alex), x)
    for name in ("xalexnet", "xvgg16"):
        model = build_model(name, num_classes=5, image_size=64)
        assert _no_bias(model), name
        assert check_homogeneous(model, x), name
    xres = build_model("xresnet", num_classes=5, image_size=64, width=8, zero_init=False)
    assert _no_bias(xres)
    assert check_homogeneous(xres, x)


def test_xresnet_fixup_init_and_shapes() -> None:
    model = XResNet(num_classes=7, in_channels=1, image_size=32, layers=(1, 1, 1, 1), width=4)
    out = model(torch.rand(3, 1, 32, 32))
    assert out.shape == (3, 7)
    assert torch.count_nonzero(model.layer1[0].conv2.weight) == 0  # Fixup: branch output zero
    assert torch.count_nonzero(model.fc.weight) == 0
    with pytest.raises(ValueError, match="four positive block counts"):
        XResNet(layers=(1, 1, 1))


def _captum_ig_zero(model: nn.Module, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    ig = IntegratedGradients(model)
    return ig.attribute(
        x, baselines=torch.zeros_like(x), target=target, n_steps=128, method="gausslegendre"
    )


@pytest.mark.parametrize("arch", ["xlenet", "xresnet"])
def test_x_gradient_equals_captum_integrated_gradients_zero_baseline(arch: str) -> None:
    torch.manual_seed(1)
    if arch == "xlenet":
        model = to_xdnn(LeNet()).double().eval()
        x = torch.rand(3, 1, 28, 28, dtype=torch.float64)
    else:
        model = XResNet(4, 3, 32, (1, 1, 1, 1), width=4, zero_init=False).double().eval()
        x = torch.rand(3, 3, 32, 32, dtype=torch.float64)
    target = torch.tensor([0, 1, 3])
    ours = attribute(model, x, target, method="input_x_gradient")
    peer = _captum_ig_zero(model, x, target)
    scale = float(peer.abs().max())
    assert scale > 0
    torch.testing.assert_close(ours, peer, rtol=1e-4, atol=1e-4 * scale)
    # completeness: the X-Gradient sums to f(x) - f(0) = f(x) on an X-DNN
    with torch.no_grad():
        out = model(x).gather(1, target[:, None]).squeeze(1)
    torch.testing.assert_close(ours.flatten(1).sum(1), out, rtol=1e-6, atol=1e-9)


def test_bad_input_is_refused() -> None:
    with pytest.raises(TypeError, match=r"nn\.Module"):
        to_xdnn("lenet")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="alphas"):
        homogeneity_error(LeNet(), torch.rand(1, 1, 28, 28), alphas=(0.0,))
    with pytest.raises(TypeError, match="tensor"):
        check_homogeneous(LeNet(), [1.0])  # type: ignore[arg-type]
