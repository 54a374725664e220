"""LRP rules as pure functions of a layer's input, parameters and upper relevance.

Every rule of a linear layer ``z = W x + b`` (dense or convolution) is written in the "modified
gradient" form of Montavon et al. 2019 ("Layer-wise relevance propagation: an overview"):

    R_in = sum_k  c_k * x_k ⊙ W_k^T ( R_out ⊙ m_k / stab(z_k) )

with rule-specific inputs ``x_k`` (``x``, ``x+``, ``x-``, box bounds), weights ``W_k`` (``W``,
``W+``, ``W-``, ``W + γ W+``, ones) and denominators ``z_k``. ``W^T v`` is the transposed layer
(:meth:`LinearOp.transpose`), never a Jacobian materialised in memory. ``stab(z) = z + ε sign(z)``
with ``sign(0) = +1`` (as Zennit), so a zero denominator becomes ``ε``.

Contributions are named as in the paper: ``Z_ij = x_i w_ij``, ``Z+ = max(Z, 0)``,
``Z- = min(Z, 0)``; since ``(x_i w_ij)+ = x+_i w+_ij + x-_i w-_ij``, the ``Z+`` part is computed as
two ordinary layer calls. Terms whose input part is identically zero (``x-`` after a ReLU) are
skipped; they would add exact zeros.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "RULE_NAMES",
    "AlphaBeta",
    "ConvOp",
    "DenseOp",
    "Epsilon",
    "Flat",
    "Gamma",
    "Gradient",
    "LayerRule",
    "Norm",
    "Pass",
    "Rule",
    "ZBox",
    "ZPlus",
    "linear_op",
    "parse_rule",
    "stabilize",
]


def stabilize(z: Tensor, epsilon: float) -> Tensor:
    """``z + ε sign(z)`` with ``sign(0) = +1``: a denominator pushed away from zero."""
    return torch.where(z >= 0, z + epsilon, z - epsilon)


# --------------------------------------------------------------------------------------------
# Linear operators: the forward map and its transpose, for dense layers and convolutions.
# --------------------------------------------------------------------------------------------


class DenseOp:
    """``z = x W^T + b`` (``nn.Linear``); transpose ``v -> v W``."""

    def forward(self, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        return F.linear(x, weight, bias)

    def transpose(self, v: Tensor, weight: Tensor, x_shape: Sequence[int]) -> Tensor:
        return v @ weight


_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_CONV_TRANSPOSE = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}


class ConvOp:
    """An ``nn.ConvNd`` layer's convolution with replaceable weight and bias.

    The transpose is a transposed convolution (zero padding) or, for other padding modes and
    string padding, the vector-Jacobian product of the convolution.
    """

    def __init__(self, conv: nn.Module) -> None:
        c: Any = conv
        self.conv = conv
        self.dims = c.weight.dim() - 2
        self._as_flipped_conv = (
            c.padding_mode == "zeros"
            and not isinstance(c.padding, str)
            and c.groups == 1
            and c.in_channels <= 4
            and all(s == 1 for s in c.stride)
            and all(d * (k - 1) >= p for d, k, p in zip(c.dilation, c.kernel_size, c.padding))
        )

    def forward(self, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        return self.conv._conv_forward(x, weight, bias)  # type: ignore[operator]

    def transpose(self, v: Tensor, weight: Tensor, x_shape: Sequence[int]) -> Tensor:
        c: Any = self.conv
        if self._as_flipped_conv:
            # stride 1, one group, few input channels: a convolution with the flipped, transposed
            # kernel is the same map and much faster than the transposed convolution on CPU
            flipped = weight.flip(list(range(2, weight.dim()))).transpose(0, 1)
            pad = [d * (k - 1) - p for d, k, p in zip(c.dilation, c.kernel_size, c.padding)]
            return _CONV[self.dims](v, flipped, None, 1, pad, c.dilation)
        if c.padding_mode != "zeros" or isinstance(c.padding, str):
            return self._vjp(v, weight, x_shape)
        extra = [
            size - ((o - 1) * s - 2 * p + d * (k - 1) + 1)
            for size, o, s, p, d, k in zip(
                x_shape[-self.dims :], v.shape[-self.dims :], c.stride, c.padding, c.dilation,
                c.kernel_size,
            )
        ]  # fmt: skip
        fn = _CONV_TRANSPOSE[self.dims]
        return fn(v, weight, None, c.stride, c.padding, tuple(extra), c.groups, c.dilation)

    def _vjp(self, v: Tensor, weight: Tensor, x_shape: Sequence[int]) -> Tensor:
        create = torch.is_grad_enabled() and (v.requires_grad or weight.requires_grad)
        with torch.enable_grad():
            probe = torch.zeros(tuple(x_shape), dtype=v.dtype, device=v.device, requires_grad=True)
            (grad,) = torch.autograd.grad(
                self.forward(probe, weight, None), probe, v, create_graph=create
            )
        return grad


LinearOp = DenseOp | ConvOp


def linear_op(module: nn.Module) -> LinearOp:
    """The linear operator of an ``nn.Linear`` or ``nn.Conv1d/2d/3d`` module."""
    if isinstance(module, nn.Linear):
        return DenseOp()
    if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
        return ConvOp(module)
    raise TypeError(f"{type(module).__name__} is not an nn.Linear or nn.Conv1d/2d/3d layer")


# --------------------------------------------------------------------------------------------
# Rules
# --------------------------------------------------------------------------------------------


class Rule:
    """Base of all rules; ``name`` is the string that selects it."""

    name: ClassVar[str] = ""

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({fields})"


class LayerRule(Rule):
    """A rule for a layer with ``weight`` and ``bias`` (``nn.Linear``, ``nn.ConvNd``)."""

    def relevance(
        self, op: LinearOp, x: Tensor, w: Tensor, b: Tensor | None, z: Tensor, r: Tensor
    ) -> Tensor:
        """``R_in`` of a layer with input ``x``, output ``z = op(x, w, b)``, upper ``r``."""
        raise NotImplementedError


class Pass(Rule):
    """Pass-through: ``R_in = R_out`` (element-wise activations, un-merged batch norm)."""

    name = "pass"


class Gradient(Rule):
    """No rule: the layer's ordinary gradient carries the relevance (max pooling: the winner
    of each pooling window receives the window's relevance)."""

    name = "gradient"


