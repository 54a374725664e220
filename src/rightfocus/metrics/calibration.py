"""Calibration: ECE (equal-width / equal-mass bins), MCE, classwise ECE, NLL, Brier score,
reliability-diagram data and temperature scaling.

Expected calibration error (Guo et al. 2017, "On Calibration of Modern Neural Networks"):
``ECE = sum_b |B_b|/N * |acc(B_b) - conf(B_b)|`` over confidence bins ``B_b`` of the top-class
probability. Equal-width bins are ``[b/M, (b+1)/M)`` (the last one closed); equal-mass bins
hold (nearly) the same number of samples. Equal-width ECE and MCE are torchmetrics'
``multiclass_calibration_error`` (``norm="l1"`` / ``"max"``); equal-mass bins, classwise ECE
and the per-bin reliability-diagram data, which torchmetrics does not offer, are computed here
(:func:`reliability_data`). Temperature scaling fits one ``T > 0`` so that
``softmax(z / T)`` minimises the NLL on validation logits (LBFGS on ``log T``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics.functional.classification import multiclass_calibration_error

from rightfocus.errors import UserError
from rightfocus.metrics._checks import check_labels, check_probs

__all__ = [
    "ReliabilityData",
    "TemperatureFit",
    "brier_score",
    "classwise_ece",
    "ece",
    "expected_calibration_error",
    "fit_temperature",
    "maximum_calibration_error",
    "nll",
    "reliability_data",
]


@dataclass
class ReliabilityData:
    """Per-bin accuracy, confidence and count (empty bins: count 0, NaN acc/conf)."""

    edges: Tensor
    accuracy: Tensor
    confidence: Tensor
    count: Tensor

    @property
    def gaps(self) -> Tensor:
        return (self.accuracy - self.confidence).abs()


def _bin_index(conf: Tensor, n_bins: int, strategy: str) -> tuple[Tensor, Tensor]:
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    if strategy == "width":
        edges = torch.linspace(0, 1, n_bins + 1, dtype=torch.float64, device=conf.device)
        idx = torch.bucketize(conf.double(), edges, right=True) - 1
        return idx.clamp(0, n_bins - 1), edges
    if strategy == "mass":
        order = conf.argsort()
        idx = torch.empty_like(order)
        for b, chunk in enumerate(torch.tensor_split(order, n_bins)):
            idx[chunk] = b
        sorted_conf = conf[order].double()
        cuts = [
            float(sorted_conf[c[0]])
            for c in torch.tensor_split(torch.arange(len(conf)), n_bins)
            if len(c)
        ]
        edges = torch.tensor([*cuts, 1.0], dtype=torch.float64)
        return idx, edges
    raise ValueError(
        f"strategy must be 'width' (equal-width bins) or 'mass' (equal-mass), got {strategy!r}"
    )


def _binned(conf: Tensor, correct: Tensor, n_bins: int, strategy: str) -> ReliabilityData:
    idx, edges = _bin_index(conf, n_bins, strategy)
    count = torch.zeros(n_bins, dtype=torch.float64, device=conf.device)
    count.scatter_add_(0, idx, torch.ones_like(conf, dtype=torch.float64))
    conf_sum = torch.zeros_like(count).scatter_add_(0, idx, conf.double())
    acc_sum = torch.zeros_like(count).scatter_add_(0, idx, correct.double())
    nan = torch.full_like(count, float("nan"))
    has = count > 0
    return ReliabilityData(
        edges=edges,
        accuracy=torch.where(has, acc_sum / count.clamp_min(1), nan),
        confidence=torch.where(has, conf_sum / count.clamp_min(1), nan),
        count=count,
    )


def reliability_data(
    probs: Tensor, y: Tensor, n_bins: int = 15, strategy: str = "width"
) -> ReliabilityData:
    """Binned accuracy vs confidence of the top-class probability."""
    probs = check_probs(probs)
    y = check_labels(y, probs.shape[0], probs.shape[1]).to(probs.device)
    conf, pred = probs.max(dim=1)
    return _binned(conf, (pred == y), n_bins, strategy)


def _weighted_gap(data: ReliabilityData) -> Tensor:
    has = data.count > 0
    return (data.count[has] / data.count.sum() * data.gaps[has]).sum()


def _torchmetrics_calibration(
    probs: Tensor, y: Tensor, n_bins: int, norm: Literal["l1", "max"]
) -> float:
    """Equal-width ECE (``norm="l1"``) or MCE (``"max"``) by torchmetrics, inputs checked here
    (torchmetrics would silently softmax rows that do not sum to 1)."""
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    probs = check_probs(probs)
    y = check_labels(y, probs.shape[0], probs.shape[1]).long().to(probs.device)
    return float(
        multiclass_calibration_error(
            probs.float(), y, num_classes=probs.shape[1], n_bins=n_bins, norm=norm
        )
    )


def expected_calibration_error(
    probs: Tensor, y: Tensor, n_bins: int = 15, strategy: str = "width"
) -> float:
    """ECE of the top-class confidence: ``strategy="width"`` (default) by torchmetrics,
    ``"mass"`` (equal-mass bins) from :func:`reliability_data`."""
    if strategy == "width":
        return _torchmetrics_calibration(probs, y, n_bins, "l1")
    return float(_weighted_gap(reliability_data(probs, y, n_bins, strategy)))


ece = expected_calibration_error


def maximum_calibration_error(
    probs: Tensor, y: Tensor, n_bins: int = 15, strategy: str = "width"
) -> float:
    """MCE: the largest ``|acc - conf|`` over non-empty bins (equal-width: torchmetrics)."""
    if strategy == "width":
        return _torchmetrics_calibration(probs, y, n_bins, "max")
    data = reliability_data(probs, y, n_bins, strategy)
    return float(data.gaps[data.count > 0].max())


def classwise_ece(probs: Tensor, y: Tensor, n_bins: int = 15) -> float:
    """Classwise ECE (Kull et al. 2019): mean over classes of the ECE of ``p_k`` vs ``1[y = k]``."""
    probs = check_probs(probs)
    y = check_labels(y, probs.shape[0], probs.shape[1]).to(probs.device)
    total = torch.zeros((), dtype=torch.float64)
    for k in range(probs.shape[1]):
        total = total + _weighted_gap(_binned(probs[:, k], y == k, n_bins, "width"))
    return float(total / probs.shape[1])


def nll(probs: Tensor, y: Tensor) -> float:
    """Mean negative log-likelihood ``-log p_y`` (probabilities clamped at 1e-12)."""
    probs = check_probs(probs)
    y = check_labels(y, probs.shape[0], probs.shape[1]).to(probs.device)
    return float(F.nll_loss(probs.double().clamp_min(1e-12).log(), y.long()))


def brier_score(probs: Tensor, y: Tensor) -> float:
    """Multi-class Brier score: mean over samples of ``sum_k (p_k - 1[y = k])^2``."""
    probs = check_probs(probs)
    y = check_labels(y, probs.shape[0], probs.shape[1]).to(probs.device)
    onehot = F.one_hot(y.long(), probs.shape[1]).to(torch.float64)
    return float(((probs.double() - onehot) ** 2).sum(dim=1).mean())


@dataclass
class TemperatureFit:
    """The fitted temperature and the ECE / NLL before and after scaling."""

    temperature: float
    ece_before: float
    ece_after: float
    nll_before: float
    nll_after: float

    def apply(self, logits: Tensor) -> Tensor:
        return (logits / self.temperature).softmax(dim=-1)


def _refuse_probabilities(logits: Tensor) -> None:
    z = logits.detach().double()
    in_unit = bool(((z >= 0) & (z <= 1)).all())
    if in_unit and torch.allclose(z.sum(dim=1), torch.ones_like(z[:, 0]), atol=1e-4):
        raise UserError(
            "fit_temperature got probabilities (rows in [0, 1] summing to 1), not logits",
            hint="pass the model's pre-softmax outputs; from probabilities p use p.log()",
        )


def fit_temperature(
    logits: Tensor, y: Tensor, n_bins: int = 15, max_iter: int = 100
) -> TemperatureFit:
    """Temperature scaling (Guo et al. 2017): ``T = argmin NLL(softmax(z / T), y)`` by LBFGS.

    ``logits`` are the pre-softmax outputs. Probabilities (every entry in [0, 1], every row
    summing to 1) are refused: scaling them as logits fits a meaningless, huge ``T``.
    """
    if not isinstance(logits, Tensor) or logits.dim() != 2 or logits.shape[0] == 0:
        raise ValueError("logits must be a non-empty (N, K) tensor of validation logits")
    if not bool(torch.isfinite(logits).all()):
        raise ValueError("logits contain NaN or Inf values")
    _refuse_probabilities(logits)
    y = check_labels(y, logits.shape[0], logits.shape[1]).long().to(logits.device)
    z = logits.detach().double()
    log_t = torch.zeros((), dtype=torch.float64, device=z.device, requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=0.1, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(z / log_t.exp(), y)
        loss.backward()
        return loss

    opt.step(closure)
    t = float(log_t.detach().exp())
    before, after = z.softmax(-1), (z / t).softmax(-1)
    return TemperatureFit(
        temperature=t,
        ece_before=expected_calibration_error(before, y, n_bins),
        ece_after=expected_calibration_error(after, y, n_bins),
        nll_before=nll(before, y),
        nll_after=nll(after, y),
    )
