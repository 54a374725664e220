"""What an attribution explains: a class index per sample, the predicted class, or a callable.

``target`` may be
- ``None``: the class the model predicts for each sample,
- an ``int``: the same class for every sample,
- a ``(B,)`` integer tensor: one class per sample,
- a callable ``f(outputs) -> (B,)`` tensor of per-sample scores (e.g. a log-probability),
- several classes per sample: a ``(B, K)`` integer tensor, or a list of ``B`` class lists of
  equal length ``K`` (multi-label models: the classes whose sigmoid output is explained). The
  result then has a target axis: ``(B, K, C, H, W)`` / ``(B, K, 1, H, W)``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Union

import torch
from torch import Tensor

__all__ = [
    "Target",
    "check_target",
    "class_target",
    "fix_target",
    "multi_target",
    "repeat_target",
    "select",
]

Target = Union[None, int, Tensor, Callable[[Tensor], Tensor], list]  # noqa: UP007


def multi_target(target: Target, batch_size: int) -> Tensor | None:
    """The ``(B, K)`` class tensor of a several-targets call, or ``None`` for one target.

    A list of ``B`` class lists becomes a ``(B, K)`` long tensor; ragged lists are refused
    (pad each sample's list to the same length, e.g. by repeating one of its classes).
    """
    if isinstance(target, list):
        if len(target) != batch_size or not all(isinstance(t, (list, tuple)) for t in target):
            raise ValueError(
                f"A list target must hold one list of class indices per sample ({batch_size} "
                "lists); for one class per sample pass a (B,) tensor"
            )
        lengths = {len(t) for t in target}
        if len(lengths) != 1 or 0 in lengths:
            raise ValueError(
                f"Every sample needs the same number of target classes (got lengths "
                f"{sorted(lengths)}); pad the shorter lists, e.g. by repeating one of their classes"
            )
        if not all(isinstance(c, int) and not isinstance(c, bool) for t in target for c in t):
            raise TypeError("A list target must hold int class indices")
        target = torch.tensor(target, dtype=torch.long)
    if isinstance(target, Tensor) and target.dim() == 2:
        return target
    return None


def check_target(target: Target, batch_size: int) -> None:
    """Validate what can be checked before the forward pass (type, length, dtype)."""
    if target is None or (callable(target) and not isinstance(target, Tensor)):
        return
    if isinstance(target, bool):
        raise TypeError(
            "target must be an int class index, a (B,) or (B, K) long tensor, a callable or None"
        )
    if isinstance(target, int):
        if target < 0:
            raise ValueError(f"target class index must be >= 0, got {target}")
        return
    if isinstance(target, list):
        multi_target(target, batch_size)
        return
    if isinstance(target, Tensor):
        if target.dtype.is_floating_point or target.dtype == torch.bool:
            raise TypeError(f"target tensor must hold integer class indices, got {target.dtype}")
        if target.dim() not in (1, 2) or target.shape[0] != batch_size or 0 in target.shape:
            raise ValueError(
                f"target must have shape ({batch_size},) to match the batch, got "
                f"{tuple(target.shape)}; for K classes per sample pass ({batch_size}, K)"
            )
        return
    raise TypeError(
        "target must be None, an int, a (B,) or (B, K) long tensor, a list of class lists or a "
        "callable on the outputs, not "
        f"{type(target).__name__}"
    )


def _class_indices(outputs: Tensor, target: int | Tensor) -> Tensor:
    if outputs.dim() != 2:
        raise ValueError(
            f"Class targets need model outputs of shape (B, classes), got {tuple(outputs.shape)}; "
            "pass a callable target for other outputs"
        )
    n = outputs.shape[1]
    if isinstance(target, int):
        idx = torch.full((outputs.shape[0],), target, dtype=torch.long, device=outputs.device)
    else:
        idx = target.to(device=outputs.device, dtype=torch.long)
    if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= n):
        raise ValueError(f"target class index out of range: the model has {n} outputs (0..{n - 1})")
    return idx


def fix_target(outputs: Tensor, target: Target) -> Tensor | Callable[[Tensor], Tensor]:
    """Resolve ``None`` to the predicted classes of ``outputs``; validate indices."""
    if target is None:
        if outputs.dim() != 2:
            raise ValueError(
                f"target=None means the predicted class, which needs (B, classes) outputs; got "
                f"{tuple(outputs.shape)}. Pass a callable target instead."
            )
        return outputs.detach().argmax(dim=1)
    if isinstance(target, list):
        return _class_indices(outputs, torch.tensor(target, dtype=torch.long))
    if isinstance(target, (int, Tensor)):
        return _class_indices(outputs, target)
    assert target is not None
    return target


def class_target(
    model: Callable[[Tensor], Tensor], x: Tensor, target: Target
) -> Tensor | Callable[[Tensor], Tensor]:
    """``target`` as class indices on ``x``'s device (``(B,)`` or ``(B, K)``), or the callable.

    Only ``None`` (the predicted class) needs a forward pass of ``model``; given classes are
    range-checked later, by :func:`select` on the outputs the method computes anyway.
    """
    if target is None:
        with torch.no_grad():
            return fix_target(model(x), None)
    if isinstance(target, bool):
        raise TypeError("target must be an int class index, not a bool")
    if isinstance(target, int):
        return torch.full((x.shape[0],), target, dtype=torch.long, device=x.device)
    if isinstance(target, list):
        return torch.tensor(target, dtype=torch.long, device=x.device)
    if isinstance(target, Tensor):
        return target.to(device=x.device, dtype=torch.long)
    return target


def select(outputs: Tensor, target: Target) -> Tensor:
    """Per-sample scalar scores ``(B,)`` for ``target`` (``None`` = predicted class); for a
    ``(B, K)`` class tensor, the ``(B, K)`` scores of every sample's ``K`` classes."""
    fixed = fix_target(outputs, target)
    if isinstance(fixed, Tensor):
        if fixed.dim() == 2:
            return outputs.gather(1, fixed)
        return outputs.gather(1, fixed[:, None]).squeeze(1)
    scores = fixed(outputs)
    if not isinstance(scores, Tensor) or scores.shape != outputs.shape[:1]:
        got = tuple(scores.shape) if isinstance(scores, Tensor) else type(scores).__name__
        raise ValueError(
            f"A callable target must return one score per sample, shape ({outputs.shape[0]},); "
            f"got {got}"
        )
    return scores


def repeat_target(target: Target, k: int) -> Target:
    """The targets of ``k`` copies of a batch stacked copy-major (IG path points, noise draws,
    references): ``(B,)`` and ``(B, K)`` class tensors repeat ``k`` times; others pass."""
    if not isinstance(target, Tensor):
        return target
    return target.repeat(k, 1) if target.dim() == 2 else target.repeat(k)