@dataclass(repr=False)
class Norm(Rule):
    """A parameter-free linear map ``z = f(x)`` (average pooling, a residual sum) treated as a
    linear layer: ``R_in = x ⊙ J_f^T (R_out / stab(z))``."""

    stabilizer: float = 1e-6
    name: ClassVar[str] = "norm"


def _bias_part(b: Tensor | None, positive: bool) -> Tensor | None:
    if b is None:
        return None
    return b.clamp(min=0) if positive else b.clamp(max=0)


def _split(x: Tensor) -> tuple[Tensor, Tensor | None]:
    """``(x+, x-)``; ``x-`` is None (and ``x+`` is ``x``) when ``x`` has no negative entry."""
    if bool((x < 0).any()):
        return x.clamp(min=0), x.clamp(max=0)
    return x, None


def _signed_part(
    op: LinearOp,
    x_pos: Tensor,
    x_neg: Tensor | None,
    w_a: Tensor,
    w_b: Tensor | None,
    b_a: Tensor | None,
    r: Tensor,
    eps: float,
) -> Tensor:
    """``sum_j Z±_ij / (sum_i Z±_ij + b±_j) R_j`` where the contributions are ``x+ w_a`` and
    ``x- w_b``: ``(w_a, w_b) = (w+, w-)`` gives ``Z+``, ``(w-, w+)`` gives ``Z-``."""
    z = op.forward(x_pos, w_a, b_a)
    if x_neg is not None and w_b is not None:
        z = z + op.forward(x_neg, w_b, None)
    s = r / stabilize(z, eps)
    out = x_pos * op.transpose(s, w_a, x_pos.shape)
    if x_neg is not None and w_b is not None:
        out = out + x_neg * op.transpose(s, w_b, x_pos.shape)
    return out


