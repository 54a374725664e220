"""Propagation family: Layer-wise Relevance Propagation (LRP).

LRP (Bach et al. 2015, "On pixel-wise explanations for non-linear classifier decisions by
layer-wise relevance propagation"; Montavon et al. 2019, "Layer-wise relevance propagation: an
overview") sends the target score back through the network layer by layer. Each layer hands its
input the relevance of its output according to a rule; for a linear layer ``z = W x + b``

    R_in = x ⊙ W_rule^T ( R_out / stab(z_rule) )

(the "modified gradient" form; the rules are in :mod:`rightfocus.attribution._lrp_rules`).
Element-wise activations pass relevance through unchanged, average pooling and residual sums are
treated as linear maps (``Norm``), max pooling routes relevance to the winner of each window (its
gradient), as Zennit does. The rules run as the backward pass of the patched layers, so one
forward and one backward pass compute the whole relevance map.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any, Union

import torch
from torch import Tensor, nn

from rightfocus import hooks
from rightfocus.attribution._canonizers import (
    densenet_forward,
    explicit_block_forward,
    find_batchnorm_merges,
    is_linear_layer,
    merged_parameters,
    residual_blocks,
)
from rightfocus.attribution._lrp_rules import (
    AlphaBeta,
    Epsilon,
    Flat,
    Gamma,
    Gradient,
    LayerRule,
    LinearOp,
    Norm,
    Pass,
    Rule,
    ZBox,
    ZPlus,
    linear_op,
    parse_rule,
    stabilize,
)
from rightfocus.attribution._unsupported import refuse_unsupported
from rightfocus.attribution.base import Attribution, batched_vjp, register_method
from rightfocus.attribution.targets import Target, fix_target, select

__all__ = [
    "COMPOSITES",
    "LRP",
    "AlphaBeta",
    "Epsilon",
    "Flat",
    "Gamma",
    "Gradient",
    "Norm",
    "Pass",
    "Rule",
    "ZBox",
    "ZPlus",
]

RuleSpec = Union[str, Rule]  # noqa: UP007
LayerKey = Union[str, type, tuple]  # noqa: UP007
Composite = Union[str, Mapping[Any, RuleSpec]]  # noqa: UP007

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
_AVG_POOLS = (
    nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
    nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d,
)  # fmt: skip
_ACTIVATIONS = (
    nn.ELU, nn.Hardshrink, nn.Hardsigmoid, nn.Hardtanh, nn.Hardswish, nn.LeakyReLU,
    nn.LogSigmoid, nn.PReLU, nn.ReLU, nn.ReLU6, nn.RReLU, nn.SELU, nn.CELU, nn.GELU,
    nn.Sigmoid, nn.SiLU, nn.Mish, nn.Softplus, nn.Softshrink, nn.Softsign, nn.Tanh,
    nn.Tanhshrink, nn.Threshold,
)  # fmt: skip

# Presets: (first-layer types, first-layer rule) or None, then (layer types, rule) in order.
COMPOSITES: dict[str, str] = {
    "epsilon_plus": "z+ on convolutions, epsilon on dense layers",
    "epsilon_gamma_box": "z^B on the first convolution, gamma on the others, epsilon on dense",
    "epsilon_alpha2_beta1": "alpha2-beta1 on convolutions, epsilon on dense layers",
    "epsilon_plus_flat": "flat on the first linear layer, z+ on convolutions, epsilon on dense",
    "epsilon": "epsilon on every convolution and dense layer",
}

_First = Union[tuple[tuple[type, ...], Rule], None]  # noqa: UP007


def _preset(name: str, opts: dict[str, Any]) -> tuple[_First, list[tuple[tuple[type, ...], Rule]]]:
    if name not in COMPOSITES:
        raise ValueError(
            f"Unknown LRP composite {name!r}; known composites: {', '.join(COMPOSITES)} "
            "(or pass a dict mapping layer types / layer names to rules)"
        )
    eps: Rule = Epsilon(opts["epsilon"])
    dense: tuple[type, ...] = (nn.Linear,)
    if name == "epsilon":
        return None, [((*_CONVS, nn.Linear), Epsilon(opts["epsilon"]))]
    if name == "epsilon_alpha2_beta1":
        return None, [(_CONVS, AlphaBeta(2.0, 1.0, opts["stabilizer"])), (dense, eps)]
    plus: list[tuple[tuple[type, ...], Rule]] = [(_CONVS, ZPlus(opts["stabilizer"])), (dense, eps)]
    if name == "epsilon_plus":
        return None, plus
    if name == "epsilon_plus_flat":
        return ((*_CONVS, nn.Linear), Flat(opts["stabilizer"])), plus
    box = parse_rule("zbox", low=opts["low"], high=opts["high"], stabilizer=opts["stabilizer"])
    return (_CONVS, box), [(_CONVS, Gamma(opts["gamma"], opts["stabilizer"])), (dense, eps)]


def _parse_mapping(
    mapping: Mapping[Any, RuleSpec], opts: dict[str, Any]
) -> tuple[dict[str, Rule], list[tuple[tuple[type, ...], Rule]]]:
    names: dict[str, Rule] = {}
    types: list[tuple[tuple[type, ...], Rule]] = []
    for key, spec in mapping.items():
        rule = parse_rule(spec, **opts)
        if isinstance(key, str):
            names[key] = rule
        elif isinstance(key, type) and issubclass(key, nn.Module):
            types.append(((key,), rule))
        elif isinstance(key, tuple) and key and all(isinstance(k, type) for k in key):
            types.append((key, rule))
        else:
            raise TypeError(
                "Rule dict keys must be layer names (str), nn.Module subclasses or tuples of "
                f"them, not {key!r}"
            )
    return names, types


def _base_rule(module: nn.Module, stabilizer: float) -> Rule | None:
    if isinstance(module, _ACTIVATIONS + _BATCH_NORMS):
        return Pass()
    if isinstance(module, _AVG_POOLS):
        return Norm(stabilizer)
    return None


def _check_rule(name: str, module: nn.Module, rule: Rule) -> Rule:
    if is_linear_layer(module):
        if isinstance(rule, Pass):
            raise ValueError(f"The pass rule cannot be used on the linear layer {name!r}")
        return Epsilon(rule.stabilizer) if isinstance(rule, Norm) else rule
    if isinstance(rule, LayerRule):
        raise ValueError(
            f"The {rule.name} rule needs a layer with weights (nn.Linear, nn.Conv1d/2d/3d), but "
            f"{name or 'the model'!r} is {type(module).__name__}; use pass, norm or gradient there"
        )
    return rule


class _Session:
    """The patched forwards of one LRP call and what they need to share.

    ``mode`` is ``"fast"`` (one pass; rules save their own inputs), ``"record"`` (a plain forward
    that keeps the true inputs of every rule layer, with their autograd graph) or ``"replay"``
    (a forward whose rules use the recorded inputs, so that the relevance is differentiable).
    """

    def __init__(self, rules: dict[nn.Module, Rule], merges: dict[nn.Module, nn.Module],
                 blocks: list[nn.Module], stabilizer: float, mode: str) -> None:  # fmt: skip
        self.rules, self.merges, self.blocks = rules, merges, blocks
        self.model: nn.Module | None = None  # set for canonizers that rewrite the whole model
        self.stabilizer = stabilizer
        self.mode = mode
        self._captured: dict[int, deque[tuple[tuple[Tensor, ...], tuple[int, ...]]]] = {}
        self._linear_out: dict[int, Tensor] = {}

    def patches(self) -> dict[nn.Module, Callable[[Callable[..., Any]], Callable[..., Any]]]:
        out: dict[nn.Module, Callable[[Callable[..., Any]], Callable[..., Any]]] = {}
        for module, rule in self.rules.items():
            if is_linear_layer(module):
                out[module] = self._layer_patch(module, rule)
            elif isinstance(rule, Pass):
                out[module] = self._pass_patch(module)
            elif isinstance(rule, Norm):
                out[module] = self._norm_patch(module, rule)
        for layer, bn in self.merges.items():
            out.setdefault(layer, self._layer_patch(layer, Gradient()))
            out[bn] = self._merged_bn_patch(bn)
        for block in self.blocks:
            out[block] = self._block_patch(block)
        if self.model is not None:
            pool = nn.AdaptiveAvgPool2d(1)
            forward = densenet_forward(self.model, pool)
            if forward is not None:
                out[pool] = self._norm_patch(pool, Norm(self.stabilizer))
                out[self.model] = lambda _original: forward
        return out

    def _block_patch(self, block: nn.Module) -> Callable[..., Callable[[Tensor], Tensor]]:
        def add(a: Tensor, b: Tensor) -> Tensor:
            return self._residual_sum(block, a, b)

        forward = explicit_block_forward(block, add)
        return lambda _original: forward

    # -- recording and replaying true inputs (create_graph=True) ------------------------------
    def _capture(self, key: object, *tensors: Tensor) -> None:
        versions = tuple(t._version for t in tensors)
        self._captured.setdefault(id(key), deque()).append((tensors, versions))

    def _recorded(self, key: object) -> tuple[Tensor, ...]:
        queue = self._captured.get(id(key))
        if not queue:
            raise RuntimeError(
                "The model's forward called its layers differently in two identical passes; LRP "
                "with create_graph=True needs a deterministic forward (try eval_mode=True)"
            )
        tensors, versions = queue.popleft()
        if tuple(t._version for t in tensors) != versions:
            raise RuntimeError(
                "A layer input was modified in place after the layer used it; LRP with "
                "create_graph=True needs it unchanged (use out-of-place operations)"
            )
        return tensors

    # -- patched forwards ---------------------------------------------------------------------
    def _layer_patch(self, module: nn.Module, rule: Rule) -> Callable[..., Callable[..., Tensor]]:
        op, bn = linear_op(module), self.merges.get(module)

        def forward(x: Tensor) -> Tensor:
            if bn is not None:
                w, b = merged_parameters(module, bn)
            else:
                w, b = module.weight, module.bias  # type: ignore[assignment]
            if isinstance(rule, ZBox):
                rule.bounds(x)
            out = self._apply_layer(module, rule, op, x, w, b)
            if bn is not None:
                self._linear_out[id(bn)] = out
            return out

        return lambda _original: forward

    def _apply_layer(self, module: nn.Module, rule: Rule, op: LinearOp, x: Tensor, w: Tensor,
                     b: Tensor | None) -> Tensor:  # fmt: skip
        if not isinstance(rule, LayerRule):
            return op.forward(x, w, b)
        if self.mode == "record":
            self._capture(module, x)
            return op.forward(x, w, b)
        x_true = self._recorded(module)[0] if self.mode == "replay" else None
        return _LayerRuleFn.apply(_Call(rule, op, x_true), x, w, b)

    def _merged_bn_patch(self, bn: nn.Module) -> Callable[..., Callable[..., Tensor]]:
        def forward(x: Tensor) -> Tensor:
            if self._linear_out.pop(id(bn), None) is not x:
                raise RuntimeError(
                    f"canonize=True merged a {type(bn).__name__} into the layer registered just "
                    "before it, but the batch norm does not receive that layer's output in the "
                    "forward pass; call LRP with canonize=False for this model"
                )
            return x

        return lambda _original: forward

    def _pass_patch(self, module: nn.Module) -> Callable[..., Callable[..., Any]]:
        def make(original: Callable[..., Any]) -> Callable[..., Any]:
            def forward(*args: Any, **kwargs: Any) -> Any:
                if self.mode == "record" or len(args) != 1 or kwargs:
                    return original(*args, **kwargs)
                return _PassFn.apply(_out_of_place(module, original), args[0])

            return forward

        return make

    def _norm_patch(self, module: nn.Module, rule: Norm) -> Callable[..., Callable[..., Tensor]]:
        def make(original: Callable[..., Tensor]) -> Callable[..., Tensor]:
            def forward(x: Tensor) -> Tensor:
                if self.mode == "record":
                    self._capture(module, x)
                    return original(x)
                x_true = self._recorded(module)[0] if self.mode == "replay" else None
                return _NormFn.apply(_Call(rule, original, x_true), x)

            return forward

        return make

    def _residual_sum(self, block: nn.Module, a: Tensor, b: Tensor) -> Tensor:
        if self.mode == "record":
            self._capture(block, a, b)
            return a + b
        pair = self._recorded(block) if self.mode == "replay" else None
        return _SumFn.apply(_Call(Norm(self.stabilizer), None, pair), a, b)


def _out_of_place(module: nn.Module, original: Callable[..., Tensor]) -> Callable[[Tensor], Tensor]:
    if type(module) is nn.ReLU:
        return torch.relu
    if getattr(module, "inplace", False):
        return lambda x: original(x.clone())
    return original


class _Call:
    """What one rule application needs: the rule, the layer's operator and, when replaying,
    the recorded true input(s)."""

    __slots__ = ("op", "rule", "true")

    def __init__(self, rule: Any, op: Any, true: Any) -> None:
        self.rule, self.op, self.true = rule, op, true


class _LayerRuleFn(torch.autograd.Function):
    """Forward: the layer. Backward: the layer's LRP rule maps ``R_out`` to ``R_in``."""

    @staticmethod
    def forward(ctx: Any, call: _Call, x: Tensor, w: Tensor, b: Tensor | None) -> Tensor:
        z = call.op.forward(x, w, b)
        ctx.call = call
        if call.true is None:
            ctx.save_for_backward(x, w, b, z)
        else:
            ctx.save_for_backward(w, b)
        return z

    @staticmethod
    def backward(ctx: Any, r: Tensor) -> tuple[Any, ...]:
        call: _Call = ctx.call
        if call.true is None:
            x, w, b, z = ctx.saved_tensors
        else:
            w, b = ctx.saved_tensors
            x = call.true
            z = call.op.forward(x, w, b)
        return None, call.rule.relevance(call.op, x, w, b, z, r), None, None


