"""The attribution pipeline shared by every method: validation, model scoping, registration.

Contract: ``Method(**options)(model, x, target) -> Tensor`` with ``x`` of shape
``(B, C, H, W)``; input-space methods return ``(B, C, H, W)`` (or ``(B, 1, H, W)`` when they
reduce channels), CAMs return ``(B, 1, H, W)``; same device and dtype as ``x``. Sample i's
attribution never depends on the other samples in the batch (models in eval mode). With
several targets per sample (a ``(B, K)`` class tensor) the result gains a target axis,
``(B, K, C, H, W)`` / ``(B, K, 1, H, W)``.

Images per forward pass: methods that evaluate many copies of a batch (IG path points, noise
draws, occluded / masked images, coalitions) take one option, ``internal_batch_size``, an int
or ``"auto"`` (the default), resolved by :func:`images_per_pass` from a memory budget
(:func:`memory_budget`).
"""

from __future__ import annotations

import math
import os
import re
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable
from contextlib import ExitStack
from typing import Any, ClassVar, TypeVar, Union

import torch
from torch import Tensor, nn

from rightfocus import hooks
from rightfocus._registry import METHODS
from rightfocus.attribution.outputs import OutputSelector, selected_outputs
from rightfocus.attribution.targets import Target, check_target, multi_target, select

__all__ = [
    "MEMORY_BUDGET_ENV",
    "Attribution",
    "attribute",
    "batched_vjp",
    "check_input",
    "images_per_pass",
    "input_gradient",
    "memory_budget",
    "pass_options",
    "pass_size_option",
    "positive_int",
    "register_method",
    "target_gradients",
]

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
    # one reduction: a finite sum means every value is finite (NaN or +-Inf would propagate);
    # only a non-finite sum (maybe an overflow of large values) needs the element-wise check
    total = x.detach().sum()
    if not bool(torch.isfinite(total)) and not bool(torch.isfinite(x).all()):
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
        targets = multi_target(target, x.shape[0])
        use_eval = (not self.create_graph) if self.eval_mode is None else self.eval_mode
        with ExitStack() as stack:
            stack.enter_context(selected_outputs(model, output))
            stack.enter_context(hooks.eval_mode(model, enabled=use_eval))
            stack.enter_context(hooks.frozen_parameters(model, enabled=not self.create_graph))
            if targets is None:
                result = self._attribute(model, x, target)
            else:
                result = self._attribute_multi(model, x, targets.to(x.device))
        return result if self.create_graph else _detached(result)

    @abstractmethod
    def _attribute(self, model: nn.Module, x: Tensor, target: Target) -> Any:
        """Compute the attribution of validated ``x`` for ``target`` on the scoped model."""

    def _attribute_multi(self, model: nn.Module, x: Tensor, targets: Tensor) -> Any:
        """Attributions for the ``(B, K)`` classes ``targets``: ``(B, K, ...)``.

        The generic fallback: one :meth:`_attribute` call per target column, stacked on a new
        axis 1 (tuples, e.g. ``(attribution, delta)``, element-wise). Methods that can share
        their forward passes across targets override this.
        """
        parts = [self._attribute(model, x, targets[:, k]) for k in range(targets.shape[1])]
        return stack_targets(parts)

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


def stack_targets(parts: list[Any]) -> Any:
    """Stack per-target results ``[(B, ...)] * K`` into ``(B, K, ...)`` (tuples element-wise)."""
    if isinstance(parts[0], tuple):
        return tuple(stack_targets([p[i] for p in parts]) for i in range(len(parts[0])))
    return torch.stack(parts, dim=1)


PASS_ELEMENTS = 2**18
"""Speed cap of the ``auto`` pass size, in input elements per forward pass: moderate batches
keep activations in cache, which is faster on CPU than one huge pass (``python
benchmarks/pass_size.py``, LeNet-5, batch 256, 2 threads, idle machine: IG at 10 steps, 256
images per pass 1.31x faster than 512 and 1.42x faster than 1,024; SmoothGrad with 4 samples
1.31x and 1.6x; earlier, IG at 50 steps, 512 per pass 1.35x faster than all 12,800 at once)."""

MEMORY_BUDGET_ENV = "RIGHTFOCUS_MEMORY_BUDGET"
MEMORY_SHARE_CPU = 0.25
"""Default budget on CPU: this share of the available memory (``MemAvailable``)."""
MEMORY_SHARE_CUDA = 0.5
"""Default budget on CUDA: this share of the device's free memory."""

MIN_PASS_IMAGES = 16
"""``auto`` never plans fewer images per pass than this unless the memory budget says so: on
large inputs (ResNet-18 at 224x224) passes of 2-3 images are slower per image than 16."""
ACTIVATION_RATIO = 256
"""Bytes of activations per byte of input assumed before measuring: above what common CNNs
keep for backward (ResNet-18 at 224x224: about 60x), so passes below ``budget / 256`` input
bytes skip the measurement."""

