"""Sanity checks for saliency maps (Adebayo et al. 2018): cascading model-parameter
randomisation. An explanation that barely changes when the model's weights are randomised,
from the top layer down, does not explain the model (an edge detector is the classic failure).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torchmetrics.functional import spearman_corrcoef

from rightfocus.metrics.explanation import magnitude

__all__ = ["RandomisationResult", "model_randomisation_check", "spearman"]

Explainer = Callable[[nn.Module, Tensor, Tensor], Tensor]


def spearman(a: Tensor, b: Tensor) -> Tensor:
    """Spearman rank correlation between the rows of ``a`` and ``b`` (``(B, N)`` -> ``(B,)``).

    Pearson correlation of the ranks, ties sharing their average rank (torchmetrics'
    ``spearman_corrcoef``, which correlates columns: hence the transposes).
    """
    if a.dim() != 2 or a.shape != b.shape:
        raise ValueError(f"a and b must both be (B, N), got {tuple(a.shape)} and {tuple(b.shape)}")
    return spearman_corrcoef(a.double().T, b.double().T).view(-1)


@dataclass
class RandomisationResult:
    """Mean rank correlation with the original attribution after randomising each cascade step."""

    layers: list[str]
    correlation: list[float]


def _parametrised_layers(model: nn.Module) -> list[str]:
    return [
        name
        for name, m in model.named_modules()
        if name and any(True for _ in m.parameters(recurse=False))
    ]


def _randomise(module: nn.Module, generator: torch.Generator) -> None:
    with torch.no_grad():
        for p in module.parameters(recurse=False):
            p.copy_(torch.randn(p.shape, generator=generator, dtype=p.dtype) * 0.1)


def model_randomisation_check(
    model: nn.Module,
    x: Tensor,
    target: Tensor,
    method: str | Explainer = "saliency",
    seed: int = 0,
    absolute: bool = True,
    **options: Any,
) -> RandomisationResult:
    """Randomise the layers of a deep copy of ``model`` from the output towards the input,
    cumulatively; after each step, the mean Spearman correlation of ``|attribution|`` with the
    original one. The user's model is never modified.

    ``method`` is a registered attribution method name (with ``options``) or a callable
    ``f(model, x, target) -> attribution``. ``absolute`` compares ``sum_c |attr|`` (Adebayo et
    al.'s default); ``False`` compares the signed, channel-summed attributions.
    """
    from rightfocus.attribution import attribute

    def explain(m: nn.Module) -> Tensor:
        if callable(method):
            out = method(m, x, target)
        else:
            out = attribute(m, x, target, method=method, **options)
        out = out.detach()
        return (magnitude(out) if absolute else out.sum(dim=1, keepdim=True)).flatten(1)

    work = copy.deepcopy(model)
    original = explain(work)
    gen = torch.Generator().manual_seed(seed)
    names, corr = [], []
    modules = dict(work.named_modules())
    for name in reversed(_parametrised_layers(work)):
        _randomise(modules[name], gen)
        names.append(name)
        corr.append(float(spearman(original, explain(work)).mean()))
    if not names:
        raise ValueError("The model has no parameters to randomise")
    return RandomisationResult(names, corr)
