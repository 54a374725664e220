"""Reference-based attribution: DeepLIFT (rescale rule) and DeepSHAP.

Both run the model twice with every supported nonlinearity swapped
(:func:`rightfocus.hooks.paired_backward_rules`): a reference pass on ``x'`` records each
nonlinearity's input and output, and the input pass on ``x`` pairs every nonlinearity with its
reference values and gives it a backward that uses both:

- elementwise activations (ReLU, Sigmoid, Tanh, Softplus, ELU, GELU, ...): the rescale rule
  ``m = (f(x) - f(x_ref)) / (x - x_ref)``, or ``f'(x)`` where ``|x - x_ref| < eps``;
- max-pooling: each output's difference ``y - y_ref`` is routed to the argmax of ``x`` (the part
  ``max(y, y_ref) - y_ref``) and to the argmax of ``x_ref`` (the part ``y - max(y, y_ref)``),
  then divided by ``x - x_ref`` (plain gradient where ``|x - x_ref| < eps``), as Captum does;
- linear layers (convolution, linear, average pooling, batch norm in eval mode, reshapes) keep
  their ordinary backward, which passes the multipliers through.

The backward of the input pass then is the DeepLIFT multiplier ``m_{x -> t}`` and
``sum_i (x_i - x_ref_i) m_i = t(x) - t(x_ref)`` (summation-to-delta). A module called several
times (torchvision's ResNet reuses one ``nn.ReLU`` per block) gets each call's own reference
values, in call order. Functional calls in a model's ``forward`` (``F.relu``, ``F.gelu``,
``x.sigmoid()``) get the rescale rule too (a ``torch`` function mode during the passes).
What has no rule here is refused with an error naming the module, never silently wrong:
LayerNorm-type normalisation, attention and squeeze-excitation gating up front, and at run time
any product or quotient of two input-dependent tensors, softmax or functional max-pooling.
"""

from __future__ import annotations

import math
from collections import defaultdict, deque
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from rightfocus import hooks
from rightfocus._pooling import MaxPool2d
from rightfocus.attribution._unsupported import refuse_unsupported
from rightfocus.attribution.base import (
    Attribution,
    broadcast_baseline,
    copies_per_pass,
    images_per_pass,
    pass_options,
    register_method,
    split_batch,
    target_gradients,
)
from rightfocus.attribution.targets import (
    Target,
    class_target,
    fix_target,
    repeat_target,
    select,
)

__all__ = ["ELEMENTWISE", "DeepLift", "DeepShap", "deeplift_rules", "paired_deeplift"]

ELEMENTWISE: tuple[type[nn.Module], ...] = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU,
    nn.Mish, nn.Sigmoid, nn.Tanh, nn.Softplus, nn.Hardtanh, nn.Hardsigmoid, nn.Hardswish,
)  # fmt: skip
_POOLS: dict[type[nn.Module], Callable[..., Any]] = {
    nn.MaxPool1d: F.max_pool1d,
    nn.MaxPool2d: F.max_pool2d,
    MaxPool2d: F.max_pool2d,  # nn.MaxPool2d with a fast no-grad CPU path (LeNet's pools)
    nn.MaxPool3d: F.max_pool3d,
}


class _Pairing:
    """The reference's values at every nonlinearity, recorded by one pass, replayed by the next.

    ``mode="reference"``: each patched module runs normally and records its input and output
    (and the arg-maxima of a max-pool); ``mode="input"`` (only with ``true_copy``, for
    ``create_graph``) records the input's own values with their ordinary autograd graph;
    ``mode="pair"``: each module takes the recorded values in call order (a module called twice,
    e.g. a shared ReLU, gets both calls' values in the same order) and applies its rule.
    """

    def __init__(self, true_copy: bool = False) -> None:
        self.mode = "reference"
        self.true_copy = true_copy
        self.inside = 0  # > 0 while a module's own rule runs (its functional calls pass through)
        self.stores: dict[str, dict[int, deque[tuple[Tensor, ...]]]] = {
            "reference": defaultdict(deque),
            "input": defaultdict(deque),
        }

    def record(self, module: nn.Module, values: tuple[Tensor, ...]) -> None:
        self.stores[self.mode][id(module)].append(values)

    def take(self, module: nn.Module, x: Tensor, store: str) -> tuple[Tensor, ...]:
        queue = self.stores[store][id(module)]
        if not queue or queue[0][0].shape != x.shape:
            raise RuntimeError(
                f"{type(module).__name__} was called differently for the input and for the "
                "reference (another number of calls or input shape): DeepLIFT needs a forward "
                "pass whose sequence of nonlinear modules does not depend on the data"
            )
        return queue.popleft()

    def pair(self, module: nn.Module, x: Tensor) -> tuple[tuple[Tensor, ...], tuple[Any, ...]]:
        """``(reference values, own values)``; own values are ``None`` without ``true_copy``."""
        ref = self.take(module, x, "reference")
        own = self.take(module, x, "input") if self.true_copy else (None,) * len(ref)
        return ref, own

    def check_consumed(self) -> None:
        if any(self.stores["reference"].values()):
            raise RuntimeError(
                "The forward pass called some nonlinear modules for the reference but not for "
                "the input; DeepLIFT needs the same sequence of modules for both"
            )


