"""The attribution pipeline shared by every method: validation, model scoping, registration.

Contract (DESIGN.md): ``Method(**options)(model, x, target) -> Tensor`` with ``x`` of shape
``(B, C, H, W)``; input-space methods return ``(B, C, H, W)`` (or ``(B, 1, H, W)`` when they
reduce channels), CAMs return ``(B, 1, H, W)``; same device and dtype as ``x``. Sample i's
attribution never depends on the other samples in the batch (models in eval mode).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from contextlib import ExitStack
from typing import Any, ClassVar, TypeVar

import torch
from torch import Tensor, nn

from rightfocus import hooks
from rightfocus._registry import METHODS
from rightfocus.attribution.outputs import OutputSelector, selected_outputs
from rightfocus.attribution.targets import Target, check_target, select

__all__ = ["Attribution", "attribute", "check_input", "input_gradient", "register_method"]

A = TypeVar("A", bound="type[Attribution]")


def check_input(x: Any) -> Tensor:
    """Validate an image batch: a floating ``(B, C, H, W)`` tensor with finite values."""
    if not isinstance(x, Tensor):
        raise TypeError(f"x must be a torch.Tensor of shape (B, C, H, W), not {type(x).__name__}")
    if x.dim() != 4:
        hint = " Add a batch dimension with x.unsqueeze(0)." if x.dim() == 3 else ""
        raise ValueError(f"x must have shape (B, C, H, W), got {x.dim()}-d {tuple(x.shape)}.{hint}")
    if not x.dtype.is_floating_point:
        raise TypeError(f"x must be a floating-point tensor, got {x.dtype}; convert with x.float()")
    if x.shape[0] == 0:
        raise ValueError("x is an empty batch (B = 0)")
    if not bool(torch.isfinite(x).all()):
        raise ValueError("x contains NaN or Inf values; clean or re-normalise the input first")
    return x


def _detached(result: Any) -> Any:
    """Without ``create_graph`` a method's tensors carry no autograd graph back to the caller."""
    if isinstance(result, Tensor):
        return result.detach()
    if isinstance(result, tuple):
        return tuple(_detached(r) for r in result)
    return result


class Attribution(ABC):
    """Base class: subclasses implement :meth:`_attribute` and declare capabilities.

    Capabilities (class attributes) drive the CLI listing and the contract tests:
    ``differentiable`` (``create_graph=True`` gives parameter gradients), ``needs_layer``
    (works on a target layer), ``model_agnostic`` (only forward passes), ``stochastic``
    (takes a ``seed``) and ``output`` (``"input"``: input-shaped maps, ``"map"``: one channel).
    """

    name: ClassVar[str] = ""
    differentiable: ClassVar[bool] = False
    needs_layer: ClassVar[bool] = False
    model_agnostic: ClassVar[bool] = False
    stochastic: ClassVar[bool] = False
    output: ClassVar[str] = "input"  # "input": (B, C, H, W); "map": (B, 1, H, W)

    def __init__(self, *, eval_mode: bool | None = None) -> None:
        self.eval_mode = eval_mode

    @property
    def create_graph(self) -> bool:
        return bool(getattr(self, "_create_graph", False))

    def __call__(
        self, model: nn.Module, x: Tensor, target: Target = None, *, output: OutputSelector = None
    ) -> Any:
        """Explain ``model`` on ``x``; ``output`` picks the tensor to explain from a model that
        returns a tuple, dict or ``.logits`` object (see :mod:`rightfocus.attribution.outputs`)."""
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, not {type(model).__name__}")
        x = check_input(x)
        check_target(target, x.shape[0])
        use_eval = (not self.create_graph) if self.eval_mode is None else self.eval_mode
        with ExitStack() as stack:
            stack.enter_context(selected_outputs(model, output))
            stack.enter_context(hooks.eval_mode(model, enabled=use_eval))
            stack.enter_context(hooks.frozen_parameters(model, enabled=not self.create_graph))
            result = self._attribute(model, x, target)
        return result if self.create_graph else _detached(result)

    @abstractmethod
    def _attribute(self, model: nn.Module, x: Tensor, target: Target) -> Any:
        """Compute the attribution of validated ``x`` for ``target`` on the scoped model."""

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({opts})"