class _NormFn(torch.autograd.Function):
    """Forward: a parameter-free linear map ``f``. Backward: ``x ⊙ J_f^T (R / stab(f(x)))``."""

    @staticmethod
    def forward(ctx: Any, call: _Call, x: Tensor) -> Tensor:
        ctx.call = call
        if call.true is None:
            ctx.save_for_backward(x)
        return call.op(x)

    @staticmethod
    def backward(ctx: Any, r: Tensor) -> tuple[Any, ...]:
        call: _Call = ctx.call
        create = call.true is not None
        x = call.true if create else ctx.saved_tensors[0]
        with torch.enable_grad():
            probe = x if x.requires_grad else x.detach().requires_grad_(True)
            z = call.op(probe)
            s = r / stabilize(z, call.rule.stabilizer)
            (g,) = torch.autograd.grad(z, probe, s, create_graph=create)
        return None, x * g


class _SumFn(torch.autograd.Function):
    """Forward: ``a + b``. Backward: ``R_a = a R / stab(a + b)``, ``R_b = b R / stab(a + b)``."""

    @staticmethod
    def forward(ctx: Any, call: _Call, a: Tensor, b: Tensor) -> Tensor:
        ctx.call = call
        if call.true is None:
            ctx.save_for_backward(a, b)
        return a + b

    @staticmethod
    def backward(ctx: Any, r: Tensor) -> tuple[Any, ...]:
        call: _Call = ctx.call
        a, b = call.true if call.true is not None else ctx.saved_tensors
        s = r / stabilize(a + b, call.rule.stabilizer)
        return None, a * s, b * s


