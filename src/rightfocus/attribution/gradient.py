"""Gradient family: saliency, input x gradient (X-Gradient), Integrated Gradients, guided
backpropagation and DeconvNet."""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from rightfocus import hooks
from rightfocus.attribution._entry import affine_entry, entry_path_gradients
from rightfocus.attribution._passes import is_layout_refusal
from rightfocus.attribution.base import (
    Attribution,
    broadcast_baseline,
    copies_per_pass,
    images_per_pass,
    input_gradient,
    parse_bytes,
    pass_size_option,
    register_method,
    split_batch,
)
from rightfocus.attribution.targets import Target, class_target, repeat_target, select

__all__ = [
    "DeconvNet",
    "GuidedBackprop",
    "InputXGradient",
    "IntegratedGradients",
    "Saliency",
    "gauss_legendre",
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
            grad = grad.amax(dim=-3, keepdim=True)
        return grad

    def _attribute_multi(self, model: nn.Module, x: Tensor, targets: Tensor) -> Tensor:
        return self._attribute(model, x, targets)  # input_gradient shares the forward pass


@register_method("input_x_gradient")
class InputXGradient(_Gradient):
    """Input x gradient, ``x * dS_c/dx`` (Shrikumar et al. 2016).

    On a bias-free, positively homogeneous network (an X-DNN, Hesse et al. 2021) this is
    X-Gradient and equals Integrated Gradients with a zero baseline exactly.
    """

    def _attribute(self, model: nn.Module, x: Tensor, target: Target) -> Tensor:
        grad = input_gradient(model, x, target, self.create_graph)
        return (x.unsqueeze(1) if grad.dim() == 5 else x) * grad

    def _attribute_multi(self, model: nn.Module, x: Tensor, targets: Tensor) -> Tensor:
        return self._attribute(model, x, targets)  # input_gradient shares the forward pass


GL_EXACT_MAX = 100
"""Up to this many points the Gauss-Legendre rule comes from numpy's ``leggauss``."""
MAX_STEPS_WARN = 2_000
MAX_STEPS = 100_000


def gauss_legendre(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Gauss-Legendre nodes (ascending) and weights on [-1, 1] in O(n) memory.

    Small ``n``: numpy's ``leggauss``. Larger ``n`` (whose companion-matrix eigenproblem costs
    O(n^3) time and O(n^2) memory): Newton's method on ``theta`` with ``x = cos(theta)``,
    started from Tricomi's asymptotic nodes
    ``theta_k = pi (k - 1/4) / (n + 1/2)``, ``x_k ~ (1 - (n - 1) / (8 n^3)) cos(theta_k)``, and
    ``P_n``, ``P_{n-1}`` from the three-term recurrence
    ``(j + 1) P_{j+1} = (2j + 1) x P_j - j P_{j-1}``, vectorised over the nodes (O(n) memory,
    O(n^2) arithmetic in n numpy steps). With ``dP_n/dtheta = n (x P_n - P_{n-1}) / sin(theta)``
    the weights are ``w_k = 2 sin^2(theta_k) / (n (x_k P_n - P_{n-1}))^2`` (Abramowitz & Stegun
    25.4.29; the same method as Press et al., "Numerical Recipes", ``gauleg``, in theta).
    """
    if n <= GL_EXACT_MAX:
        return np.polynomial.legendre.leggauss(n)
    m = (n + 1) // 2  # nodes with x >= 0; the rest by symmetry
    k = np.arange(1, m + 1, dtype=np.float64)
    x0 = (1 - (n - 1) / (8.0 * n**3)) * np.cos(np.pi * (k - 0.25) / (n + 0.5))
    theta = np.arccos(x0)
    last = np.inf
    for _ in range(8):  # quadratic convergence from ~1e-6: 3-4 steps reach rounding level
        x = np.cos(theta)
        p_prev, p = np.ones_like(x), x.copy()
        for j in range(1, n):
            p_prev, p = p, ((2 * j + 1) * x * p - j * p_prev) / (j + 1)
        step = p * np.sin(theta) / (n * (x * p - p_prev))  # P_n / (dP_n / dtheta)
        theta = theta - step
        size = float(np.abs(step).max())
        if size < 1e-15 or size > 0.1 * last:  # converged, or only rounding noise is left
            break
        last = size
    x = np.cos(theta)
    p_prev, p = np.ones_like(x), x.copy()
    for j in range(1, n):
        p_prev, p = p, ((2 * j + 1) * x * p - j * p_prev) / (j + 1)
    w = 2 * np.sin(theta) ** 2 / (n * (x * p - p_prev)) ** 2
    # x descends from the largest node to the smallest x >= 0 (0 itself when n is odd)
    lower = slice(None, -1) if n % 2 else slice(None)
    return np.concatenate([-x[lower], x[::-1]]), np.concatenate([w[lower], w[::-1]])


def riemann_steps(n_steps: int, method: str) -> tuple[list[float], list[float]]:
    """Path positions ``alpha_i`` in [0, 1] and weights ``w_i`` of an IG quadrature rule.

    ``riemann_left``: alpha_i = i/n; ``riemann_right``: (i+1)/n; ``riemann_middle``:
    (i+1/2)/n, all with w_i = 1/n; ``riemann_trapezoid``: alpha_i = i/(n-1) with weights
    1/(n-1), halved at both ends; ``gausslegendre``: Gauss-Legendre nodes mapped to [0, 1]
    (:func:`gauss_legendre`).
    """
    if isinstance(n_steps, bool) or not isinstance(n_steps, (int, np.integer)):
        raise TypeError(f"n_steps must be an int, got {n_steps!r}")
    if n_steps < 1:
        raise ValueError(f"n_steps must be >= 1, got {n_steps}")
    n = int(n_steps)
    if n > MAX_STEPS:
        raise ValueError(
            f"n_steps={n} is more than {MAX_STEPS:,}: every step is one forward and one backward "
            "pass per image, and the quadrature error stops shrinking long before (float32 "
            "gradients); use a few hundred steps and check return_delta=True"
        )
    if n > MAX_STEPS_WARN:
        warnings.warn(
            f"n_steps={n} runs {n} forward and backward passes per image; Integrated Gradients "
            "rarely needs more than a few hundred steps (check the completeness gap with "
            "return_delta=True)",
            UserWarning,
            stacklevel=3,
        )
    if method == "gausslegendre":
        nodes, weights = gauss_legendre(n)
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
    """Integrated Gradients (Sundararajan et al. 2017, "Axiomatic attribution for deep
    networks").

    ``IG_i(x) = (x_i - x'_i) * int_0^1 dS_c(x' + a (x - x')) / dx_i da``, approximated by
    ``sum_k w_k grad(x' + a_k (x - x'))`` with the rule of :func:`riemann_steps`.
    Completeness: ``sum_i IG_i = S_c(x) - S_c(x')``; with ``return_delta=True`` the call returns
    ``(attribution, delta)`` where ``delta = sum_i IG_i - (S_c(x) - S_c(x'))`` per sample.
    Several targets (a ``(B, K)`` class tensor) share every path forward pass.

    Args:
        baseline: ``x'``; ``None`` (zeros), a number, or a tensor broadcastable to ``x``
            (finite values only).
        n_steps: quadrature points (an int; a warning above 2,000, refused above 100,000).
        integration: ``gausslegendre`` (default) or a Riemann rule (``riemann_left``,
            ``riemann_right``, ``riemann_middle``, ``riemann_trapezoid``); Captum calls this
            option ``method``, a name ``attribute(..., method=...)`` already uses.
        internal_batch_size: path points (images) per forward pass, or ``"auto"`` (default:
            see :func:`rightfocus.attribution.base.images_per_pass`).
        memory_budget: bytes (or ``"2GB"``) for ``auto``; default: the environment variable
            ``RIGHTFOCUS_MEMORY_BUDGET`` or a share of the free memory.
    """

    def __init__(
        self,
        *,
        baseline: float | Tensor | None = None,
        n_steps: int = 50,
        integration: str = "gausslegendre",
        internal_batch_size: int | str | None = "auto",
        memory_budget: int | str | None = None,
        return_delta: bool = False,
        create_graph: bool = False,
        eval_mode: bool | None = None,
    ) -> None:
        super().__init__(create_graph=create_graph, eval_mode=eval_mode)
        self.alphas, self.weights = riemann_steps(n_steps, integration)
        if isinstance(baseline, (int, float)) and not math.isfinite(baseline):
            raise ValueError(f"baseline must be finite, got {baseline!r}")
        if memory_budget is not None:
            parse_bytes(memory_budget)
        self.baseline = baseline
        self.n_steps = n_steps
        self.integration = integration
        self.internal_batch_size = pass_size_option(internal_batch_size)
        self.memory_budget = memory_budget
        self.return_delta = return_delta

    def _baseline(self, x: Tensor) -> Tensor:
        base = broadcast_baseline(self.baseline, x)
        if not bool(torch.isfinite(base).all()):
            raise ValueError(
                "baseline contains NaN or Inf values; Integrated Gradients needs a finite "
                "reference input (e.g. zeros, a blurred image or the data mean)"
            )
        return base

    def _attribute(self, model: nn.Module, x: Tensor, target: Target) -> Any:
        return self._attribute_multi(model, x, target, single=True)

    def _attribute_multi(  # type: ignore[override]
        self, model: nn.Module, x: Tensor, targets: Target, single: bool = False
    ) -> Any:
        base = self._baseline(x)
        fixed = class_target(model, x, targets)
        K = fixed.shape[1] if isinstance(fixed, Tensor) and fixed.dim() == 2 else 1
        images = images_per_pass(self.internal_batch_size, model, x, self.memory_budget, K)
        if images < x.shape[0]:
            return split_batch(lambda xs, ts: self._integrate(model, xs, ts, images), x, fixed,
                               images)  # fmt: skip
        return self._integrate(model, x, fixed, images, base)

    def _integrate(
        self, model: nn.Module, x: Tensor, fixed: Any, images: int, base: Tensor | None = None
    ) -> Any:
        base = self._baseline(x) if base is None else base
        B = x.shape[0]
        alphas = torch.tensor(self.alphas, dtype=x.dtype, device=x.device)
        weights = torch.tensor(self.weights, dtype=x.dtype, device=x.device)
        diff = x - base
        multi = isinstance(fixed, Tensor) and fixed.dim() == 2
        per_pass = copies_per_pass(images, B, self.n_steps)
        # oneDNN's CPU convolutions are faster on channels-last (NHWC) inputs, and a convolution
        # keeps that layout through the network; models that cannot take it (a .view of a
        # feature map) raise a RuntimeError and the call continues in the default layout
        channels_last = x.device.type == "cpu" and not self.create_graph
        entry = None if self.create_graph else affine_entry(model, x[:1])
        total: Tensor | None = None
        if entry is not None:  # closed forms through the affine first layer (_entry.py)
            total = entry_path_gradients(
                model, entry, x, base, alphas, weights, fixed, per_pass, channels_last
            )
        for start in range(0, self.n_steps if entry is None else 0, per_pass):
            a = alphas[start : start + per_pass]
            k = a.shape[0]
            # (k, B, C, H, W) path points, flattened step-major.
            path = (base.unsqueeze(0) + a.view(k, 1, 1, 1, 1) * diff.unsqueeze(0)).reshape(
                k * B, *x.shape[1:]
            )
            tgt = repeat_target(fixed, k)
            grads = None
            if channels_last:
                try:
                    nhwc = path.contiguous(memory_format=torch.channels_last)
                    grads = input_gradient(model, nhwc, tgt).contiguous()
                except RuntimeError as err:  # only a layout refusal is retried
                    if not is_layout_refusal(err):
                        raise
                    channels_last = False
            if grads is None:
                grads = input_gradient(model, path, tgt, self.create_graph)
            w = weights[start : start + k].view(k, *([1] * grads.dim()))
            part = (grads.view(k, B, *grads.shape[1:]) * w).sum(dim=0)
            total = part if total is None else total + part
        assert total is not None
        d = diff.unsqueeze(1) if multi else diff
        attr = d * total
        if not self.return_delta:
            return attr
        with torch.no_grad():
            gap = select(model(x), fixed) - select(model(base), fixed)
        return attr, attr.detach().flatten(2 if multi else 1).sum(-1) - gap


class _ReLURule(_Gradient):
    rule: str = ""

    def _attribute(self, model: nn.Module, x: Tensor, target: Target) -> Tensor:
        with hooks.relu_backward_rule(model, self.rule):
            return input_gradient(model, x, target, self.create_graph)

    def _attribute_multi(self, model: nn.Module, x: Tensor, targets: Tensor) -> Tensor:
        return self._attribute(model, x, targets)  # input_gradient shares the forward pass


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
