"""Query strategies: which training images are worth a person's time.

Every strategy is a plain function from model outputs to one score per image (higher = ask
first); :func:`score_pool` computes them over a dataset and :func:`rank` turns scores into a
queue, optionally balanced over classes (:func:`per_class`). The studio and the active-feedback
experiment both use these functions; nothing here needs the web app.

Scores (``p`` the class probabilities, ``y`` the label, ``a`` an attribution map):

* ``misclassified``: ``1 - p_y`` -- wrong and unsure-of-the-truth images first (uncertainty
  sampling, Lewis & Gale 1994, "A sequential algorithm for training text classifiers").
* ``least_confident``: ``1 - max_c p_c`` (Settles 2009, "Active Learning Literature Survey").
* ``uncertainty``: mean over pixels of the per-pixel standard deviation of the attribution
  over posterior samples of a Bayesian model (the explanation uncertainty of "Regularizing
  Explanations in Bayesian Convolutional Neural Networks"), divided by the mean magnitude of
  the mean attribution so it is comparable across images.
* ``overlap``: ``sum(m |a|) / sum(|a|)`` with an existing "don't look here" mask ``m`` -- the
  model still looks where it was told not to (Ross, Hughes & Doshi-Velez 2017, "Right for the
  Right Reasons").
* ``disagreement``: ``1 - rho_s(|a_1|, |a_2|)``, one minus the Spearman rank correlation of two
  methods' maps (Krishna et al. 2022, "The Disagreement Problem in Explainable Machine
  Learning").
* ``random``: a seeded uniform draw (the baseline every strategy must beat).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from rightfocus.attribution import attribute
from rightfocus.bayes import is_bayesian
from rightfocus.bayes.inference import predict_probs
from rightfocus.metrics.uncertainty import explanation_uncertainty

__all__ = [
    "STRATEGIES",
    "disagreement",
    "least_confident",
    "mask_overlap",
    "misclassified",
    "per_class",
    "random_scores",
    "rank",
    "score_pool",
    "uncertainty",
]

STRATEGIES = (
    "misclassified",
    "least_confident",
    "uncertainty",
    "overlap",
    "disagreement",
    "random",
)


def misclassified(probs: Tensor, labels: Tensor) -> Tensor:
    """``1 - p_y`` per image: misclassified and least-sure-of-the-label images score highest."""
    return 1.0 - probs.gather(1, labels.long().view(-1, 1)).squeeze(1)


def least_confident(probs: Tensor) -> Tensor:
    """``1 - max_c p_c`` per image."""
    return 1.0 - probs.max(dim=1).values


def uncertainty(mean: Tensor, std: Tensor, eps: float = 1e-12) -> Tensor:
    """Relative explanation uncertainty: ``mean(std) / (mean(|mean|) + eps)`` per image."""
    return std.flatten(1).mean(1) / (mean.abs().flatten(1).mean(1) + eps)


def mask_overlap(attr: Tensor, masks: Tensor, eps: float = 1e-12) -> Tensor:
    """``sum(m |a|) / sum(|a|)`` per image (0 for an empty mask or a zero map)."""
    mag = attr.abs().sum(dim=1, keepdim=True)
    return (mag * masks).flatten(1).sum(1) / (mag.flatten(1).sum(1) + eps)


def _ranks(x: Tensor) -> Tensor:
    """Ranks along dim 1 (ties broken by position; fine for continuous maps)."""
    return x.argsort(dim=1).argsort(dim=1).to(torch.float64)


def disagreement(attr_a: Tensor, attr_b: Tensor) -> Tensor:
    """``1 - Spearman(|a|, |b|)`` per image, in [0, 2]; maps are reduced over channels and
    ``attr_b`` is resized to ``attr_a``'s size if needed."""
    a = attr_a.abs().sum(1, keepdim=True)
    b = attr_b.abs().sum(1, keepdim=True)
    if b.shape[-2:] != a.shape[-2:]:
        b = torch.nn.functional.interpolate(b, size=a.shape[-2:], mode="bilinear")
    ra, rb = _ranks(a.flatten(1)), _ranks(b.flatten(1))
    ra, rb = ra - ra.mean(1, keepdim=True), rb - rb.mean(1, keepdim=True)
    rho = (ra * rb).sum(1) / ((ra.square().sum(1) * rb.square().sum(1)).sqrt() + 1e-12)
    return (1.0 - rho).to(attr_a.dtype)


def random_scores(n: int, seed: int = 0) -> Tensor:
    """``n`` seeded uniform scores."""
    return torch.rand(n, generator=torch.Generator().manual_seed(int(seed)), dtype=torch.float64)


