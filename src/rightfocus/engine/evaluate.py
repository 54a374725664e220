"""Final metrics of a trained model on a dataset: classification, calibration and overlap.

The metric functions themselves live in :mod:`rightfocus.metrics`; this module only feeds them:
class probabilities (MC mean for Bayesian models, Gal & Ghahramani style averaging of softmax
outputs), labels, and for ``overlap`` the attributions of the configured method on the samples
that carry a mask (the Bayesian-feedback paper: absolute input gradient of the target logit for
MNIST, Grad-CAM otherwise; ``overlap = sum(mask * attr) / (sum(attr) + 1e-8)`` per image).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

import rightfocus.data  # noqa: F401  (registers the datasets whose metadata is read here)
from rightfocus._registry import DATASETS, METHODS, MODELS
from rightfocus.attribution import attribute
from rightfocus.bayes.inference import predict_batches
from rightfocus.engine.config import Config
from rightfocus.metrics.classification import classification_report
from rightfocus.metrics.explanation import overlap

__all__ = ["attribution_method", "evaluate_model", "evaluate_predictions", "layer_option"]


def attribution_method(config: Config) -> tuple[str, dict[str, Any]]:
    """The attribution used for ``overlap``: ``auto`` = |input gradient| for 1-channel (MNIST)
    data, Grad-CAM at the model's registered target layer otherwise."""
    ev = config.evaluation
    method, options = ev.attribution, dict(ev.attribution_options)
    if method == "auto":
        channels = DATASETS.metadata(config.data.dataset).get("in_channels", 3)
        method = "saliency" if channels == 1 else "gradcam"
        if method == "saliency":
            options.setdefault("abs", True)
    if "layer" not in options:
        options.update(layer_option(config, method))
    return method, options


def layer_option(config: Config, method: str) -> dict[str, Any]:
    """``{"layer": <model's registered target layer>}`` for methods that need a layer, else {}."""
    if not METHODS.metadata(method).get("needs_layer"):
        return {}
    target = MODELS.metadata(config.model.name).get("target_layer")
    return {"layer": target} if target else {}


def _targets(probs: Tensor, y: Tensor, mode: str) -> Tensor:
    return y if mode == "label" else probs.argmax(dim=-1)


def evaluate_model(
    model: nn.Module,
    loader: DataLoader,
    config: Config,
    device: torch.device | str = "cpu",
) -> dict[str, float]:
    """Metrics listed in ``config.evaluation.metrics`` over every batch of ``loader``.

    Runs without sampling noise for attributions (eval mode: Bayesian layers use their means)
    and with ``mc_samples`` sampled passes for the probabilities of Bayesian models.
    """
    return evaluate_predictions(model, loader, config, device)[0]


def evaluate_predictions(
    model: nn.Module,
    loader: DataLoader,
    config: Config,
    device: torch.device | str = "cpu",
) -> tuple[dict[str, float], Tensor, Tensor]:
    """:func:`evaluate_model`'s metrics with the ``(N, K)`` probabilities and ``(N,)`` labels
    they were computed from (so later analyses need no second Monte-Carlo pass)."""
    ev = config.evaluation
    want_overlap = "overlap" in ev.metrics
    method, options = attribution_method(config) if want_overlap else ("", {})
    model = model.to(device)
    all_probs, all_y, overlaps = [], [], []
    for (x, y, mask, *_), probs in predict_batches(
        model, loader, ev.mc_samples, config.data.seed, device
    ):
        all_probs.append(probs.cpu())
        all_y.append(y.long().cpu())
        if want_overlap:
            target = _targets(probs, y.long(), ev.overlap_target)
            overlaps.append(_overlap(model, x, target, mask, method, options))
    probs, y = torch.cat(all_probs), torch.cat(all_y)
    metrics = classification_report(probs, y)
    if want_overlap:
        values = torch.cat(overlaps)
        metrics["overlap"] = float(values.mean()) if values.numel() else float("nan")
    missing = [m for m in ev.metrics if m not in metrics]
    if missing:
        raise KeyError(f"metrics {missing} are not computed; available: {', '.join(metrics)}")
    ordered = {k: metrics[k] for k in ev.metrics} | {
        k: v for k, v in metrics.items() if k not in ev.metrics
    }
    return ordered, probs, y


def _overlap(
    model: nn.Module, x: Tensor, target: Tensor, mask: Tensor, method: str, options: dict[str, Any]
) -> Tensor:
    """Per-image overlap of the samples with a non-empty mask (empty tensor if none)."""
    keep = mask.flatten(1).amax(dim=1) > 0
    if not bool(keep.any()):
        return torch.empty(0)
    with torch.enable_grad():
        attr = attribute(model, x[keep], target[keep], method=method, **options)
    return overlap(attr.detach(), mask[keep]).detach().float().cpu().reshape(-1)