class _PassFn(torch.autograd.Function):
    """Forward: an element-wise layer. Backward: the relevance passes through unchanged."""

    @staticmethod
    def forward(ctx: Any, fn: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
        out = fn(x)
        if out.shape != x.shape:
            raise ValueError(
                f"The pass rule needs an element-wise layer, but it maps {tuple(x.shape)} to "
                f"{tuple(out.shape)}; use the gradient or norm rule for this layer"
            )
        return x.view_as(x) if out is x else out

    @staticmethod
    def backward(ctx: Any, r: Tensor) -> tuple[Any, ...]:
        return None, r


def _output_relevance(out: Tensor, target: Target, create_graph: bool) -> Tensor:
    """``R = y ⊙ dS/dy`` at the output: the target logit, one-hot, for class targets;
    ``(K, B, classes)``, one relevance per target, for a ``(B, K)`` class tensor."""
    fixed = fix_target(out, target)
    value = out if create_graph else out.detach()
    if isinstance(fixed, Tensor) and fixed.dim() == 2:
        idx = fixed.T.unsqueeze(2)  # (K, B, 1)
        full = value.unsqueeze(0).expand(idx.shape[0], *value.shape)
        return torch.zeros_like(full).scatter(2, idx, full.gather(2, idx))
    if isinstance(fixed, Tensor):
        idx = fixed[:, None]
        return torch.zeros_like(value).scatter(1, idx, value.gather(1, idx))
    (grad,) = torch.autograd.grad(select(out, fixed).sum(), out, create_graph=create_graph,
                                  retain_graph=True)  # fmt: skip
    return value * grad


def _backward(out: Tensor, x: Tensor, r: Tensor, create_graph: bool) -> Tensor:
    """The rules' backward pass of relevance ``r`` from ``out`` to ``x``; ``r`` of shape
    ``(K, *out.shape)`` (several targets) gives ``(B, K, ...)`` from one forward pass."""
    try:
        if r.dim() > out.dim():
            return batched_vjp(out, x, r, create_graph).transpose(0, 1)
        (rel,) = torch.autograd.grad(out, x, r, create_graph=create_graph)
    except RuntimeError as err:
        if "inplace operation" not in str(err):
            raise
        raise RuntimeError(
            "The model modifies a layer's output in place (e.g. `out += identity` or "
            "inplace=True functional calls) that LRP needs for its backward pass; use "
            f"out-of-place operations. Original error: {err}"
        ) from err
    return rel


@register_method("lrp")
class LRP(Attribution):
    """Layer-wise Relevance Propagation (Bach et al. 2015; Montavon et al. 2019).

    The relevance at the output is the target logit, one-hot (``R = y ⊙ dS/dy`` for a callable
    target); each layer redistributes its output relevance to its input by its rule, for a
    linear layer ``R_i = sum_j (z_ij)_rule / sum_i (z_ij)_rule R_j`` with ``z_ij = x_i w_ij``.
    The result is ``R`` at the input, shape ``(B, C, H, W)``. With LRP-ε / LRP-0 on a bias-free
    ReLU network, ``sum_i R_i`` equals the target logit (conservation).

    Composites (Zennit's semantics, so numbers agree with ``zennit.composites``):
    ``epsilon_plus`` (z+ on convolutions, ε on dense), ``epsilon_gamma_box`` (z^B on the first
    convolution, γ on the others, ε on dense; needs ``low``/``high``), ``epsilon_alpha2_beta1``,
    ``epsilon_plus_flat``, ``epsilon``. Or a dict mapping layer names (``"features.0"``) and
    layer types (``nn.Conv2d``) to rules (names win, then types in order): ``"epsilon"``,
    ``"lrp0"``, ``"zplus"``, ``"alpha1_beta0"``, ``"alpha2_beta1"``, ``"gamma"``, ``"zbox"``,
    ``"flat"``, ``"norm"``, ``"pass"``, ``"gradient"`` or a rule object (``Epsilon(1e-3)``).
    Always: element-wise activations pass, average pooling is ``norm``, max pooling and
    unlisted layers use their gradient; batch norms that are not merged pass. As in Zennit, the
    "first layer" of a preset is the first matching module in registration order.

    Refused with an error naming the module (never a silently wrong map): LayerNorm-type
    normalisation, attention, squeeze-excitation gating, self-gated activations (GELU, SiLU,
    Hardswish, Mish), batch norms fused with an activation, and residual blocks whose sum is a
    functional add (every block but torchvision's ResNet ones, which are canonized). DenseNet's
    concatenation needs no rule: its gradient hands each part its own relevance exactly.

    Deliberate differences from Zennit: a merged batch norm becomes an exact identity (Zennit's
    canonizer leaves a factor ``1 / sqrt(1 + eps)`` per batch norm, ~1e-4 relative on VGG-11);
    the box rule refuses inputs outside ``[low, high]``.

    Args:
        composite: a preset name or a rule dict.
        epsilon: ε of the ε-rule; gamma: γ of the γ-rule; stabilizer: the small ε that keeps the
            other rules' denominators away from zero.
        low, high: the input's range for the box rule (numbers or per-channel tensors).
        canonize: merge each eval-mode BatchNorm into the preceding layer and make torchvision
            ResNet residual sums explicit (relevance splits over both branches) and a
            torchvision DenseNet's global pooling a ``norm`` layer, for one call; the model
            itself is never changed.
        create_graph: keep the relevance differentiable w.r.t. the parameters (and ``x``); it
            then runs two forward passes (one records the true inputs, one propagates) and needs a
            deterministic forward with BatchNorm in eval mode.
    """

    differentiable = True

    def __init__(
        self,
        *,
        composite: Composite = "epsilon_plus",
        epsilon: float = 1e-6,
        gamma: float = 0.25,
        low: float | Tensor | None = None,
        high: float | Tensor | None = None,
        stabilizer: float = 1e-6,
        canonize: bool = True,
        create_graph: bool = False,
        eval_mode: bool | None = None,
    ) -> None:
        super().__init__(eval_mode=eval_mode)
        for name, value in (("epsilon", epsilon), ("gamma", gamma), ("stabilizer", stabilizer)):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(f"{name} must be a number, not {type(value).__name__}")
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {value}")
        opts = {"epsilon": epsilon, "gamma": gamma, "low": low, "high": high,
                "stabilizer": stabilizer}  # fmt: skip
        self.composite, self.canonize = composite, bool(canonize)
        self.epsilon, self.gamma, self.low, self.high = epsilon, gamma, low, high
        self.stabilizer = stabilizer
        self._create_graph = bool(create_graph)
        self._first: _First = None
        self._names: dict[str, Rule] = {}
        if isinstance(composite, str):
            self._first, self._types = _preset(composite, opts)
        elif isinstance(composite, Mapping):
            self._names, self._types = _parse_mapping(composite, opts)
        else:
            raise TypeError(
                "composite must be a preset name or a dict of layer types / names to rules, not "
                f"{type(composite).__name__}"
            )

    def _rules(self, model: nn.Module) -> dict[nn.Module, Rule]:
        """The rule of every module (modules without one use their gradient)."""
        named = list(model.named_modules())
        known = {name for name, _ in named}
        missing = [n for n in self._names if n not in known]
        if missing:
            layers = [name for name, m in named if is_linear_layer(m)]
            raise ValueError(
                f"The model has no layer named {missing[0]!r}; its linear layers are: "
                f"{', '.join(layers) or '(none)'}"
            )
        rules: dict[nn.Module, Rule] = {}
        first = self._first
        for name, module in named:
            rule = self._names.get(name)
            if rule is None and first is not None and isinstance(module, first[0]):
                rule, first = first[1], None
            if rule is None:
                rule = next((r for types, r in self._types if isinstance(module, types)), None)
            if rule is None:
                rule = _base_rule(module, self.stabilizer)
            if rule is not None and not isinstance(rule, Gradient):
                rules[module] = _check_rule(name, module, rule)
        return rules

    def _session(self, model: nn.Module, mode: str) -> _Session:
        refuse_unsupported(
            model,
            "LRP",
            "Use a gradient method (saliency, integrated_gradients), occlusion or a CAM for this "
            "model, or pass a model built from Conv/Linear/BatchNorm/ReLU-type layers.",
        )
        merges = find_batchnorm_merges(model) if self.canonize else {}
        bns = [m for m in model.modules() if isinstance(m, _BATCH_NORMS) and m.training]
        if bns and (merges or mode != "fast"):
            raise ValueError(
                "LRP needs BatchNorm layers in eval mode (running statistics) to merge them or "
                "to keep the relevance differentiable; call model.eval() or pass eval_mode=True"
            )
        rules = self._rules(model)
        for bn in merges.values():
            rules.pop(bn, None)
        blocks = residual_blocks(model) if self.canonize else []
        session = _Session(rules, merges, blocks, self.stabilizer, mode)
        session.model = model if self.canonize else None
        return session

    def _attribute(self, model: nn.Module, x: Tensor, target: Target) -> Tensor:
        if self.create_graph:
            return self._differentiable(model, x, target)
        session = self._session(model, "fast")
        x_in = x.detach().requires_grad_(True)
        with torch.enable_grad(), hooks.patched_forwards(session.patches()):
            out = model(x_in)
            return _backward(out, x_in, _output_relevance(out, target, False), False)

    def _attribute_multi(self, model: nn.Module, x: Tensor, targets: Tensor) -> Tensor:
        return self._attribute(model, x, targets)  # the K relevances share the forward pass

    def _differentiable(self, model: nn.Module, x: Tensor, target: Target) -> Tensor:
        session = self._session(model, "record")
        rng = _rng_state(x)
        x_rel = x.detach().requires_grad_(True)
        with torch.enable_grad(), hooks.patched_forwards(session.patches()):
            out_true = model(x)
            r0 = _output_relevance(out_true, target, True)
            session.mode = "replay"
            _set_rng_state(x, rng)
            out = model(x_rel)
            scale = float(out_true.detach().abs().max()) + 1e-30
            if not torch.allclose(out.detach(), out_true.detach(), rtol=1e-5, atol=1e-7 * scale):
                raise RuntimeError(
                    "Two identical forward passes gave different outputs; LRP with "
                    "create_graph=True needs a deterministic forward (try eval_mode=True)"
                )
            return _backward(out, x_rel, r0, True)


def _rng_state(x: Tensor) -> tuple[Tensor, Tensor | None]:
    cuda = torch.cuda.get_rng_state(x.device) if x.is_cuda else None
    return torch.get_rng_state(), cuda


def _set_rng_state(x: Tensor, state: tuple[Tensor, Tensor | None]) -> None:
    torch.set_rng_state(state[0])
    if state[1] is not None:
        torch.cuda.set_rng_state(state[1], x.device)