@dataclass(repr=False)
class Epsilon(LayerRule):
    """LRP-ε (Bach et al. 2015): ``R_i = sum_j z_ij / (z_j + ε sign(z_j)) R_j``, bias in
    ``z_j``. ``ε -> 0`` is LRP-0."""

    epsilon: float = 1e-6
    name: ClassVar[str] = "epsilon"

    def relevance(
        self, op: LinearOp, x: Tensor, w: Tensor, b: Tensor | None, z: Tensor, r: Tensor
    ) -> Tensor:
        return x * op.transpose(r / stabilize(z, self.epsilon), w, x.shape)


@dataclass(repr=False)
class ZPlus(LayerRule):
    """LRP-z+ (Montavon et al. 2017, deep Taylor): ``R_i = sum_j Z+_ij / (sum_i Z+_ij + b+_j)
    R_j``; equal to α1-β0. Negative inputs count through ``x- w-`` (Zennit's convention)."""

    stabilizer: float = 1e-6
    name: ClassVar[str] = "zplus"

    def relevance(
        self, op: LinearOp, x: Tensor, w: Tensor, b: Tensor | None, z: Tensor, r: Tensor
    ) -> Tensor:
        x_pos, x_neg = _split(x)
        w_neg = w.clamp(max=0) if x_neg is not None else None
        return _signed_part(
            op, x_pos, x_neg, w.clamp(min=0), w_neg, _bias_part(b, True), r, self.stabilizer
        )


@dataclass(repr=False)
class AlphaBeta(LayerRule):
    """LRP-αβ (Bach et al. 2015), ``α - β = 1``:
    ``R_i = sum_j (α Z+_ij / (sum_i Z+_ij + b+_j) - β Z-_ij / (sum_i Z-_ij + b-_j)) R_j``."""

    alpha: float = 2.0
    beta: float = 1.0
    stabilizer: float = 1e-6
    name: ClassVar[str] = "alpha_beta"

    def __post_init__(self) -> None:
        if self.alpha < 0 or self.beta < 0 or not math.isclose(self.alpha - self.beta, 1.0):
            raise ValueError(
                f"The alpha-beta rule needs alpha >= 0, beta >= 0 and alpha - beta = 1 (so that "
                f"relevance is conserved); got alpha={self.alpha}, beta={self.beta}. "
                "Common choices: alpha2_beta1, alpha1_beta0."
            )

    def relevance(
        self, op: LinearOp, x: Tensor, w: Tensor, b: Tensor | None, z: Tensor, r: Tensor
    ) -> Tensor:
        eps, w_pos = self.stabilizer, w.clamp(min=0)
        x_pos, x_neg = _split(x)
        w_neg = w.clamp(max=0) if (self.beta or x_neg is not None) else None
        out = _signed_part(op, x_pos, x_neg, w_pos, w_neg, _bias_part(b, True), r, eps)
        if self.beta and w_neg is not None:
            neg = _signed_part(op, x_pos, x_neg, w_neg, w_pos, _bias_part(b, False), r, eps)
            out = self.alpha * out - self.beta * neg
        elif self.alpha != 1:
            out = self.alpha * out
        return out