def per_class(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Positions ordered round-robin over classes, best score first within each class, so the
    first ``k`` of the queue spread evenly over the classes."""
    scores, labels = np.asarray(scores), np.asarray(labels)
    lists = [
        idx[np.argsort(-scores[idx], kind="stable")]
        for c in np.unique(labels)
        for idx in [np.flatnonzero(labels == c)]
    ]
    out: list[int] = []
    for r in range(max((len(v) for v in lists), default=0)):
        out.extend(int(v[r]) for v in lists if r < len(v))
    return np.asarray(out, dtype=np.int64)


def rank(
    scores: np.ndarray | Tensor,
    indices: Sequence[int] | np.ndarray,
    labels: Sequence[int] | np.ndarray | None = None,
    k: int | None = None,
    exclude: Sequence[int] = (),
) -> list[int]:
    """The queue: ``indices`` sorted by descending score (round-robin over classes when
    ``labels`` are given), without ``exclude``, first ``k``."""
    s = np.asarray(scores.detach().cpu() if isinstance(scores, Tensor) else scores, dtype=float)
    idx = np.asarray(indices, dtype=np.int64)
    if s.shape != idx.shape:
        raise ValueError(f"{s.shape[0]} scores for {idx.shape[0]} indices")
    keep = ~np.isin(idx, np.asarray(list(exclude), dtype=np.int64))
    s, idx = s[keep], idx[keep]
    if labels is not None:
        order = per_class(s, np.asarray(labels)[keep])
    else:
        order = np.argsort(-s, kind="stable")
    out = idx[order].tolist()
    return out if k is None else out[: int(k)]


def _batches(dataset: Dataset[Any], indices: Sequence[int], batch_size: int):  # type: ignore[no-untyped-def]
    for start in range(0, len(indices), batch_size):
        items = [dataset[int(i)] for i in indices[start : start + batch_size]]
        x = torch.stack([it[0] for it in items])
        y = torch.as_tensor([int(it[1]) for it in items])
        m = torch.stack([it[2] for it in items])
        yield x, y, m


def score_pool(
    model: nn.Module,
    dataset: Dataset[Any],
    indices: Sequence[int] | np.ndarray,
    strategy: str,
    *,
    method: str = "saliency",
    method_b: str = "gradcam",
    options: Callable[[str], dict[str, Any]] | None = None,
    masks: Callable[[int], Tensor | None] | None = None,
    mc_samples: int = 10,
    batch_size: int = 128,
    seed: int = 0,
    device: torch.device | str = "cpu",
) -> np.ndarray:
    """Scores of ``strategy`` for ``dataset[i]``, ``i`` in ``indices`` (aligned with them).

    Args:
        method, method_b: the attribution method (``uncertainty``, ``overlap``) and the second
            one (``disagreement``). options: method name -> extra attribution kwargs (e.g. the
            layer of a CAM). masks: pool index -> existing mask (``overlap``; None: use the
            dataset's own mask). mc_samples: posterior samples for Bayesian models.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"Unknown strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
    indices = [int(i) for i in indices]
    if strategy == "random":
        return random_scores(len(indices), seed).numpy()
    bayes = is_bayesian(model)
    if strategy == "uncertainty" and not bayes:
        raise ValueError(
            "The 'uncertainty' strategy needs a Bayesian model (model.bayesian: true): it is "
            "the spread of the explanation over posterior samples"
        )
    opts = options or (lambda m: {})
    model = model.to(device).eval()
    out: list[Tensor] = []
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        for x, y, m in _batches(dataset, indices, batch_size):
            x, y = x.to(device), y.to(device)
            probs = predict_probs(model, x, bayes, mc_samples)
            pred = probs.argmax(1)
            if strategy == "misclassified":
                s = misclassified(probs, y)
            elif strategy == "least_confident":
                s = least_confident(probs)
            elif strategy == "uncertainty":
                eu = explanation_uncertainty(
                    model,
                    x,
                    pred,
                    method=method,
                    samples=max(2, mc_samples),
                    seed=seed,
                    **opts(method),
                )
                s = uncertainty(eu.mean, eu.std)
            elif strategy == "overlap":
                if masks is not None:
                    pos = len(out) and sum(len(t) for t in out)
                    chunk = indices[pos : pos + len(x)]
                    got = [masks(i) for i in chunk]
                    m = torch.stack([g if g is not None else torch.zeros_like(m[0]) for g in got])
                a = attribute(model, x, pred, method=method, **opts(method)).detach()
                s = mask_overlap(a, m.to(device).float())
            else:
                a = attribute(model, x, pred, method=method, **opts(method)).detach()
                b = attribute(model, x, pred, method=method_b, **opts(method_b)).detach()
                s = disagreement(a, b)
            out.append(s.detach().double().cpu())
    return torch.cat(out).numpy() if out else np.zeros(0)