def broadcast_baseline(baseline: float | Tensor | None, x: Tensor) -> Tensor:
    """The reference input ``x'`` of IG, DeepLIFT, occlusion and the surrogates: ``None`` means
    zeros; a number or a tensor is broadcast to ``x`` (a clear error when it cannot be)."""
    if baseline is None:
        return torch.zeros_like(x)
    b = torch.as_tensor(baseline, dtype=x.dtype, device=x.device)
    try:
        return torch.broadcast_to(b, x.shape)
    except RuntimeError:
        raise ValueError(
            f"baseline of shape {tuple(b.shape)} cannot be broadcast to x {tuple(x.shape)}"
        ) from None


PASS_ELEMENTS = 2**19
"""Default budget of input elements per forward pass for methods that evaluate many copies of
a batch (IG path points, noise draws): moderate batches keep activations in cache, which is
faster on CPU than one huge pass (measured: LeNet-5 IG at 50 steps, 512 images per pass run
1.35x faster than all 12,800 at once) and bounds memory on large images."""


def steps_per_pass(internal_batch_size: int | None, batch: int, n: int, sample_numel: int) -> int:
    """How many of ``n`` copies of a ``batch`` to evaluate per pass (at least one).

    ``internal_batch_size`` caps the images per pass; ``None`` picks
    ``max(batch, PASS_ELEMENTS // sample_numel)`` images.
    """
    if internal_batch_size is None:
        internal_batch_size = max(batch, PASS_ELEMENTS // max(1, sample_numel))
    return max(1, min(n, internal_batch_size // batch))


def input_gradient(
    model: nn.Module,
    x: Tensor,
    target: Target,
    create_graph: bool = False,
    forward: Callable[[Tensor], Tensor] | None = None,
) -> Tensor:
    """``d score_target / d x`` for every sample in one backward pass.

    With ``create_graph=True`` the result stays differentiable (w.r.t. the model parameters and
    ``x``); otherwise ``x`` is detached first so no graph leaks to the caller.
    """
    inp = x if (create_graph and x.requires_grad) else x.detach().requires_grad_(True)
    outputs = (forward or model)(inp)
    scores = select(outputs, target)
    (grad,) = torch.autograd.grad(scores.sum(), inp, create_graph=create_graph)
    return grad


def register_method(name: str) -> Callable[[A], A]:
    """Class decorator: register an :class:`Attribution` subclass under ``name``."""

    def decorator(cls: A) -> A:
        cls.name = name
        doc = (cls.__doc__ or "").strip().splitlines()
        METHODS.register(
            name,
            summary=doc[0] if doc else "",
            differentiable=cls.differentiable,
            needs_layer=cls.needs_layer,
            model_agnostic=cls.model_agnostic,
            stochastic=cls.stochastic,
            output=cls.output,
        )(cls)
        return cls

    return decorator


def attribute(
    model: nn.Module,
    x: Tensor,
    target: Target = None,
    method: str = "saliency",
    output: OutputSelector = None,
    **options: Any,
) -> Any:
    """Explain ``model``'s predictions on ``x`` with a registered method.

    ``output`` selects the tensor to explain when the model returns a tuple, a dict or an
    object with ``.logits`` (default: automatic, see :mod:`rightfocus.attribution.outputs`).

    Example:
        >>> import torch
        >>> from rightfocus.models import LeNet
        >>> attr = attribute(LeNet(), torch.rand(2, 1, 28, 28), method="gradcam")
        >>> tuple(attr.shape)
        (2, 1, 28, 28)
    """
    cls = METHODS.get(method)
    return cls(**options)(model, x, target, output=output)