@dataclass(repr=False)
class Gamma(LayerRule):
    """LRP-γ (Montavon et al. 2019), generalised to signed inputs as in Zennit (Andéol et al.
    2021): for ``z_j > 0``, ``R_i = sum_j (Z_ij + γ Z+_ij) / sum_i (Z_ij + γ Z+_ij) R_j`` (bias
    ``b_j + γ b+_j`` in the denominator); for ``z_j < 0`` the same with ``Z-`` and ``b-``."""

    gamma: float = 0.25
    stabilizer: float = 1e-6
    name: ClassVar[str] = "gamma"

    def __post_init__(self) -> None:
        if not (self.gamma >= 0 and math.isfinite(self.gamma)):
            raise ValueError(f"gamma must be a finite number >= 0, got {self.gamma}")

    def relevance(
        self, op: LinearOp, x: Tensor, w: Tensor, b: Tensor | None, z: Tensor, r: Tensor
    ) -> Tensor:
        g, eps = self.gamma, self.stabilizer
        w_up, w_down = w + g * w.clamp(min=0), w + g * w.clamp(max=0)
        b_up = None if b is None else b + g * b.clamp(min=0)
        b_down = None if b is None else b + g * b.clamp(max=0)
        x_pos, x_neg = _split(x)
        z_up, z_down = op.forward(x_pos, w_up, b_up), op.forward(x_pos, w_down, b_down)
        if x_neg is not None:
            z_up = z_up + op.forward(x_neg, w_down, None)
            z_down = z_down + op.forward(x_neg, w_up, None)
        s_up = (z > 0).to(r.dtype) * r / stabilize(z_up, eps)
        s_down = (z < 0).to(r.dtype) * r / stabilize(z_down, eps)
        out = x_pos * (op.transpose(s_up, w_up, x.shape) + op.transpose(s_down, w_down, x.shape))
        if x_neg is not None:
            back = op.transpose(s_up, w_down, x.shape) + op.transpose(s_down, w_up, x.shape)
            out = out + x_neg * back
        return out


def _as_bound(value: float | Tensor, name: str) -> Tensor:
    if isinstance(value, bool) or not isinstance(value, (int, float, Tensor)):
        raise TypeError(
            f"{name} must be a number or a tensor (e.g. per channel, shape (C,) or (1, C, 1, 1)), "
            f"not {type(value).__name__}"
        )
    t = torch.as_tensor(value, dtype=torch.float64).detach()
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return t


def _per_channel(t: Tensor, x: Tensor) -> Tensor:
    """A ``(C,)`` bound becomes ``(1, C, 1, ...)``; other shapes broadcast as they are."""
    if t.dim() == 1 and x.dim() > 2 and t.shape[0] == x.shape[1] and t.shape[0] != x.shape[-1]:
        return t.view(1, -1, *([1] * (x.dim() - 2)))
    return t