def _rescale_slope(
    x: Tensor,
    y: Tensor,
    ref: Tensor,
    y_ref: Tensor,
    eps: float,
    derivative: Callable[[Tensor], Tensor],
) -> Tensor:
    """``(f(x) - f(x')) / (x - x')``, or ``f'(x)`` where ``|x - x'| < eps``."""
    dx = x - ref
    tiny = dx.abs() < eps
    slope = (y - y_ref) / dx.masked_fill(tiny, 1.0)
    return torch.where(tiny, derivative(x), slope) if bool(tiny.any()) else slope


class _Rescale(torch.autograd.Function):
    """``y = f(x)``; backward: ``grad * (f(x) - f(x')) / (x - x')`` (Shrikumar et al. 2017, Eq. 3).

    ``(x', f(x'))`` come from the reference pass. Without ``create_graph`` the multiplier is
    computed in the forward pass and only it is kept; with ``create_graph``, ``(x, f(x))`` with
    their true graph are given and the multiplier is computed in the backward pass from
    graph-connected values, so that its parameter gradients are exact.
    """

    @staticmethod
    def forward(
        ctx: Any,
        x: Tensor,
        ref: Tensor,
        y_ref: Tensor,
        x_true: Tensor | None,
        y_true: Tensor | None,
        rule: tuple[Callable[[Tensor], Tensor], Callable[[Tensor], Tensor], float],
    ) -> Tensor:
        fn, derivative, eps = rule
        y = fn(x)
        ctx.derivative, ctx.eps = derivative, eps
        if x_true is None or y_true is None:
            ctx.save_for_backward(_rescale_slope(x, y, ref, y_ref, eps, derivative))
        else:
            ctx.save_for_backward(x_true, y_true, ref, y_ref)
        return y

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        saved = ctx.saved_tensors
        if len(saved) == 1:
            return grad * saved[0], None, None, None, None, None
        x, y, ref, y_ref = saved
        slope = _rescale_slope(x, y, ref, y_ref, ctx.eps, ctx.derivative)
        return grad * slope, None, None, None, None, None


def _unpool(shape: torch.Size, *parts: tuple[Tensor, Tensor]) -> Tensor:
    """Scatter-add pooled ``(values, indices)`` back to the input positions (flat per plane).

    Out of place, so that batched values (several targets' cotangents under ``vmap``) can be
    scattered into the unbatched zeros."""
    flat = parts[0][0].new_zeros(*shape[:2], math.prod(shape[2:]))
    for values, indices in parts:
        flat = flat.scatter_add(2, indices.flatten(2), values.flatten(2))
    return flat.view(shape)


