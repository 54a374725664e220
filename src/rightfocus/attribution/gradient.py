"""Gradient family: saliency, input x gradient (X-Gradient), Integrated Gradients, guided
backpropagation and DeconvNet."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from rightfocus import hooks
from rightfocus.attribution.base import (
    Attribution,
    broadcast_baseline,
    input_gradient,
    register_method,
    steps_per_pass,
)
from rightfocus.attribution.targets import Target, fix_target, select

__all__ = [
    "DeconvNet",
    "GuidedBackprop",
    "InputXGradient",
    "IntegratedGradients",
    "Saliency",
    "riemann_steps",
]


class _Gradient(Attribution):
    differentiable = True

    def __init__(self, *, create_graph: bool = False, eval_mode: bool | None = None) -> None:
        super().__init__(eval_mode=eval_mode)
        self._create_graph = bool(create_graph)


@register_method("saliency")
class Saliency(_Gradient):
    """Vanilla gradient saliency (Simonyan et al. 2014): ``dS_c/dx``.

    Options: ``abs`` takes ``|dS_c/dx|``; ``reduce="max"`` returns the paper's saliency map
    ``max_channels |dS_c/dx|`` of shape ``(B, 1, H, W)``. The default is the raw gradient.
    """

    def __init__(
        self,
        *,
        abs: bool = False,
        reduce: str | None = None,
        create_graph: bool = False,
        eval_mode: bool | None = None,
    ) -> None:
        super().__init__(create_graph=create_graph, eval_mode=eval_mode)
        if reduce not in (None, "max"):
            raise ValueError(f"reduce must be None or 'max', got {reduce!r}")
        self.abs = abs
        self.reduce = reduce

    def _attribute(self, model: nn.Module, x: Tensor, target: Target) -> Tensor:
        grad = input_gradient(model, x, target, self.create_graph)
        if self.abs or self.reduce == "max":
            grad = grad.abs()
        if self.reduce == "max":
            grad = grad.amax(dim=1, keepdim=True)
        return grad


@register_method("input_x_gradient")
class InputXGradient(_Gradient):
    """Input x gradient, ``x * dS_c/dx`` (Shrikumar et al. 2016).

    On a bias-free, positively homogeneous network (an X-DNN, Hesse et al. 2021) this is
    X-Gradient and equals Integrated Gradients with a zero baseline exactly.
    """

    def _attribute(self, model: nn.Module, x: Tensor, target: Target) -> Tensor:
        return x * input_gradient(model, x, target, self.create_graph)


def riemann_steps(n_steps: int, method: str) -> tuple[list[float], list[float]]:
    """Path positions ``alpha_i`` in [0, 1] and weights ``w_i`` of an IG quadrature rule.

    ``riemann_left``: alpha_i = i/n; ``riemann_right``: (i+1)/n; ``riemann_middle``:
    (i+1/2)/n, all with w_i = 1/n; ``riemann_trapezoid``: alpha_i = i/(n-1) with weights
    1/(n-1), halved at both ends; ``gausslegendre``: Gauss-Legendre nodes mapped to [0, 1].
    """
    if n_steps < 1:
        raise ValueError(f"n_steps must be >= 1, got {n_steps}")
    n = n_steps
    if method == "gausslegendre":
        nodes, weights = np.polynomial.legendre.leggauss(n)
        return list(0.5 * (nodes + 1.0)), list(0.5 * weights)
    if method == "riemann_trapezoid":
        if n < 2:
            raise ValueError("riemann_trapezoid needs n_steps >= 2")
        w = [1.0 / (n - 1)] * n
        w[0] = w[-1] = 0.5 / (n - 1)
        return [i / (n - 1) for i in range(n)], w
    offsets = {"riemann_left": 0.0, "riemann_right": 1.0, "riemann_middle": 0.5}
    if method not in offsets:
        raise ValueError(
            f"Unknown integration method {method!r}; use one of "
            f"{', '.join([*offsets, 'riemann_trapezoid', 'gausslegendre'])}"
        )
    return [(i + offsets[method]) / n for i in range(n)], [1.0 / n] * n


@register_method("integrated_gradients")
class IntegratedGradients(_Gradient):
    """Integrated Gradients (Sundararajan et al. 2017).

    ``IG_i(x) = (x_i - x'_i) * int_0^1 dS_c(x' + a (x - x')) / dx_i da``, approximated by
    ``sum_k w_k grad(x' + a_k (x - x'))`` with the rule of :func:`riemann_steps`.
    Completeness: ``sum_i IG_i = S_c(x) - S_c(x')``; with ``return_delta=True`` the call returns
    ``(attribution, delta)`` where ``delta = sum_i IG_i - (S_c(x) - S_c(x'))`` per sample.

    Args:
        baseline: ``x'``; ``None`` (zeros), a number, or a tensor broadcastable to ``x``.
        n_steps: quadrature points.
        integration: ``gausslegendre`` (default) or a Riemann rule (``riemann_left``,
            ``riemann_right``, ``riemann_middle``, ``riemann_trapezoid``); Captum calls this
            option ``method``, a name ``attribute(..., method=...)`` already uses.
        internal_batch_size: at most this many path points per forward pass (at least one
            step of the batch; default: about ``PASS_ELEMENTS`` input elements per pass).
    """

    def __init__(
        self,
        *,
        baseline: float | Tensor | None = None,
        n_steps: int = 50,
        integration: str = "gausslegendre",
        internal_batch_size: int | None = None,
        return_delta: bool = False,
        create_graph: bool = False,
        eval_mode: bool | None = None,
    ) -> None:
        super().__init__(create_graph=create_graph, eval_mode=eval_mode)
        self.alphas, self.weights = riemann_steps(n_steps, integration)
        if internal_batch_size is not None and internal_batch_size < 1:
            raise ValueError(f"internal_batch_size must be >= 1, got {internal_batch_size}")
        self.baseline = baseline
        self.n_steps = n_steps
        self.integration = integration
        self.internal_batch_size = internal_batch_size
        self.return_delta = return_delta

    def _baseline(self, x: Tensor) -> Tensor:
        return broadcast_baseline(self.baseline, x)

    def _attribute(self, model: nn.Module, x: Tensor, target: Target) -> Any:
        base = self._baseline(x)
        with torch.no_grad():
            fixed = fix_target(model(x), target)
        B = x.shape[0]
        alphas = torch.tensor(self.alphas, dtype=x.dtype, device=x.device)
        weights = torch.tensor(self.weights, dtype=x.dtype, device=x.device)
        diff = x - base
        per_pass = steps_per_pass(self.internal_batch_size, B, self.n_steps, x[0].numel())
        total = torch.zeros_like(x)
        for start in range(0, self.n_steps, per_pass):
            a = alphas[start : start + per_pass]
            k = a.shape[0]
            # (k, B, C, H, W) path points, flattened step-major.
            path = (base.unsqueeze(0) + a.view(k, 1, 1, 1, 1) * diff.unsqueeze(0)).reshape(
                k * B, *x.shape[1:]
            )
            tgt = fixed.repeat(k) if isinstance(fixed, Tensor) else fixed
            grads = input_gradient(model, path, tgt, self.create_graph)
            w = weights[start : start + k].view(k, 1, 1, 1, 1)
            total = total + (grads.view(k, *x.shape) * w).sum(dim=0)
        attr = diff * total
        if not self.return_delta:
            return attr
        with torch.no_grad():
            gap = select(model(x), fixed) - select(model(base), fixed)
        return attr, attr.detach().flatten(1).sum(1) - gap


class _ReLURule(_Gradient):
    rule: str = ""

    def _attribute(self, model: nn.Module, x: Tensor, target: Target) -> Tensor:
        with hooks.relu_backward_rule(model, self.rule):
            return input_gradient(model, x, target, self.create_graph)


@register_method("guided_backprop")
class GuidedBackprop(_ReLURule):
    """Guided backpropagation (Springenberg et al. 2015).

    Through each ReLU only positive gradients pass, and only where the input was positive:
    ``R_in = 1[x > 0] * max(R_out, 0)``. Needs ``nn.ReLU`` modules (not functional relu).
    """

    rule = "guided"


@register_method("deconvnet")
class DeconvNet(_ReLURule):
    """DeconvNet (Zeiler & Fergus 2014): through each ReLU, ``R_in = max(R_out, 0)``.

    The forward ReLU mask is ignored on the way back. Needs ``nn.ReLU`` modules.
    """

    rule = "deconvnet"
