"""Explanation feedback for Bayesian CNNs through the local reparameterization trick."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn

from rightfocus import hooks
from rightfocus._modules import is_conv, resolve_layer
from rightfocus.guidance._masks import (
    EmptyMaskGuard,
    check_pool,
    receptive_field_geometry,
    resize_mask,
)
from rightfocus.guidance.base import Guidance, GuidedBatch, check_weights, register_guidance

__all__ = ["BayesFeedback", "is_lrt_layer", "neg_log_normal_at_zero"]

_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


def neg_log_normal_at_zero(mean: Tensor, std: Tensor) -> Tensor:
    """Elementwise ``-log N(0; mean, std) = log(std) + mean^2 / (2 std^2) + log(2 pi) / 2``."""
    return torch.log(std) + mean.pow(2) / (2.0 * std.pow(2)) + _HALF_LOG_2PI


def is_lrt_layer(module: nn.Module) -> bool:
    """True for layers with LRT moments (``moments(x) -> (mean, var)``) and a sampling switch."""
    return callable(getattr(module, "moments", None)) and hasattr(module, "sample")


def _bayesian_convs(model: nn.Module) -> list[str]:
    return [name for name, m in model.named_modules() if is_lrt_layer(m) and is_conv(m)]


def _check_target_layer(model: nn.Module, layer: nn.Module | str | None) -> nn.Module:
    """Resolve the feedback layer and refuse anything but a Bayesian (LRT) convolution."""
    if not any(is_lrt_layer(m) for m in model.modules()):
        raise ValueError(
            f"bayes_feedback needs a Bayesian model with LRT layers, but {type(model).__name__} "
            "has none. Convert it with rightfocus.bayes.to_bayesian(model), or use 'rrr' or "
            "'counterexamples' for deterministic models."
        )
    module = resolve_layer(model, layer)
    convs = _bayesian_convs(model)
    if not is_lrt_layer(module):
        raise ValueError(
            f"The feedback layer {layer or 'last conv'!r} ({type(module).__name__}) is not "
            f"Bayesian; choose one of the Bayesian conv layers: {', '.join(convs) or '(none)'}"
        )
    if not is_conv(module):
        raise ValueError(
            f"The feedback layer {layer!r} ({type(module).__name__}) is not convolutional: the "
            "mask can only be resized onto (B, K, h, w) activations. Choose a Bayesian conv "
            f"layer: {', '.join(convs) or '(none)'}"
        )
    return module


@register_guidance("bayes_feedback")
class BayesFeedback(Guidance):
    """Explanation feedback on the LRT moments of a Bayesian conv layer.

    "Regularizing Explanations in Bayesian Convolutional Neural Networks", Eq. 4: with the
    local reparameterization trick the pre-activation ``z`` of the target layer (default: the
    last conv layer) is Gaussian, ``z ~ N(mu, sigma^2)``, ``mu = conv(x, mu_w, mu_b)``,
    ``sigma^2 = conv(x^2, sigma_w^2, sigma_b^2)``, ``sigma = sqrt(sigma^2 + 1e-8)``. The
    explanation mask ``A`` (1 = must not be used) is resized to the layer's ``(h, w)``
    (``pool="max"``: a cell is masked if any pixel is; ``"min"``: only if all are;
    ``"receptive_field"``: if its receptive field overlaps the mask), repeated over
    the channels, and the term

        ``lam * sum_{(n, k, i, j): A'_{nij} = 1}  -log N(0; mu_{nkij}, sigma_{nkij})``

    pulls the masked activations' distribution towards 0. Optionally (``zero_masked``, on in
    the original code) the sampled pre-activations in the masked cells are set to 0 in the
    training forward. Both use the moments computed once inside the layer's own forward (the
    layer's forward is patched in :meth:`forward_context`): no second forward or backward.

    Args:
        lam: weight (paper: Decoy MNIST color 5e-5, position 3e-4, ISIC 1e-5, Pet/SBD 2e-6).
        layer: target layer (dotted name or module); default the last conv layer.
        pool: mask resizing mode, ``"max"`` (Decoy MNIST, ISIC) or ``"min"`` (Pet, SBD) as in
            the paper, or ``"receptive_field"`` (not in the paper): a cell is masked when its
            receptive field, computed from the layer geometry, overlaps the mask.
        penalty: add the ``-log N`` term (default True).
        zero_masked: zero the sampled masked pre-activations while the layer samples
            (training; default True). The mean forward (evaluation) is never changed.
        empty_masks: policy when the data carries no masks (``"error"``/``"warn"``/``"ignore"``).
    """

    requires_mask = True
    requires_bayesian = True

    def __init__(
        self,
        *,
        lam: float = 5e-5,
        layer: nn.Module | str | None = None,
        pool: str = "max",
        penalty: bool = True,
        zero_masked: bool = True,
        empty_masks: str = "error",
    ) -> None:
        check_weights(lam=lam)
        if not (penalty or zero_masked):
            raise ValueError(
                "penalty and zero_masked are both off: bayes_feedback would do nothing"
            )
        self.lam = float(lam)
        self.layer = layer
        self.pool = check_pool(pool)
        self.penalty = bool(penalty)
        self.zero_masked = bool(zero_masked)
        self._guard = EmptyMaskGuard("bayes_feedback", empty_masks)
        self._chain: list[Any] = []
        self._terms: list[Tensor] = []
        self._calls = 0

    def check(self, model: nn.Module) -> None:
        """Refuse non-Bayesian models and target layers that are not Bayesian convolutions."""
        _check_target_layer(model, self.layer)

    def _make_forward(self, layer: Any, mask: Tensor) -> Callable[[Callable[..., Any]], Any]:
        def make(_original: Callable[..., Any]) -> Callable[..., Tensor]:
            def forward(x: Tensor) -> Tensor:
                mean, var = layer.moments(x)
                if mean.dim() != 4 or mean.shape[0] != mask.shape[0]:
                    raise ValueError(
                        f"bayes_feedback expects (B={mask.shape[0]}, K, h, w) activations at the "
                        f"feedback layer, got {tuple(mean.shape)}"
                    )
                std = torch.sqrt(var + 1e-8)
                size = (mean.shape[-2], mean.shape[-1])
                cells = resize_mask(mask.to(mean), size, self.pool, self._chain)
                self._calls += 1
                if self.penalty:
                    self._terms.append((cells * neg_log_normal_at_zero(mean, std)).sum())
                if not layer.sampling:
                    return mean
                out = mean + std * torch.randn_like(mean)
                return out * (1.0 - cells) if self.zero_masked else out

            return forward

        return make

    @contextmanager
    def forward_context(self, model: nn.Module, batch: GuidedBatch) -> Iterator[None]:
        layer = _check_target_layer(model, self.layer)
        if self.pool == "receptive_field":
            self._chain = receptive_field_geometry(model, layer)
        self._guard.update(batch.mask)
        self._terms, self._calls = [], 0
        with hooks.patched_forward(layer, self._make_forward(layer, batch.mask)):
            yield

    def loss_terms(self, model: nn.Module, batch: GuidedBatch, logits: Tensor) -> dict[str, Tensor]:
        if self._calls == 0:
            raise RuntimeError(
                "bayes_feedback recorded no moments: run the forward pass inside "
                "forward_context (guided_forward does) and make sure the model calls the "
                "feedback layer"
            )
        terms, self._terms, self._calls = self._terms, [], 0
        if not self.penalty:
            return {}
        return {"feedback": self.lam * torch.stack(terms).sum()}

    def __repr__(self) -> str:
        return (
            f"BayesFeedback(lam={self.lam}, layer={self.layer!r}, pool={self.pool!r}, "
            f"penalty={self.penalty}, zero_masked={self.zero_masked})"
        )