@dataclass(repr=False)
class ZBox(LayerRule):
    """LRP-z^B (Montavon et al. 2017) for inputs in a box ``low <= x <= high``:
    ``R_i = sum_j (x_i w_ij - l_i w+_ij - h_i w-_ij) / sum_i (x_i w_ij - l_i w+_ij - h_i w-_ij)
    R_j``. ``low``/``high``: numbers, per-channel ``(C,)`` tensors or tensors broadcastable to
    the layer's input."""

    low: float | Tensor
    high: float | Tensor
    stabilizer: float = 1e-6
    name: ClassVar[str] = "zbox"

    def __post_init__(self) -> None:
        low, high = _as_bound(self.low, "low"), _as_bound(self.high, "high")
        try:
            ok = bool((low < high).all())
        except RuntimeError:
            raise ValueError(
                f"low {tuple(low.shape)} and high {tuple(high.shape)} have incompatible shapes"
            ) from None
        if not ok:
            raise ValueError("The box rule needs low < high everywhere (the range of the input)")

    def bounds(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``low`` and ``high`` broadcast to ``x``; ``x`` must lie in the box."""
        out = []
        for name, value in (("low", self.low), ("high", self.high)):
            t = _per_channel(_as_bound(value, name), x).to(dtype=x.dtype, device=x.device)
            try:
                out.append(t.expand_as(x))
            except RuntimeError:
                raise ValueError(
                    f"The box rule's {name} has shape {tuple(t.shape)}, which does not broadcast "
                    f"to the layer input {tuple(x.shape)}; use a number, a (C,) tensor or a tensor "
                    "of shape (1, C, 1, 1)"
                ) from None
        low, high = out
        tol = 1e-5 * float((high - low).abs().max())
        xd = x.detach()
        if bool((xd < low - tol).any() or (xd > high + tol).any()):
            raise ValueError(
                f"The input of the box-rule layer has values in [{float(xd.min()):.4g}, "
                f"{float(xd.max()):.4g}], outside [low, high]; pass the bounds of the input's "
                "range (after any normalisation), e.g. low=0, high=1 for raw [0, 1] images"
            )
        return low, high

    def relevance(
        self, op: LinearOp, x: Tensor, w: Tensor, b: Tensor | None, z: Tensor, r: Tensor
    ) -> Tensor:
        low, high = self.bounds(x)
        w_pos, w_neg = w.clamp(min=0), w.clamp(max=0)
        zb = op.forward(x, w, None) - op.forward(low, w_pos, None) - op.forward(high, w_neg, None)
        s = r / stabilize(zb, self.stabilizer)
        return (
            x * op.transpose(s, w, x.shape)
            - low * op.transpose(s, w_pos, x.shape)
            - high * op.transpose(s, w_neg, x.shape)
        )


@dataclass(repr=False)
class Flat(LayerRule):
    """LRP-flat (Lapuschkin et al. 2019): relevance spread uniformly over each output's
    receptive field, ``R_i = sum_j 1 / (sum_i' 1) R_j`` (weights and inputs set to one)."""

    stabilizer: float = 1e-6
    name: ClassVar[str] = "flat"

    def relevance(
        self, op: LinearOp, x: Tensor, w: Tensor, b: Tensor | None, z: Tensor, r: Tensor
    ) -> Tensor:
        ones_w = torch.ones_like(w)
        count = op.forward(torch.ones_like(x), ones_w, None)
        return op.transpose(r / stabilize(count, self.stabilizer), ones_w, x.shape)


# --------------------------------------------------------------------------------------------
# Rule names
# --------------------------------------------------------------------------------------------

RULE_NAMES = (
    "epsilon", "lrp0", "zplus", "alpha1_beta0", "alpha2_beta1", "alpha<a>_beta<b>", "gamma",
    "zbox", "flat", "norm", "pass", "gradient",
)  # fmt: skip
_ALIASES = {"z+": "zplus", "z_plus": "zplus", "box": "zbox", "z_box": "zbox"}
_ALPHA_BETA = re.compile(r"^alpha(\d+(?:\.\d+)?)_beta(\d+(?:\.\d+)?)$")


def parse_rule(
    spec: str | Rule,
    *,
    epsilon: float = 1e-6,
    gamma: float = 0.25,
    low: float | Tensor | None = None,
    high: float | Tensor | None = None,
    stabilizer: float = 1e-6,
) -> Rule:
    """A :class:`Rule` from a rule object or name; options fill in the rule's parameters."""
    if isinstance(spec, Rule):
        return spec
    if not isinstance(spec, str):
        raise TypeError(f"A rule must be a rule name or a Rule object, not {type(spec).__name__}")
    key = _ALIASES.get(spec.lower(), spec.lower())
    simple: dict[str, Any] = {
        "epsilon": lambda: Epsilon(epsilon),
        "lrp0": lambda: Epsilon(0.0),
        "zplus": lambda: ZPlus(stabilizer),
        "gamma": lambda: Gamma(gamma, stabilizer),
        "flat": lambda: Flat(stabilizer),
        "norm": lambda: Norm(stabilizer),
        "pass": Pass,
        "gradient": Gradient,
    }
    if key in simple:
        return simple[key]()
    match = _ALPHA_BETA.match(key)
    if match:
        return AlphaBeta(float(match.group(1)), float(match.group(2)), stabilizer)
    if key == "zbox":
        if low is None or high is None:
            raise ValueError(
                "The box rule (zbox) needs the input range: pass low= and high= (numbers or "
                "per-channel tensors), e.g. low=0.0, high=1.0 for images in [0, 1]"
            )
        return ZBox(low, high, stabilizer)
    raise ValueError(f"Unknown LRP rule {spec!r}; known rules: {', '.join(RULE_NAMES)}")
