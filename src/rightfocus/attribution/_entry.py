"""Integrated Gradients through an affine entry layer, in closed form at both ends.

When a model's first layer ``L(z) = W z + b`` (an ``nn.Conv2d`` or ``nn.Linear``) receives the
model's input itself, two identities hold exactly for the straight-line path
``x_a = x' + a (x - x')`` of Integrated Gradients (Sundararajan et al. 2017, "Axiomatic
attribution for deep networks"):

- forward: ``L(x_a) = L(x') + a (L(x) - L(x'))`` (the coefficients ``1 - a`` and ``a`` sum to
  one, so the bias is kept), so the layer runs on two batches instead of one per step;
- backward: ``dS/dx`` at ``x_a`` is ``W^T dS/dh`` at ``h = L(x_a)`` (plus the gradient of any
  other use of the input), and ``W^T`` is linear, so the weighted sum over the steps needs one
  transposed layer, ``W^T sum_k w_k dS/dh_k``, instead of one per step.

The backward identity holds for any weighted sum of input gradients, so SmoothGrad of the
plain gradient (Smilkov et al. 2017, "SmoothGrad: removing noise by adding noise"), a mean over
noisy copies, uses it too (:func:`weighted_entry_gradients`); its squared and variance forms
are not linear in the gradients and do not.

The layer's backward to a few-channel image is an inefficient convolution on CPUs (on LeNet-5
it was two thirds of Integrated Gradients' time), so skipping it per step is the main gain
(``python benchmarks/attribution.py --only integrated_gradients``, ``--only smoothgrad``).
The results equal the step-by-step computation up to float rounding.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor, nn

from rightfocus import hooks
from rightfocus.attribution._passes import is_layout_refusal
from rightfocus.attribution.targets import Target, repeat_target, select

__all__ = ["affine_entry", "entry_path_gradients", "weighted_entry_gradients"]

_AFFINE = (nn.Conv2d, nn.Linear)


def affine_entry(model: nn.Module, probe: Tensor) -> nn.Module | None:
    """The model's first layer if it is an ``nn.Conv2d`` / ``nn.Linear`` that receives the
    model's input tensor itself, exactly once per forward pass (one forward of ``probe`` with
    the random state restored after it); else None. A model with modules in training mode is
    not probed (the extra forward would update BatchNorm statistics): None."""
    if any(m.training for m in model.modules()):
        return None
    leaves = [m for m in model.modules() if next(m.children(), None) is None]
    calls: list[tuple[nn.Module, Any]] = []

    def record(module: nn.Module, args: tuple[Any, ...]) -> None:
        calls.append((module, args[0] if args else None))

    handles = [m.register_forward_pre_hook(record) for m in leaves]
    devices = [probe.device.index or 0] if probe.device.type == "cuda" else []
    try:  # the model's own errors propagate (the caller's hooks and modes are restored)
        with torch.no_grad(), torch.random.fork_rng(devices=devices):
            model(probe)
    finally:
        for handle in handles:
            handle.remove()
    if not calls:
        return None
    first, arg = calls[0]
    if type(first) not in _AFFINE or arg is not probe:
        return None
    if sum(module is first for module, _ in calls) != 1:
        return None
    return first


def entry_path_gradients(
    model: nn.Module,
    entry: nn.Module,
    x: Tensor,
    base: Tensor,
    alphas: Tensor,
    weights: Tensor,
    fixed: Target,
    per_pass: int,
    channels_last: bool,
) -> Tensor:
    """``sum_k w_k dS/dx (x' + a_k (x - x'))``: ``(B, *x.shape[1:])``, or ``(B, T, ...)`` for
    ``(B, T)`` class targets, with ``per_pass`` steps of the batch per forward pass (see the
    module doc for the identities used)."""
    with torch.no_grad():
        h_base, h_x = entry(base), entry(x)
    dh, dx = h_x - h_base, x - base
    chunks = (
        (_along(h_base, dh, a), _along(base, dx, a), weights[start : start + per_pass])
        for start in range(0, alphas.shape[0], per_pass)
        for a in [alphas[start : start + per_pass]]
    )
    return weighted_entry_gradients(model, entry, x, chunks, fixed, channels_last)


def weighted_entry_gradients(
    model: nn.Module,
    entry: nn.Module,
    x: Tensor,
    chunks: Iterable[tuple[Tensor | None, Tensor, Tensor]],
    fixed: Target,
    channels_last: bool,
) -> Tensor:
    """``sum_j w_j dS/dz_j`` over images ``z_j`` given in chunks ``(h, images, w)`` of ``k``
    copies of the batch stacked copy-major (``w``: ``(k,)``; ``h``: the entry layer's
    outputs on ``images``, or None to compute them), through the entry layer's input gradient
    once at the end: ``W^T sum_j w_j dS/dh_j`` plus the gradient of any other use of the
    input. ``(B, ...)``, or ``(B, T, ...)`` for ``(B, T)`` class targets."""
    B = x.shape[0]
    multi = isinstance(fixed, Tensor) and fixed.dim() == 2
    n_targets = fixed.shape[1] if multi else 1  # type: ignore[union-attr]
    sum_h: list[Tensor | None] = [None] * n_targets
    sum_x: list[Tensor | None] = [None] * n_targets
    for h, images, w in chunks:
        k = w.shape[0]
        if h is None:
            with torch.no_grad():
                h = entry(images)
        while True:
            try:
                scored = _scores(model, entry, h, images, repeat_target(fixed, k), channels_last)
                break
            except RuntimeError as err:  # only a channels-last refusal is retried
                if not (channels_last and is_layout_refusal(err)):
                    raise
                channels_last = False
        h_in, images_in, outputs = scored
        columns = [outputs[:, t] for t in range(n_targets)] if multi else [outputs]
        for t, column in enumerate(columns):
            g_h, g_x = torch.autograd.grad(
                column.sum(), [h_in, images_in], retain_graph=t < n_targets - 1, allow_unused=True
            )
            sum_h[t] = _accumulate(sum_h[t], g_h, w, k, B)
            if g_x is not None:  # the model also uses its input elsewhere
                sum_x[t] = _accumulate(sum_x[t], g_x, w, k, B)
    inp = x.detach().requires_grad_(True)
    with torch.enable_grad():
        out = entry(inp)
        grads = []
        for t in range(n_targets):
            assert sum_h[t] is not None
            (g,) = torch.autograd.grad(out, inp, sum_h[t], retain_graph=t < n_targets - 1)
            extra = sum_x[t]
            grads.append(g if extra is None else g + extra)
    return torch.stack(grads, dim=1) if multi else grads[0]


def _along(origin: Tensor, step: Tensor, a: Tensor) -> Tensor:
    """``origin + a_j step`` for each of the ``k`` values ``a``, stacked step-major."""
    k = a.shape[0]
    points = origin.unsqueeze(0) + a.view(k, *([1] * origin.dim())) * step.unsqueeze(0)
    return points.reshape(k * origin.shape[0], *origin.shape[1:])


def _scores(
    model: nn.Module, entry: nn.Module, h: Tensor, path: Tensor, target: Target, nhwc: bool
) -> tuple[Tensor, Tensor, Tensor]:
    """The model's target scores on ``path`` with the entry layer's output replaced by ``h``
    (both leaves that require grad, channels-last when ``nhwc``)."""
    if nhwc and h.dim() == 4 and path.dim() == 4:
        h = h.contiguous(memory_format=torch.channels_last)
        path = path.contiguous(memory_format=torch.channels_last)
    h = h.detach().requires_grad_(True)
    path = path.detach().requires_grad_(True)
    with hooks.patched_forward(entry, lambda _original: lambda *args, **kwargs: h):
        outputs = model(path)
    return h, path, select(outputs, target)


def _accumulate(total: Tensor | None, grads: Tensor, w: Tensor, k: int, B: int) -> Tensor:
    """``total + sum_j w_j grads_j`` over the ``k`` steps stacked step-major in ``grads``."""
    steps = grads.reshape(k, B, *grads.shape[1:])
    part = (steps * w.view(k, *([1] * (steps.dim() - 1)))).sum(dim=0)
    return part if total is None else total + part