class _MaxPoolRescale(torch.autograd.Function):
    """Max-pooling with DeepLIFT's paired backward (the rule Captum's ``DeepLift`` uses).

    With ``top = max(y, y')``: ``Δy`` splits into ``top - y'`` (sent to the argmax of ``x``) and
    ``y - top`` (sent to the argmax of ``x'``); the sum is divided by ``Δx`` (the plain
    gradient where ``|Δx| < eps``). Overlapping windows accumulate (Captum's unpooling
    overwrites instead; equal for stride = kernel). Reference and (for ``create_graph``) true
    values as for :class:`_Rescale`, each ``(input, pooled, arg-maxima)``.
    """

    @staticmethod
    def forward(
        ctx: Any,
        x: Tensor,
        ref: Tensor,
        y_ref: Tensor,
        idx_ref: Tensor,
        x_true: Tensor | None,
        y_true: Tensor | None,
        idx_true: Tensor | None,
        rule: tuple[Callable[[Tensor], Any], float],
    ) -> Tensor:
        pool, ctx.eps = rule
        y, idx = pool(x)
        if x_true is None or y_true is None or idx_true is None:
            x_true, y_true, idx_true = x, y, idx
        ctx.save_for_backward(x_true, y_true, idx_true, ref, y_ref, idx_ref)
        return y  # type: ignore[no-any-return]

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        x, y, ix, ref, y_ref, iref = ctx.saved_tensors
        top = torch.maximum(y, y_ref)
        routed = _unpool(x.shape, (grad * (top - y_ref), ix), (grad * (y - top), iref))
        dx = x - ref
        tiny = dx.abs() < ctx.eps
        m = routed / dx.masked_fill(tiny, 1.0)
        if bool(tiny.any()):
            m = torch.where(tiny, _unpool(x.shape, (grad, ix)), m)
        return (m, *([None] * 7))


Rule = Callable[[nn.Module, Callable[..., Any]], Callable[..., Any]]


def _relu_derivative(x: Tensor) -> Tensor:
    return (x > 0).to(x.dtype)


def _autograd_derivative(fn: Callable[[Tensor], Tensor]) -> Callable[[Tensor], Tensor]:
    """``x -> f'(x)`` of an elementwise ``f``; differentiable when run under ``create_graph``."""

    def derivative(x: Tensor) -> Tensor:
        keep = torch.is_grad_enabled() and x.requires_grad
        with torch.enable_grad():
            xi = x if keep else x.detach().requires_grad_(True)
            (d,) = torch.autograd.grad(fn(xi).sum(), xi, create_graph=keep)
        return d

    return derivative


def _elementwise_rule(eps: float, pairing: _Pairing) -> Rule:
    def make(module: nn.Module, original: Callable[..., Any]) -> Callable[..., Any]:
        inplace = bool(getattr(module, "inplace", False))

        def fn(t: Tensor) -> Tensor:
            return original(t.clone() if inplace else t)  # type: ignore[no-any-return]

        derivative = _relu_derivative if type(module) is nn.ReLU else _autograd_derivative(fn)

        def forward(t: Tensor) -> Tensor:
            pairing.inside += 1
            try:
                if pairing.mode != "pair":
                    y = fn(t)
                    pairing.record(module, (t, y))
                    return y
                ref, own = pairing.pair(module, t)
                return _Rescale.apply(t, *ref, *own, (fn, derivative, eps))  # type: ignore[no-any-return]
            finally:
                pairing.inside -= 1

        return forward

    return make


def _maxpool_rule(eps: float, pairing: _Pairing) -> Rule:
    def make(module: nn.Module, _original: Callable[..., Any]) -> Callable[..., Any]:
        m: Any = module
        if m.return_indices:
            raise ValueError(
                f"DeepLIFT cannot rewrite {type(module).__name__}(return_indices=True); use a "
                "pooling layer that returns only the pooled tensor"
            )
        pool_fn = _POOLS[type(module)]

        def pool(t: Tensor) -> Any:
            return pool_fn(
                t, m.kernel_size, m.stride, m.padding, m.dilation,
                ceil_mode=m.ceil_mode, return_indices=True,
            )  # fmt: skip

        def forward(t: Tensor) -> Tensor:
            pairing.inside += 1
            try:
                if pairing.mode != "pair":
                    y, idx = pool(t)
                    pairing.record(module, (t, y, idx))
                    return y  # type: ignore[no-any-return]
                ref, own = pairing.pair(module, t)
                return _MaxPoolRescale.apply(t, *ref, *own, (pool, eps))  # type: ignore[no-any-return]
            finally:
                pairing.inside -= 1

        return forward

    return make


