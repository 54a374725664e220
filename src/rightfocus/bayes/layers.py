"""Bayesian convolution and linear layers with the local reparameterization trick (LRT).

Mean-field Gaussian posterior ``q(w) = N(mu, sigma^2)`` per weight and bias with
``sigma = softplus(rho) + 1e-8``, a fixed prior ``p(w) = N(0, prior_sigma^2)``, and the local
reparameterization trick of Kingma, Salimans & Welling (2015), "Variational Dropout and the Local
Reparameterization Trick": instead of sampling weights, sample each pre-activation from its exact
Gaussian marginal

    mean = conv(x, mu_w, mu_b),   var = conv(x^2, sigma_w^2, sigma_b^2),
    out  = mean + sqrt(var + 1e-8) * eps,   eps ~ N(0, 1) per output element.

This is the layer of "Regularizing Explanations in Bayesian Convolutional Neural Networks".
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "MAX_RHO_INIT",
    "SIGMA_EPS",
    "VAR_EPS",
    "BayesConv2d",
    "BayesLinear",
    "check_prior",
    "check_rho",
]

SIGMA_EPS = 1e-8
"""Added to ``softplus(rho)`` so that sigma is strictly positive."""
VAR_EPS = 1e-8
"""Added to the LRT activation variance before the square root."""
MAX_RHO_INIT = 10.0
"""Largest accepted ``rho_init``: sigma = softplus(10) ~ 10, 100x the paper's prior sigma. Far
larger values (e.g. 1e6) make the LRT variances of deeper layers overflow to Inf/NaN."""


def check_rho(rho_init: float) -> float:
    """Validate ``rho_init`` (finite, at most :data:`MAX_RHO_INIT`) and return it as a float."""
    if isinstance(rho_init, bool) or not isinstance(rho_init, (int, float)):
        raise TypeError(f"rho_init must be a real number, not {type(rho_init).__name__}")
    if not math.isfinite(rho_init):
        raise ValueError(
            f"rho_init must be finite (got {rho_init}); sigma = softplus(rho_init) + 1e-8, "
            "e.g. rho_init=-3.0 gives sigma ~0.049, -2.0 gives ~0.127."
        )
    if rho_init > MAX_RHO_INIT:
        raise ValueError(
            f"rho_init={rho_init:g} gives a posterior sigma = softplus(rho_init) ~ {rho_init:.3g}, "
            f"whose LRT variances overflow to Inf/NaN; use rho_init <= {MAX_RHO_INIT:g} "
            "(-3.0 gives sigma ~0.049, -2.0 gives ~0.127)."
        )
    return float(rho_init)


def check_prior(prior_sigma: float) -> float:
    """Validate ``prior_sigma`` (finite and > 0) and return it as a float."""
    if isinstance(prior_sigma, bool) or not isinstance(prior_sigma, (int, float)):
        raise TypeError(f"prior_sigma must be a real number, not {type(prior_sigma).__name__}")
    if not math.isfinite(prior_sigma) or prior_sigma <= 0:
        raise ValueError(
            f"prior_sigma must be a finite number > 0 (got {prior_sigma}); the paper uses 0.1."
        )
    return float(prior_sigma)


def _gaussian_kl(mu: Tensor, sigma: Tensor, prior_sigma: float) -> Tensor:
    """Sum over elements of KL(N(mu, sigma^2) || N(0, prior_sigma^2)), closed form.

    KL = log(prior_sigma / sigma) + (sigma^2 + mu^2) / (2 prior_sigma^2) - 1/2.
    """
    return (
        math.log(prior_sigma)
        - torch.log(sigma)
        + (sigma.pow(2) + mu.pow(2)) / (2.0 * prior_sigma**2)
        - 0.5
    ).sum()


class _BayesMixin(nn.Module):
    """State and logic shared by the Bayesian layers (parameters, sampling switch, KL)."""

    mu_weight: nn.Parameter
    rho_weight: nn.Parameter
    mu_bias: nn.Parameter | None
    rho_bias: nn.Parameter | None
    sample: bool | None
    prior_sigma: float
    rho_init: float

    def _init_bayes(
        self, weight_shape: tuple[int, ...], bias: bool, rho_init: float, prior_sigma: float
    ) -> None:
        self.rho_init = check_rho(rho_init)
        self.prior_sigma = check_prior(prior_sigma)
        self.sample = None
        self.mu_weight = nn.Parameter(torch.empty(weight_shape))
        self.rho_weight = nn.Parameter(torch.empty(weight_shape))
        if bias:
            self.mu_bias = nn.Parameter(torch.empty(weight_shape[0]))
            self.rho_bias = nn.Parameter(torch.empty(weight_shape[0]))
        else:
            self.register_parameter("mu_bias", None)
            self.register_parameter("rho_bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Kaiming-uniform weight means, uniform(+-1/sqrt(fan_in)) bias means, constant rho."""
        nn.init.kaiming_uniform_(self.mu_weight, nonlinearity="relu")
        nn.init.constant_(self.rho_weight, self.rho_init)
        if self.mu_bias is not None and self.rho_bias is not None:
            fan_in = self.mu_weight[0].numel()
            bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
            nn.init.uniform_(self.mu_bias, -bound, bound)
            nn.init.constant_(self.rho_bias, self.rho_init)

    @property
    def weight(self) -> Tensor:
        """The posterior mean ``mu_weight``, for code that reads a layer's ``.weight`` (e.g.
        transformers' ViT reads the patch projection's dtype); training updates ``mu_weight``."""
        return self.mu_weight

    @property
    def sigma_weight(self) -> Tensor:
        """Posterior standard deviation of the weights, ``softplus(rho_weight) + 1e-8``."""
        return F.softplus(self.rho_weight) + SIGMA_EPS

    @property
    def sigma_bias(self) -> Tensor | None:
        """Posterior standard deviation of the biases (None without bias)."""
        if self.rho_bias is None:
            return None
        return F.softplus(self.rho_bias) + SIGMA_EPS

    @property
    def sampling(self) -> bool:
        """Whether ``forward`` samples: ``sample`` if set, else ``self.training``."""
        return self.training if self.sample is None else bool(self.sample)

    def kl(self) -> Tensor:
        """KL(q || p) summed over every weight and bias of this layer (closed form)."""
        total = _gaussian_kl(self.mu_weight, self.sigma_weight, self.prior_sigma)
        sigma_b = self.sigma_bias
        if self.mu_bias is not None and sigma_b is not None:
            total = total + _gaussian_kl(self.mu_bias, sigma_b, self.prior_sigma)
        return total

    def _moments(self, x: Tensor) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def moments(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """LRT mean and variance of the pre-activation for input ``x``."""
        if not isinstance(x, Tensor):
            raise TypeError(f"{type(self).__name__} expects a tensor input, not {type(x).__name__}")
        return self._moments(x)

    def forward(self, x: Tensor) -> Tensor:
        """``mean + sqrt(var + 1e-8) * eps`` when sampling, else the mean activation."""
        if not self.sampling:
            if not isinstance(x, Tensor):
                raise TypeError(
                    f"{type(self).__name__} expects a tensor input, not {type(x).__name__}"
                )
            return self._mean(x)
        mean, var = self.moments(x)
        return torch.addcmul(mean, torch.sqrt(var + VAR_EPS), torch.randn_like(mean))

    def _mean(self, x: Tensor) -> Tensor:
        raise NotImplementedError


class BayesConv2d(_BayesMixin):
    """2-d convolution with a mean-field Gaussian posterior and the LRT.

    ``mean = conv2d(x, mu_w, mu_b)``, ``var = conv2d(x^2, sigma_w^2, sigma_b^2)`` with
    ``sigma = softplus(rho) + 1e-8``; ``forward`` returns ``mean + sqrt(var + 1e-8) * eps`` when
    sampling (Kingma et al. 2015, "Variational Dropout and the Local Reparameterization Trick").
    KL against the prior ``N(0, prior_sigma^2)`` is closed form (``kl()``).

    Args:
        in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias: as in
            ``nn.Conv2d`` (zero padding only).
        rho_init: constant initial ``rho`` of every weight and bias (must be finite).
        prior_sigma: standard deviation of the zero-mean Gaussian prior (> 0).

    Attributes:
        sample: None (sample iff ``self.training``), True or False; ``hooks.sampling`` sets it.
    """

    conv_like = True

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] | str = 0,
        dilation: int | tuple[int, int] = 1,
        groups: int = 1,
        bias: bool = True,
        rho_init: float = -3.0,
        prior_sigma: float = 0.1,
    ) -> None:
        super().__init__()
        for name, value in (
            ("in_channels", in_channels),
            ("out_channels", out_channels),
            ("groups", groups),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if in_channels % groups or out_channels % groups:
            raise ValueError(
                f"in_channels ({in_channels}) and out_channels ({out_channels}) must both be "
                f"divisible by groups ({groups})"
            )
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = _pair(kernel_size, "kernel_size")
        self.stride = _pair(stride, "stride")
        self.padding: tuple[int, int] | str = (
            padding if isinstance(padding, str) else _pair(padding, "padding", allow_zero=True)
        )
        if isinstance(padding, str) and padding not in ("same", "valid"):
            raise ValueError(f"padding must be an int, a pair, 'same' or 'valid'; got {padding!r}")
        self.dilation = _pair(dilation, "dilation")
        self.groups = groups
        shape = (out_channels, in_channels // groups, *self.kernel_size)
        self._init_bayes(shape, bias, rho_init, prior_sigma)

    def _conv(self, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        return F.conv2d(x, weight, bias, self.stride, self.padding, self.dilation, self.groups)

    def _check(self, x: Tensor) -> None:
        if x.dim() not in (3, 4) or x.shape[-3] != self.in_channels:
            raise ValueError(
                f"BayesConv2d expects input of shape (B, {self.in_channels}, H, W), "
                f"got {tuple(x.shape)}"
            )

    def _mean(self, x: Tensor) -> Tensor:
        self._check(x)
        return self._conv(x, self.mu_weight, self.mu_bias)

    def _moments(self, x: Tensor) -> tuple[Tensor, Tensor]:
        self._check(x)
        mean = self._conv(x, self.mu_weight, self.mu_bias)
        sigma_b = self.sigma_bias
        var = self._conv(x * x, self.sigma_weight.pow(2), None if sigma_b is None else sigma_b**2)
        return mean, var

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, padding={self.padding}, dilation={self.dilation}, "
            f"groups={self.groups}, bias={self.mu_bias is not None}, "
            f"prior_sigma={self.prior_sigma}, sample={self.sample}"
        )


class BayesLinear(_BayesMixin):
    """Fully connected layer with a mean-field Gaussian posterior and the LRT.

    ``mean = x mu_w^T + mu_b``, ``var = x^2 (sigma_w^2)^T + sigma_b^2``; ``forward`` returns
    ``mean + sqrt(var + 1e-8) * eps`` when sampling (Kingma et al. 2015).

    Args:
        in_features, out_features, bias: as in ``nn.Linear``.
        rho_init: constant initial ``rho`` of every weight and bias (must be finite).
        prior_sigma: standard deviation of the zero-mean Gaussian prior (> 0).
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        rho_init: float = -3.0,
        prior_sigma: float = 0.1,
    ) -> None:
        super().__init__()
        for name, value in (("in_features", in_features), ("out_features", out_features)):
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        self.in_features = in_features
        self.out_features = out_features
        self._init_bayes((out_features, in_features), bias, rho_init, prior_sigma)

    def _check(self, x: Tensor) -> None:
        if x.dim() == 0 or x.shape[-1] != self.in_features:
            raise ValueError(
                f"BayesLinear expects input of shape (..., {self.in_features}), "
                f"got {tuple(x.shape)}"
            )

    def _mean(self, x: Tensor) -> Tensor:
        self._check(x)
        return F.linear(x, self.mu_weight, self.mu_bias)

    def _moments(self, x: Tensor) -> tuple[Tensor, Tensor]:
        self._check(x)
        mean = F.linear(x, self.mu_weight, self.mu_bias)
        sigma_b = self.sigma_bias
        var = F.linear(x * x, self.sigma_weight.pow(2), None if sigma_b is None else sigma_b**2)
        return mean, var

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"bias={self.mu_bias is not None}, prior_sigma={self.prior_sigma}, "
            f"sample={self.sample}"
        )


def _pair(value: int | tuple[int, ...], name: str, allow_zero: bool = False) -> tuple[int, int]:
    """Turn an int or a pair into a validated (int, int)."""
    items = (value, value) if isinstance(value, int) else tuple(value)
    low = 0 if allow_zero else 1
    if len(items) != 2 or any(
        isinstance(v, bool) or not isinstance(v, int) or v < low for v in items
    ):
        raise ValueError(f"{name} must be an int >= {low} or a pair of them, got {value!r}")
    return (int(items[0]), int(items[1]))