PassSize = Union[int, str, None]  # noqa: UP007
_UNITS = {"": 1, "b": 1, "k": 2**10, "kb": 2**10, "m": 2**20, "mb": 2**20, "g": 2**30, "gb": 2**30}


def parse_bytes(value: int | float | str) -> int:
    """``2GB``, ``512 MB``, ``1.5g`` or a number of bytes -> bytes (binary units)."""
    if isinstance(value, bool):
        raise TypeError("A memory budget is a number of bytes or a string such as '2GB'")
    if isinstance(value, (int, float)):
        number, unit = float(value), ""
    else:
        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", str(value))
        if match is None or match.group(2).lower() not in _UNITS:
            raise ValueError(
                f"Cannot read the memory budget {value!r}: use bytes or a size such as '2GB', "
                "'512MB'"
            )
        number, unit = float(match.group(1)), match.group(2).lower()
    if not number > 0 or not math.isfinite(number):
        raise ValueError(f"A memory budget must be positive, got {value!r}")
    return int(number * _UNITS[unit])


def _available_cpu_bytes() -> int:
    try:
        import psutil  # optional: not a dependency; /proc/meminfo below otherwise

        return int(psutil.virtual_memory().available)
    except ImportError:
        pass
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 4 * 2**30  # unknown platform: assume 4 GiB available


def memory_budget(
    budget: int | float | str | None = None, device: torch.device | None = None
) -> int:
    """Bytes the activations of one forward(+backward) pass may take.

    ``budget`` (bytes or a string such as ``"2GB"``) wins; else the environment variable
    ``RIGHTFOCUS_MEMORY_BUDGET``; else a safe share of what is free: ``MEMORY_SHARE_CPU`` of the
    available RAM on CPU, ``MEMORY_SHARE_CUDA`` of the device's free memory on CUDA.
    """
    if budget is not None:
        return parse_bytes(budget)
    env = os.environ.get(MEMORY_BUDGET_ENV)
    if env:
        try:
            return parse_bytes(env)
        except ValueError as err:
            raise ValueError(f"{MEMORY_BUDGET_ENV}={env!r}: {err}") from None
    if device is not None and device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(MEMORY_SHARE_CUDA * free)
    return int(MEMORY_SHARE_CPU * _available_cpu_bytes())


def pass_size_option(value: PassSize, name: str = "internal_batch_size") -> int | str:
    """Validate an images-per-pass option: a positive int or ``"auto"`` (``None`` = auto)."""
    if value is None or value == "auto":
        return "auto"
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int or 'auto', got {value!r}")
    return value