def _activation_types(model: nn.Module | None) -> set[type[nn.Module]]:
    """Elementwise activation modules of ``model`` beyond :data:`ELEMENTWISE`: timm's own
    (``timm.layers.activations``: GELU, Swish, HardSwish, ...) and subclasses of the known ones."""
    found: set[type[nn.Module]] = set()
    for m in model.modules() if model is not None else ():
        t = type(m)
        if t in ELEMENTWISE:
            continue
        if isinstance(m, ELEMENTWISE) or t.__module__.startswith("timm.layers.activations"):
            found.add(t)
    return found


def deeplift_rules(
    eps: float, pairing: _Pairing, model: nn.Module | None = None
) -> dict[type[nn.Module], Rule]:
    """The module-type -> forward rules for :func:`rightfocus.hooks.paired_backward_rules`
    (with ``model``: also its timm activation modules and subclasses of known ones)."""
    kinds = (*ELEMENTWISE, *_activation_types(model))
    rules: dict[type[nn.Module], Rule] = dict.fromkeys(kinds, _elementwise_rule(eps, pairing))
    rules.update(dict.fromkeys(_POOLS, _maxpool_rule(eps, pairing)))
    return rules


# --- functional nonlinearities (F.relu, F.gelu, x.sigmoid(), ...) --------------------------------

_F = torch.nn.functional
_ELEMENTWISE_FUNCTIONS: tuple[Any, ...] = (
    _F.relu, torch.relu, Tensor.relu, _F.relu6, _F.leaky_relu, _F.elu, _F.selu, _F.celu,
    _F.gelu, _F.silu, _F.mish, _F.hardswish, _F.hardsigmoid, _F.hardtanh, _F.softplus,
    _F.sigmoid, torch.sigmoid, Tensor.sigmoid, _F.tanh, torch.tanh, Tensor.tanh,
)  # fmt: skip
# nonlinear in two input-dependent operands (products, quotients, attention)
_BINARY = (
    torch.mul, Tensor.mul, Tensor.__mul__, Tensor.__rmul__, Tensor.__imul__, torch.div,
    Tensor.div, Tensor.__truediv__, Tensor.__rtruediv__, torch.matmul, Tensor.matmul,
    Tensor.__matmul__, torch.bmm, torch.einsum,
)  # fmt: skip
# nonlinear in one input-dependent operand, with no rescale rule here
_UNARY = (
    _F.softmax, torch.softmax, Tensor.softmax, _F.log_softmax, _F.layer_norm, _F.group_norm,
    _F.scaled_dot_product_attention, _F.max_pool1d, _F.max_pool2d, _F.max_pool3d, torch.max,
    Tensor.max, torch.amax, Tensor.amax, torch.exp, Tensor.exp, torch.log, Tensor.log,
    torch.pow, Tensor.pow, Tensor.__pow__, torch.sqrt, Tensor.sqrt, torch.rsqrt, Tensor.rsqrt,
    torch.abs, Tensor.abs, torch.clamp, Tensor.clamp, Tensor.relu_, torch.relu_,
    Tensor.sigmoid_, Tensor.tanh_,
)  # fmt: skip


def _depends_on_input(value: Any) -> bool:
    return isinstance(value, Tensor) and value.requires_grad and not isinstance(value, nn.Parameter)


