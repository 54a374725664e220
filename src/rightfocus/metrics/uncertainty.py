"""Uncertainty: predictive entropy and mutual information from MC samples, accuracy-rejection
curves, and explanation uncertainty (per-pixel mean and std of an attribution over posterior
samples of a Bayesian model)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from rightfocus import hooks
from rightfocus.attribution import attribute
from rightfocus.bayes.inference import expected_entropy, mutual_information, predictive_entropy
from rightfocus.metrics._checks import check_labels, check_probs

__all__ = [
    "ExplanationUncertainty",
    "accuracy_rejection_curve",
    "expected_entropy",
    "explanation_uncertainty",
    "mutual_information",
    "predictive_entropy",
]


def accuracy_rejection_curve(
    probs: Tensor, y: Tensor, uncertainty: Tensor, fractions: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Accuracy on the most certain samples as more and more uncertain ones are rejected.

    Returns ``(retained_fraction, accuracy)``; ``fractions`` default 1.0, 0.9, ..., 0.1.
    """
    probs = check_probs(probs)
    y = check_labels(y, probs.shape[0], probs.shape[1]).to(probs.device)
    if uncertainty.shape != y.shape:
        raise ValueError(f"uncertainty must be ({len(y)},), got {tuple(uncertainty.shape)}")
    if not bool(torch.isfinite(uncertainty).all()):
        raise ValueError("uncertainty contains NaN or Inf values; its ranking would be arbitrary")
    if fractions is None:
        fractions = torch.linspace(1.0, 0.1, 10)
    correct = (probs.argmax(1) == y).double()[uncertainty.argsort()]
    acc = []
    for f in fractions.tolist():
        k = max(1, round(f * len(y)))
        acc.append(correct[:k].mean())
    return fractions.double(), torch.stack(acc)


@dataclass
class ExplanationUncertainty:
    """Per-pixel ``mean`` and ``std`` of an attribution over posterior samples (and them all)."""

    mean: Tensor
    std: Tensor
    samples: Tensor


def explanation_uncertainty(
    model: nn.Module,
    x: Tensor,
    target: Tensor | None = None,
    method: str = "saliency",
    samples: int = 20,
    seed: int = 0,
    **options: Any,
) -> ExplanationUncertainty:
    """Attribution of ``method`` under ``samples`` posterior draws (Bayesian layers sampling).

    ``target=None`` explains the class predicted by the MC-mean probabilities, the same class
    for every draw. Seeded without touching the global RNG state.
    """
    if samples < 2:
        raise ValueError(f"samples must be >= 2 for a standard deviation, got {samples}")
    draws = []
    with (
        torch.random.fork_rng(devices=[x.device] if x.is_cuda else []),
        hooks.sampling(model, True),
    ):
        torch.manual_seed(seed)
        if target is None:
            with torch.no_grad(), hooks.eval_mode(model):
                target = (
                    torch.stack([model(x).softmax(-1) for _ in range(samples)]).mean(0).argmax(1)
                )
        for _ in range(samples):
            draws.append(attribute(model, x, target, method=method, **options).detach())
    stack = torch.stack(draws)
    return ExplanationUncertainty(stack.mean(0), stack.std(0), stack)
