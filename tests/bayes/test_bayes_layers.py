"""BayesConv2d / BayesLinear: closed-form KL, LRT moments vs explicit weight sampling, switches."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Normal, kl_divergence

from rightfocus import _modules, hooks
from rightfocus.bayes.layers import BayesConv2d, BayesLinear


def _randomise(layer: nn.Module) -> None:
    """Random means and a spread of rho values (sigma from ~0.007 to ~1.3)."""
    with torch.no_grad():
        for name, p in layer.named_parameters():
            if name.startswith("mu_"):
                p.normal_(0.0, 0.5)
            else:
                p.uniform_(-5.0, 1.0)


def _reference_kl(layer: BayesConv2d | BayesLinear) -> torch.Tensor:
    prior = layer.prior_sigma
    total = torch.zeros((), dtype=torch.float64)
    for mu_name, rho_name in (("mu_weight", "rho_weight"), ("mu_bias", "rho_bias")):
        mu, rho = getattr(layer, mu_name), getattr(layer, rho_name)
        if mu is None:
            continue
        q = Normal(mu, F.softplus(rho) + 1e-8)
        p = Normal(torch.zeros_like(mu), torch.full_like(mu, prior))
        total = total + kl_divergence(q, p).sum()
    return total


@pytest.mark.parametrize(
    "layer",
    [
        lambda: BayesConv2d(3, 4, 3, prior_sigma=0.1),
        lambda: BayesConv2d(4, 6, (3, 2), groups=2, bias=False, prior_sigma=0.5),
        lambda: BayesLinear(7, 5, prior_sigma=0.1),
        lambda: BayesLinear(7, 5, bias=False, prior_sigma=2.0),
    ],
)
def test_kl_matches_torch_distributions(layer) -> None:
    layer = layer().double()
    _randomise(layer)
    expected = _reference_kl(layer)
    torch.testing.assert_close(layer.kl(), expected, rtol=1e-10, atol=1e-10)


def test_kl_is_differentiable_and_zero_at_the_prior() -> None:
    layer = BayesLinear(3, 2).double()
    with torch.no_grad():
        layer.mu_weight.zero_()
        layer.mu_bias.zero_()  # type: ignore[union-attr]
        rho = math.log(math.expm1(0.1 - 1e-8))  # softplus(rho) + 1e-8 == prior_sigma
        layer.rho_weight.fill_(rho)
        layer.rho_bias.fill_(rho)  # type: ignore[union-attr]
    assert abs(float(layer.kl().detach())) < 1e-10
    _randomise(layer)
    layer.kl().backward()
    assert layer.rho_weight.grad is not None and layer.mu_weight.grad is not None


def _explicit_conv_samples(layer: BayesConv2d, x: torch.Tensor, n: int) -> torch.Tensor:
    """Reference: draw n whole weight tensors w ~ N(mu, sigma^2) and convolve x with each.

    Vectorised by stacking the n sampled filter banks as n * groups convolution groups.
    """
    w = layer.mu_weight + layer.sigma_weight * torch.randn(n, *layer.mu_weight.shape).to(x)
    b = None
    sigma_b = layer.sigma_bias
    if layer.mu_bias is not None and sigma_b is not None:
        b = layer.mu_bias + sigma_b * torch.randn(n, *layer.mu_bias.shape).to(x)
    out = F.conv2d(
        x.repeat(1, n, 1, 1),
        w.flatten(0, 1),
        None if b is None else b.flatten(),
        layer.stride,
        layer.padding,  # type: ignore[arg-type]
        layer.dilation,
        layer.groups * n,
    )
    return out.view(n, layer.out_channels, *out.shape[2:])


def test_lrt_samples_match_explicit_weight_sampling() -> None:
    """20,000 LRT activations vs 20,000 activations from explicitly sampled weights.

    Both are Gaussian for a fixed input. Tolerance: the difference of the two empirical means
    must be within 5 standard errors, sqrt(2 var / N); the difference of the two empirical
    variances within 5 standard errors of a Gaussian sample variance, var * sqrt(2 * 2 / (N-1)).
    """
    torch.manual_seed(1)
    n = 20_000
    layer = BayesConv2d(4, 4, 3, stride=2, padding=1, dilation=2, groups=2).double()
    _randomise(layer)
    x = torch.randn(1, 4, 5, 5, dtype=torch.float64)
    with torch.no_grad(), hooks.sampling(layer, True):
        lrt = layer(x.expand(n, -1, -1, -1))
        explicit = _explicit_conv_samples(layer, x, n)
        mean, var = layer.moments(x)
    assert lrt.shape == explicit.shape == (n, *mean.shape[1:])
    var_pooled = 0.5 * (lrt.var(0) + explicit.var(0))
    se_mean = torch.sqrt(2 * var_pooled / n)
    se_var = var_pooled * math.sqrt(4.0 / (n - 1))
    assert ((lrt.mean(0) - explicit.mean(0)).abs() <= 5 * se_mean).all()
    assert ((lrt.var(0) - explicit.var(0)).abs() <= 5 * se_var).all()
    # and both agree with the analytic LRT moments (var + the 1e-8 floor for the LRT samples)
    assert ((explicit.mean(0) - mean[0]).abs() <= 5 * torch.sqrt(var[0] / n)).all()
    assert ((lrt.var(0) - (var[0] + 1e-8)).abs() <= 5 * var[0] * math.sqrt(2.0 / n)).all()


def test_linear_lrt_moments_match_explicit_weight_sampling() -> None:
    torch.manual_seed(2)
    n = 20_000
    layer = BayesLinear(6, 3).double()
    _randomise(layer)
    x = torch.randn(6, dtype=torch.float64)
    w = layer.mu_weight + layer.sigma_weight * torch.randn(n, 3, 6, dtype=torch.float64)
    b = layer.mu_bias + layer.sigma_bias * torch.randn(n, 3, dtype=torch.float64)  # type: ignore[operator]
    with torch.no_grad():
        explicit = torch.einsum("noi,i->no", w, x) + b
        mean, var = layer.moments(x.unsqueeze(0))
    assert ((explicit.mean(0) - mean[0]).abs() <= 5 * torch.sqrt(var[0] / n)).all()
    assert ((explicit.var(0) - var[0]).abs() <= 5 * var[0] * math.sqrt(2.0 / (n - 1))).all()


def test_mean_matches_plain_layers_for_every_conv_option() -> None:
    layer = BayesConv2d(4, 6, (3, 2), stride=(2, 1), padding=(1, 0), dilation=2, groups=2)
    conv = nn.Conv2d(4, 6, (3, 2), stride=(2, 1), padding=(1, 0), dilation=2, groups=2)
    with torch.no_grad():
        conv.weight.copy_(layer.mu_weight)
        conv.bias.copy_(layer.mu_bias)  # type: ignore[arg-type]
    x = torch.randn(2, 4, 9, 7)
    layer.eval()
    torch.testing.assert_close(layer(x), conv(x))
    mean, var = layer.moments(x)
    torch.testing.assert_close(mean, conv(x))
    assert (var > 0).all()


def test_sampling_switch_follows_mode_and_overrides() -> None:
    layer = BayesLinear(5, 4, rho_init=-1.0)
    x = torch.randn(3, 5)
    assert layer.sample is None and layer.sampling  # training by default
    assert not torch.equal(layer(x), layer(x))
    layer.eval()
    assert not layer.sampling
    assert torch.equal(layer(x), layer(x))
    torch.testing.assert_close(layer(x), layer.moments(x)[0])
    with hooks.sampling(layer, True):
        assert layer.sampling and not torch.equal(layer(x), layer(x))
    assert layer.sample is None and not layer.sampling
    layer.train()
    layer.sample = False
    assert not layer.sampling and torch.equal(layer(x), layer(x))


def test_gradients_reach_means_and_rho() -> None:
    layer = BayesConv2d(2, 3, 3, padding=1)
    layer(torch.randn(2, 2, 6, 6)).square().sum().backward()
    for p in layer.parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0


def test_layers_are_found_as_convolutions_and_keep_dtype() -> None:
    model = nn.Sequential(BayesConv2d(1, 2, 3), nn.ReLU(), BayesConv2d(2, 2, 3)).double()
    assert _modules.is_conv(model[0]) and _modules.last_conv(model) is model[2]
    out = model(torch.rand(1, 1, 8, 8, dtype=torch.float64))
    assert out.dtype == torch.float64 and out.shape == (1, 2, 4, 4)


def test_init_follows_the_paper() -> None:
    layer = BayesConv2d(3, 8, 3, rho_init=-2.0)
    assert torch.all(layer.rho_weight == -2.0) and torch.all(layer.rho_bias == -2.0)  # type: ignore[operator]
    bound = 1 / math.sqrt(27)
    assert layer.mu_bias.abs().max() <= bound  # type: ignore[union-attr]
    torch.testing.assert_close(
        layer.sigma_weight, torch.full_like(layer.mu_weight, math.log1p(math.exp(-2.0)) + 1e-8)
    )


@pytest.mark.parametrize(
    ("factory", "message"),
    [
        (lambda: BayesConv2d(1, 2, 3, rho_init=float("nan")), "rho_init must be finite"),
        (lambda: BayesLinear(1, 2, rho_init=float("inf")), "rho_init must be finite"),
        (lambda: BayesLinear(1, 2, prior_sigma=0.0), "prior_sigma must be a finite number > 0"),
        (lambda: BayesConv2d(1, 2, 3, prior_sigma=-1.0), "prior_sigma must be"),
        (lambda: BayesConv2d(3, 4, 3, groups=2), "divisible by groups"),
        (lambda: BayesConv2d(1, 2, 0), "kernel_size must be"),
        (lambda: BayesConv2d(1, 2, 3, padding="full"), "padding must be"),
        (lambda: BayesLinear(0, 2), "in_features must be a positive int"),
    ],
)
def test_bad_construction_is_refused(factory, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        factory()


def test_bad_types_and_inputs_are_refused() -> None:
    with pytest.raises(TypeError, match="rho_init must be a real number"):
        BayesLinear(2, 2, rho_init="-3")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"shape \(B, 3, H, W\)"):
        BayesConv2d(3, 2, 3)(torch.rand(1, 1, 5, 5))
    with pytest.raises(ValueError, match=r"shape \(\.\.\., 4\)"):
        BayesLinear(4, 2).eval()(torch.rand(2, 5))