class _Unsupported(torch.autograd.Function):
    """Identity whose backward raises: marks an operation DeepLIFT has no rule for, so that
    the call fails only when the target score depends on it."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, message: str) -> Tensor:
        ctx.message = message
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        raise ValueError(ctx.message)


class _FunctionalRules(TorchFunctionMode):
    """DeepLIFT for functional calls in a model's ``forward``, during the paired passes.

    Elementwise nonlinearities called as functions (``F.relu``, ``F.gelu``, ``x.sigmoid()``)
    get the rescale rule, paired in call order like the modules; operations that are nonlinear
    in the input without a rule here (a product or quotient of two input-dependent tensors,
    softmax, layer norm, functional max-pooling, ...) are refused with the name of the module
    that called them. Calls made inside a module that already has its rule pass through.
    """

    def __init__(self, pairing: _Pairing, eps: float, stack: list[str]) -> None:
        super().__init__()
        self.pairing, self.eps, self.stack = pairing, eps, stack
        self.keys: dict[Any, nn.Module] = {}

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        if self.pairing.inside == 0:
            if func in _ELEMENTWISE_FUNCTIONS and args and isinstance(args[0], Tensor):
                return self._rescale(func, args, kwargs)
            if self.pairing.mode == "pair" and self._nonlinear(func, args, kwargs):
                out = func(*args, **kwargs)
                if isinstance(out, Tensor) and out.requires_grad:
                    return _Unsupported.apply(out, self._message(func))
                return out
        return func(*args, **kwargs)

    @staticmethod
    def _nonlinear(func: Any, args: Any, kwargs: Any) -> bool:
        operands = [*args, *kwargs.values()]
        if func in _BINARY:
            divisor = (
                func in (torch.div, Tensor.div, Tensor.__truediv__)
                and len(args) > 1
                and _depends_on_input(args[1])
            ) or (func is Tensor.__rtruediv__ and _depends_on_input(args[0]))
            return divisor or sum(_depends_on_input(a) for a in operands) >= 2
        return func in _UNARY and any(_depends_on_input(a) for a in operands)

    def _message(self, func: Any) -> str:
        where = self.stack[-1] if self.stack else "the model's forward"
        name = getattr(func, "__name__", str(func))
        return (
            f"DeepLIFT has no rule for {name!r} called in {where!r}: it is nonlinear in the "
            "input (a product or quotient of input-dependent tensors, a normalisation, softmax "
            "or functional max-pooling), so the multipliers would be wrong. Use "
            "integrated_gradients, or write the nonlinearity as an nn.Module DeepLIFT knows."
        )

    def _rescale(self, func: Any, args: Any, kwargs: Any) -> Tensor:
        rest = args[1:]
        opts = {k: v for k, v in kwargs.items() if k != "inplace"}
        if func in (_F.relu, _F.relu6, _F.hardswish, _F.hardsigmoid, _F.silu, _F.mish):
            rest = ()  # their only other argument is ``inplace``

        copy = any(a is True for a in rest)  # a positional ``inplace=True``

        def fn(t: Tensor) -> Tensor:
            return func(t.clone() if copy else t, *rest, **opts)  # type: ignore[no-any-return]

        key = self.keys.setdefault(func, nn.Identity())
        t = args[0]
        if self.pairing.mode != "pair":
            y = fn(t)
            self.pairing.record(key, (t, y))
            return y
        ref, own = self.pairing.pair(key, t)
        rule = (fn, _autograd_derivative(fn), self.eps)
        return _Rescale.apply(t, *ref, *own, rule)  # type: ignore[no-any-return]


def paired_deeplift(
    model: nn.Module,
    x: Tensor,
    ref: Tensor,
    target: Target,
    eps: float = 1e-10,
    create_graph: bool = False,
) -> tuple[Tensor, Tensor]:
    """DeepLIFT attributions ``(x - ref) * m`` and score gaps ``t(x) - t(ref)`` of ``B`` pairs
    (``(B, K, ...)`` and ``(B, K)`` for a ``(B, K)`` class target: the K multipliers share both
    passes, batched vector-Jacobian products through the paired backward rules).

    A reference pass (without autograd graph) records every nonlinearity's input and output;
    the input pass then pairs each nonlinearity with its reference values, and one backward
    pass gives the multipliers. ``target`` is resolved on ``x`` (``None``: the class predicted
    for ``x``). With ``create_graph`` the multipliers must not stand in for the true
    derivatives when the result is differentiated w.r.t. the parameters, so an extra, ordinary
    pass on ``x`` supplies graph-connected values, and the reference pass keeps its graph.
    """
    refuse_unsupported(
        model,
        "DeepLIFT",
        "Use integrated_gradients (which needs no rule per layer) or occlusion for this model.",
    )
    pairing = _Pairing(true_copy=create_graph)
    xa = x if (create_graph and x.requires_grad) else x.detach().requires_grad_(True)
    with (
        hooks.module_call_stack(model) as stack,
        hooks.paired_backward_rules(model, deeplift_rules(eps, pairing, model)),
        _FunctionalRules(pairing, eps, stack),
    ):
        with torch.set_grad_enabled(create_graph):
            out_ref = model(ref)
        if create_graph:
            pairing.mode = "input"
            model(xa)
        pairing.mode = "pair"
        out = model(xa)
        pairing.check_consumed()
        fixed = fix_target(out, target)
        scores = select(out, fixed)
        if scores.dim() == 2:
            grad = target_gradients(scores, xa, create_graph)
        else:
            (grad,) = torch.autograd.grad(scores.sum(), xa, create_graph=create_graph)
    gap = scores.detach() - select(out_ref, fixed).detach()
    diff = x - ref
    return (diff.unsqueeze(1) if grad.dim() > diff.dim() else diff) * grad, gap


def _check_eps(eps: float) -> float:
    if not (isinstance(eps, (int, float)) and eps > 0):
        raise ValueError(f"eps must be a positive number, got {eps!r}")
    return float(eps)


class _Reference(Attribution):
    differentiable = True

    def __init__(
        self, *, eps: float, return_delta: bool, create_graph: bool, eval_mode: bool | None
    ) -> None:
        super().__init__(eval_mode=eval_mode)
        self.eps = _check_eps(eps)
        self.return_delta = bool(return_delta)
        self._create_graph = bool(create_graph)


@register_method("deeplift")
class DeepLift(_Reference):
    """DeepLIFT with the rescale rule (Shrikumar et al. 2017, "Learning important features
    through propagating activation differences").

    ``A_i = (x_i - x'_i) * m_i`` where ``m`` is the multiplier ``m_{Δx -> Δt}`` obtained by the
    chain rule for multipliers: linear layers pass multipliers through, a nonlinearity
    ``y = f(z)`` multiplies by ``(f(z) - f(z')) / (z - z')`` (``f'(z)`` where ``|z - z'| < eps``),
    max-pooling routes the output difference to the arg-maxima (module docstring).
    Summation-to-delta: ``sum_i A_i = t(x) - t(x')``; with ``return_delta=True`` the call returns
    ``(attribution, delta)`` where ``delta = sum_i A_i - (t(x) - t(x'))`` per sample, as
    :class:`~rightfocus.attribution.gradient.IntegratedGradients` does. Matches Captum's
    ``DeepLift``. Needs ``nn.Module`` nonlinearities (not functional calls).

    Args:
        baseline: ``x'``; ``None`` (zeros), a number, or a tensor broadcastable to ``x``.
        eps: ``|z - z'|`` below which the gradient replaces the rescale multiplier.
        return_delta: also return the summation-to-delta gap.
        create_graph: keep the result differentiable w.r.t. the model parameters (costs one
            more forward pass). The model then keeps its own train/eval mode, as for
            every method: dropout or batch statistics in training mode break the pairing of
            ``x`` with ``x'``; pass ``eval_mode=True`` for such models.
    """

    def __init__(
        self,
        *,
        baseline: float | Tensor | None = None,
        eps: float = 1e-10,
        return_delta: bool = False,
        create_graph: bool = False,
        eval_mode: bool | None = None,
    ) -> None:
        super().__init__(
            eps=eps, return_delta=return_delta, create_graph=create_graph, eval_mode=eval_mode
        )
        if baseline is not None and not isinstance(baseline, (int, float, Tensor)):
            raise TypeError(f"baseline must be None, a number or a tensor, not {type(baseline)}")
        self.baseline = baseline

    def _baseline(self, x: Tensor) -> Tensor:
        return broadcast_baseline(self.baseline, x)

    def _attribute(self, model: nn.Module, x: Tensor, target: Target) -> Any:
        attr, gap = paired_deeplift(
            model, x, self._baseline(x), target, self.eps, self.create_graph
        )
        if not self.return_delta:
            return attr
        return attr, attr.detach().flatten(gap.dim()).sum(-1) - gap

    def _attribute_multi(self, model: nn.Module, x: Tensor, targets: Tensor) -> Any:
        return self._attribute(model, x, targets)  # the K targets share both passes


@register_method("deepshap")
class DeepShap(_Reference):
    """DeepSHAP (Lundberg & Lee 2017, "A unified approach to interpreting model predictions"):
    DeepLIFT averaged over a distribution of references.

    ``A_i = 1/N sum_j (x_i - b_{j,i}) * m_i(x, b_j)`` for reference images ``b_1 .. b_N``
    (e.g. a random sample of training images), approximating SHAP values with the expectation
    ``E[t(b)]`` as the base value: ``sum_i A_i = t(x) - 1/N sum_j t(b_j)``. With
    ``return_delta=True`` the call returns ``(attribution, delta)``, ``delta = sum_i A_i -
    (t(x) - mean_j t(b_j))``. Matches Captum's ``DeepLiftShap``.

    Args:
        baselines: ``(N, C, H, W)`` reference images (required; ``N >= 1``).
        eps: ``|z - z'|`` below which the gradient replaces the rescale multiplier.
        internal_batch_size: (image, reference) pairs per forward pass, or ``"auto"`` (the
            default: see :func:`rightfocus.attribution.base.images_per_pass`; a pair counts
            twice against the memory budget, its reference pass keeps its activations too).
            Fewer pairs than images split the batch; otherwise every pass holds all images with
            as many references as fit.
        memory_budget: bytes (or ``"2GB"``) for ``auto``.
        return_delta: also return the summation-to-delta gap.
        create_graph: keep the result differentiable w.r.t. the model parameters.
    """

    def __init__(
        self,
        *,
        baselines: Tensor | None = None,
        eps: float = 1e-10,
        internal_batch_size: int | str | None = "auto",
        memory_budget: int | str | None = None,
        return_delta: bool = False,
        create_graph: bool = False,
        eval_mode: bool | None = None,
    ) -> None:
        super().__init__(
            eps=eps, return_delta=return_delta, create_graph=create_graph, eval_mode=eval_mode
        )
        if baselines is None:
            raise ValueError(
                "deepshap needs baselines=...: an (N, C, H, W) tensor of reference images, e.g. "
                "a random sample of about 100 training images; for one reference use 'deeplift'"
            )
        if not isinstance(baselines, Tensor) or baselines.dim() != 4 or baselines.shape[0] < 1:
            got = tuple(baselines.shape) if isinstance(baselines, Tensor) else type(baselines)
            raise ValueError(f"baselines must be an (N, C, H, W) tensor with N >= 1, got {got}")
        self.baselines = baselines
        self.internal_batch_size, self.memory_budget = pass_options(
            internal_batch_size, memory_budget
        )

    def _references(self, x: Tensor) -> Tensor:
        refs = self.baselines.to(dtype=x.dtype, device=x.device)
        if tuple(refs.shape[1:]) != tuple(x.shape[1:]):
            raise ValueError(
                f"baselines of shape {tuple(refs.shape)} do not match the images "
                f"{tuple(x.shape)}: each reference must have shape {tuple(x.shape[1:])}"
            )
        return refs

    def _attribute(self, model: nn.Module, x: Tensor, target: Target) -> Any:
        refs = self._references(x)
        target = class_target(model, x, target)  # a forward pass only for None (predicted)
        # two images per pair (the input copy and its reference), each K times for K targets
        # (batched backward passes), count against the budget
        K = target.shape[1] if isinstance(target, Tensor) and target.dim() == 2 else 1
        pairs = images_per_pass(self.internal_batch_size, model, x, self.memory_budget, 2 * K)
        if pairs < x.shape[0]:
            return split_batch(lambda xs, ts: self._average(model, xs, refs, ts, pairs), x,
                               target, pairs)  # fmt: skip
        return self._average(model, x, refs, target, pairs)

    def _average(
        self, model: nn.Module, x: Tensor, refs: Tensor, target: Target, pairs: int
    ) -> Any:
        """DeepLIFT against every reference, ``pairs`` (image, reference) pairs per pass."""
        B, N = x.shape[0], refs.shape[0]
        per_pass = copies_per_pass(pairs, B, N)
        total: Tensor | Any = 0.0
        gaps: Tensor | Any = 0.0
        for start in range(0, N, per_pass):
            chunk = refs[start : start + per_pass]
            k = chunk.shape[0]
            tgt = repeat_target(target, k)
            attr, gap = paired_deeplift(
                model, x.repeat(k, 1, 1, 1), chunk.repeat_interleave(B, dim=0), tgt,
                self.eps, self.create_graph,
            )  # fmt: skip
            total = total + attr.view(k, B, *attr.shape[1:]).sum(dim=0)
            gaps = gaps + gap.view(k, B, *gap.shape[1:]).sum(dim=0)
        attr = total / N
        if not self.return_delta:
            return attr
        return attr, attr.detach().flatten(gaps.dim()).sum(-1) - gaps / N

    def _attribute_multi(self, model: nn.Module, x: Tensor, targets: Tensor) -> Any:
        return self._attribute(model, x, targets)  # the K targets share every pass