def positive_int(value: Any, name: str) -> int:
    """``value`` when it is an int >= 1 (not a bool), else a ValueError naming the option."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


def pass_options(
    internal_batch_size: PassSize, memory_budget: int | float | str | None
) -> tuple[int | str, int | float | str | None]:
    """Validate the two pass-size options every batching method takes, at construction time:
    ``(internal_batch_size, memory_budget)`` with ``None`` read as ``"auto"`` (see
    :func:`images_per_pass`) and an unreadable budget a clear error before any pass runs."""
    if memory_budget is not None:
        parse_bytes(memory_budget)
    return pass_size_option(internal_batch_size), memory_budget


def renamed_option(options: dict[str, Any], old: str, new: str = "internal_batch_size") -> Any:
    """Pop a deprecated option name from ``options`` with a DeprecationWarning."""
    value = options.pop(old)
    warnings.warn(
        f"{old!r} is deprecated; use {new!r} (images per forward pass, or 'auto')",
        DeprecationWarning,
        stacklevel=3,
    )
    return value


def activation_bytes(model: nn.Module, x: Tensor) -> int:
    """Bytes the autograd graph keeps for one forward of ``x`` (one image is enough).

    Every tensor saved for the backward pass is counted once (parameters and buffers excluded),
    plus the outputs: what a forward+backward pass holds at its peak besides the model itself.
    Passes without autograd hold less, so this also bounds them.
    """

    def key(t: Tensor) -> tuple[int, int]:
        return (t.data_ptr(), t.numel() * t.element_size())

    seen = {key(t) for t in [*model.parameters(), *model.buffers()]}  # already in memory
    total = 0

    def pack(t: Tensor) -> Tensor:
        nonlocal total
        if key(t) not in seen:
            seen.add(key(t))
            total += key(t)[1]
        return t

    inp = x.detach().clone().requires_grad_(True)
    with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = model(inp)
    total += out.numel() * out.element_size()
    return max(total, x.numel() * x.element_size())


def images_per_pass(
    option: int | str,
    model: nn.Module,
    x: Tensor,
    budget: int | float | str | None = None,
    targets: int = 1,
    *,
    pass_elements: int = PASS_ELEMENTS,
    min_images: int = MIN_PASS_IMAGES,
) -> int:
    """Images per forward pass: ``option`` itself when it is an int, else the ``auto`` policy.

    ``auto`` = ``min(max(B, pass_elements // numel(image), min_images), budget //
    activation_bytes(image))``, at least 1: the whole batch or a cache-friendly number of
    images (at least ``min_images``), whichever is larger (a method whose passes run faster at
    another size passes its own ``pass_elements`` / ``min_images``, measured), shrunk when
    the activations of that many images would not fit the memory budget
    (:func:`memory_budget`). The activation size is measured with one forward of one image,
    only when that many images could exceed the budget at ``ACTIVATION_RATIO`` times their
    input size. ``targets`` K > 1 (batched backward passes for K targets) counts each image K
    times against the budget. When fewer than ``B`` images fit, methods split the batch.
    """
    if isinstance(option, int):
        return option
    speed = max(x.shape[0], pass_elements // max(1, x[0].numel()), min_images)
    allowed = memory_budget(budget, x.device)
    if speed * x[0].numel() * x.element_size() * ACTIVATION_RATIO * targets <= allowed:
        return speed  # fits even at an extreme activation size: no measurement needed
    per_image = activation_bytes(model, x[:1]) * targets
    return max(1, min(speed, allowed // per_image))


def copies_per_pass(images: int, batch: int, n: int) -> int:
    """Copies of a ``batch`` per pass when ``images`` fit in a pass (1..n)."""
    return max(1, min(n, images // batch))


def split_batch(fn: Callable[[Tensor, Any], Any], x: Tensor, target: Any, size: int) -> Any:
    """Run ``fn(x_part, target_part)`` on consecutive sub-batches of ``size`` images and
    concatenate (methods are batch-independent, so the result is the same as one call)."""
    parts = []
    for start in range(0, x.shape[0], size):
        sl = slice(start, start + size)
        tgt = target[sl] if isinstance(target, Tensor) and target.dim() >= 1 else target
        parts.append(fn(x[sl], tgt))
    if isinstance(parts[0], tuple):
        return tuple(torch.cat([p[i] for p in parts]) for i in range(len(parts[0])))
    return torch.cat(parts)


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
    if scores.dim() == 2:
        return target_gradients(scores, inp, create_graph)
    (grad,) = torch.autograd.grad(scores.sum(), inp, create_graph=create_graph)
    return grad


def target_gradients(scores: Tensor, inp: Tensor, create_graph: bool = False) -> Tensor:
    """``d scores[:, k] / d inp`` for every column ``k`` of ``(N, K)`` scores from ONE forward
    pass: ``(N, K, *inp.shape[1:])`` (:func:`batched_vjp` with one-hot cotangents)."""
    K = scores.shape[1]
    eye = torch.eye(K, dtype=scores.dtype, device=scores.device)
    cotangents = eye[:, None, :].expand(K, scores.shape[0], K)
    return batched_vjp(scores, inp, cotangents, create_graph).transpose(0, 1)


def batched_vjp(
    outputs: Tensor,
    inp: Tensor,
    cotangents: Tensor,
    create_graph: bool = False,
    chunk: int | None = None,
) -> Tensor:
    """``v_k^T d outputs / d inp`` for K cotangents ``(K, *outputs.shape)``: ``(K, *inp.shape)``.

    The K vector-Jacobian products share the forward pass: by default they run one after
    another through the retained graph. ``chunk`` > 1 batches that many cotangents per
    backward kernel instead (``torch.func.vmap`` over ``torch.autograd.grad``, whose batching
    rules fold them into the batch axis: one convolution backward on ``chunk * N`` images).
    Measured (``python benchmarks/pass_size.py``: LeNet-5, batch 256, 10 targets, 2 threads,
    idle machine, speed-up over 10 separate calls): one VJP at a time 1.36x (saliency), 1.46x
    (guided backpropagation), 1.59x (DeepLIFT), 1.49x (LRP); vmap chunks of 2 0.93x, 0.98x,
    1.24x, 1.61x; chunks of 5 0.95x, 0.89x, 1.23x, 1.34x: the batched kernels leave the CPU
    caches and vmap's batching rules add work, so only LRP gained from them, and only a little.
    Where an operation has no batching rule, and with ``create_graph``, the products run one
    after another whatever ``chunk`` says.
    """
    K = cotangents.shape[0]
    chunk = min(K, chunk or 1)
    if chunk > 1 and not create_graph:

        def vjp(v: Tensor) -> Tensor:
            return torch.autograd.grad(outputs, inp, v, retain_graph=True)[0]

        try:
            return torch.func.vmap(vjp, chunk_size=chunk)(cotangents)
        except RuntimeError:
            pass  # no batching rule for some operation: one VJP per cotangent below
    grads = [
        torch.autograd.grad(
            outputs, inp, cotangents[k], retain_graph=k < K - 1, create_graph=create_graph
        )[0]
        for k in range(K)
    ]
    return torch.stack(grads)


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
