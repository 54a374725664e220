"""Classification metrics through torchmetrics' functional API (not hand-rolled).

Conventions of the Bayesian explanation-feedback paper ("Regularizing Explanations in
Bayesian Convolutional Neural Networks"): balanced accuracy; F1 binary (positive class 1)
for two classes, else macro; ROC-AUC on the class-1 probability for two classes, else
one-vs-rest macro on the softmax probabilities. :func:`classification_report` is the bundle
the engine logs at validation and writes after testing: these four plus the equal-width ECE
and the NLL of :mod:`rightfocus.metrics.calibration`.

ROC-AUC is undefined when a class has no sample in ``y`` (no positives for its one-vs-rest
curve): :func:`roc_auc` then returns NaN and warns with :class:`UndefinedMetricWarning`; the
engine writes such a value as ``null`` in ``metrics.json``.
"""

from __future__ import annotations

import warnings

import torch
import torchmetrics.functional.classification as tmf
from torch import Tensor

from rightfocus.metrics._checks import check_labels, check_probs
from rightfocus.metrics.calibration import expected_calibration_error, nll

__all__ = [
    "UndefinedMetricWarning",
    "accuracy",
    "balanced_accuracy",
    "classification_report",
    "confusion_matrix",
    "f1",
    "roc_auc",
]


class UndefinedMetricWarning(UserWarning):
    """A metric is undefined for the given labels (e.g. AUC with a class absent): NaN."""


def _absent_warning(present: Tensor) -> float:
    absent = torch.nonzero(~present).flatten().tolist()
    warnings.warn(
        f"ROC-AUC is undefined: class(es) {absent} have no sample among the labels, so their "
        "one-vs-rest curve has no positives; returning NaN (written as null in metrics.json). "
        "Evaluate on a set that holds every class.",
        UndefinedMetricWarning,
        stacklevel=3,
    )
    return float("nan")


def _prep(probs: Tensor, y: Tensor) -> tuple[Tensor, Tensor, int]:
    probs = check_probs(probs)
    k = probs.shape[1]
    y = check_labels(y, probs.shape[0], k).long().to(probs.device)
    return probs.float(), y, k


def accuracy(probs: Tensor, y: Tensor) -> float:
    """Fraction of samples whose argmax class equals the label."""
    probs, y, k = _prep(probs, y)
    return float(tmf.multiclass_accuracy(probs, y, num_classes=k, average="micro"))


def balanced_accuracy(probs: Tensor, y: Tensor) -> float:
    """Mean per-class recall over the classes present in ``y`` (scikit-learn's definition)."""
    probs, y, k = _prep(probs, y)
    recall = tmf.multiclass_recall(probs, y, num_classes=k, average=None)
    present = torch.bincount(y, minlength=k) > 0
    return float(recall[present].mean())


def f1(probs: Tensor, y: Tensor) -> float:
    """F1: binary (class 1 positive) for two classes, else the macro average."""
    probs, y, k = _prep(probs, y)
    if k == 2:
        return float(tmf.binary_f1_score(probs.argmax(1), y))
    return float(tmf.multiclass_f1_score(probs, y, num_classes=k, average="macro"))


def roc_auc(probs: Tensor, y: Tensor) -> float:
    """ROC-AUC: binary on the class-1 probability, else one-vs-rest macro.

    Undefined (NaN, with an :class:`UndefinedMetricWarning`) when a class is absent from ``y``.
    """
    probs, y, k = _prep(probs, y)
    present = torch.bincount(y, minlength=k) > 0
    if not bool(present.all()):
        return _absent_warning(present)
    if k == 2:
        return float(tmf.binary_auroc(probs[:, 1], y))
    return float(tmf.multiclass_auroc(probs, y, num_classes=k, average="macro"))


def confusion_matrix(probs: Tensor, y: Tensor) -> Tensor:
    """``(K, K)`` counts; row = true class, column = predicted class."""
    probs, y, k = _prep(probs, y)
    return tmf.multiclass_confusion_matrix(probs, y, num_classes=k)


def classification_report(probs: Tensor, y: Tensor) -> dict[str, float]:
    """``accuracy``, ``balanced_accuracy``, ``f1``, ``auc``, ``ece`` (15 equal-width bins) and
    ``nll`` (mean ``-log p_y``) of ``(N, K)`` probabilities.

    Half-precision probabilities (bf16 / fp16 from mixed-precision runs) are computed in float32.
    """
    if isinstance(probs, Tensor) and probs.is_floating_point() and probs.element_size() < 4:
        probs = probs.float()
    return {
        "accuracy": accuracy(probs, y),
        "balanced_accuracy": balanced_accuracy(probs, y),
        "f1": f1(probs, y),
        "auc": roc_auc(probs, y),
        "ece": expected_calibration_error(probs, y),
        "nll": nll(probs, y),
    }
