"""ELBO terms, Monte-Carlo prediction and uncertainty measures for Bayesian CNNs.

ELBO for a minibatch as in "Regularizing Explanations in Bayesian Convolutional Neural Networks":
``loss = CE(mean_s logits_s, y; reduction='sum') + KL(q || p) / num_batches``.

Uncertainty (in nats) from S Monte-Carlo samples ``p_s = softmax(logits_s)`` (Depeweg et al.
2018; Smith & Gal 2018): predictive entropy ``H[mean_s p_s]`` (total), expected entropy
``mean_s H[p_s]`` (aleatoric) and their difference, the mutual information between the
prediction and the weights (epistemic).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rightfocus import hooks
from rightfocus.bayes.convert import is_bayesian, kl
from rightfocus.errors import UserError

__all__ = [
    "MCPrediction",
    "elbo_terms",
    "expected_entropy",
    "mc_predict",
    "mutual_information",
    "predict_batches",
    "predict_probs",
    "predictive_entropy",
]


def _check_int(value: int, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


def elbo_terms(
    logits: Tensor,
    y: Tensor,
    model: nn.Module,
    num_batches: int,
    reduction: str = "sum",
    weight: Tensor | None = None,
) -> dict[str, Tensor]:
    """The two parts of the negative ELBO for one minibatch.

    ``nll = cross_entropy(mean_s logits_s, y, reduction)``; ``kl = KL(q || p) / num_batches``.
    The paper uses ``reduction='sum'`` and one MC sample; logits of shape ``(S, B, K)`` are
    averaged over the S samples first (as in the paper's code).

    Args:
        logits: ``(B, K)`` or ``(S, B, K)`` model outputs.
        y: ``(B,)`` integer class labels.
        model: the Bayesian model (its layers' ``kl()`` are summed).
        num_batches: minibatches per epoch (the KL is spread over them).
        reduction: ``"sum"`` (paper) or ``"mean"`` over the batch.
        weight: optional ``(K,)`` class weights for the cross-entropy.

    Returns:
        ``{"nll": scalar, "kl": scalar}``.
    """
    if not isinstance(logits, Tensor) or logits.dim() not in (2, 3):
        shape = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
        raise ValueError(f"logits must be a (B, K) or (S, B, K) tensor, got {shape}")
    if reduction not in ("sum", "mean"):
        raise ValueError(f"reduction must be 'sum' (the paper's) or 'mean', got {reduction!r}")
    _check_int(num_batches, "num_batches")
    mean_logits = logits.mean(dim=0) if logits.dim() == 3 else logits
    if not isinstance(y, Tensor) or y.shape != mean_logits.shape[:1]:
        got = tuple(y.shape) if isinstance(y, Tensor) else type(y).__name__
        raise ValueError(f"y must be a ({mean_logits.shape[0]},) label tensor, got {got}")
    nll = F.cross_entropy(mean_logits, y.long(), weight=weight, reduction=reduction)
    return {"nll": nll, "kl": kl(model) / num_batches}


@dataclass(frozen=True)
class MCPrediction:
    """Result of :func:`mc_predict`.

    Attributes:
        probs: ``(B, K)`` mean of the per-sample softmax probabilities.
        logits: ``(S, B, K)`` per-sample logits.
    """

    probs: Tensor
    logits: Tensor

    @property
    def sample_probs(self) -> Tensor:
        """``(S, B, K)`` per-sample softmax probabilities."""
        return self.logits.softmax(dim=-1)


def mc_predict(model: nn.Module, x: Tensor, samples: int = 10, sample: bool = True) -> MCPrediction:
    """Monte-Carlo prediction: ``samples`` stochastic forward passes, no gradients.

    The model runs in eval mode (dropout and BatchNorm deterministic; flags restored after) with
    its Bayesian layers' sampling switch set to ``sample`` (restored after). With
    ``sample=False`` the mean network is evaluated once and its logits repeated S times, so the
    result is deterministic and has the same shape.

    Raises:
        UserError: ``x`` holds NaN or Inf. ValueError: the model returns non-finite logits.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, not {type(model).__name__}")
    if not isinstance(x, Tensor):
        raise TypeError(f"x must be a tensor, not {type(x).__name__}")
    if x.is_floating_point() and not bool(torch.isfinite(x).all()):
        bad = int((~torch.isfinite(x)).flatten(1).any(1).sum()) if x.dim() > 1 else 1
        raise UserError(
            f"x contains NaN or Inf values ({bad} of {len(x) if x.dim() else 1} samples); the "
            "predictions would be NaN",
            hint="clean or drop those inputs first",
        )
    _check_int(samples, "samples")
    with torch.no_grad(), hooks.eval_mode(model), hooks.sampling(model, bool(sample)):
        if sample:
            logits = torch.stack([model(x) for _ in range(samples)])
        else:
            logits = model(x).unsqueeze(0).expand(samples, -1, -1)
    if logits.dim() != 3:
        raise ValueError(f"model must return (B, K) logits, got {tuple(logits.shape[1:])}")
    if not bool(torch.isfinite(logits).all()):
        raise ValueError(
            "the model returned NaN or Inf logits for finite inputs: its weights or posterior "
            "variances (rho) overflow; check the model (e.g. a huge rho) before predicting"
        )
    return MCPrediction(probs=logits.softmax(dim=-1).mean(dim=0), logits=logits)


def predict_probs(model: nn.Module, x: Tensor, bayesian: bool, mc_samples: int) -> Tensor:
    """Class probabilities ``(B, K)`` in float32, no grad, eval mode.

    Bayesian models: the MC mean ``mean_s softmax(f(x; w_s))`` over ``mc_samples`` sampled
    passes (Gal & Ghahramani 2016, "Dropout as a Bayesian Approximation"), or the mean network's
    softmax for ``mc_samples = 0``; otherwise ``softmax(f(x))``. The softmax is taken of float32
    logits even under mixed precision (bf16 keeps 8 bits of mantissa, so bf16 probabilities miss
    summing to 1 by up to ~1e-2 and every metric would inherit that error).
    """
    if bayesian:
        if mc_samples == 0:
            logits = mc_predict(model, x, samples=1, sample=False).logits
        else:
            logits = mc_predict(model, x, samples=mc_samples).logits
        return logits.float().softmax(dim=-1).mean(dim=0)
    with torch.no_grad(), hooks.eval_mode(model):
        return model(x).float().softmax(dim=-1)


def predict_batches(
    model: nn.Module,
    loader: Iterable[Sequence[Any]],
    mc_samples: int,
    seed: int,
    device: torch.device | str = "cpu",
) -> Iterator[tuple[list[Any], Tensor]]:
    """Monte-Carlo prediction over a dataloader: yields ``(batch, probs)`` per batch,
    the batch's tensors moved to ``device``.

    ``probs`` is :func:`predict_probs` (MC mean for Bayesian models, whether the model is
    Bayesian is read from its layers). The sampled weights are drawn from the global RNG seeded
    with ``seed`` for the whole loop, so two evaluations of one model agree; the caller's RNG
    state is restored when the loop ends (or is closed early). Yielding per batch lets the caller
    compute per-batch quantities (e.g. explanations) from the same pass over the data.
    """
    bayesian = is_bayesian(model)
    saved = torch.get_rng_state()
    torch.manual_seed(seed)
    try:
        for batch in loader:
            moved = [t.to(device) if isinstance(t, Tensor) else t for t in batch]
            yield moved, predict_probs(model, moved[0], bayesian, mc_samples)
    finally:
        torch.set_rng_state(saved)


def _entropy(probs: Tensor) -> Tensor:
    """``-sum_k p_k log p_k`` over the last dimension (``0 log 0 = 0``)."""
    return -torch.special.xlogy(probs, probs).sum(dim=-1)


def _check_probs(probs: Tensor, dims: int, name: str) -> None:
    if not isinstance(probs, Tensor) or probs.dim() != dims:
        shape = tuple(probs.shape) if isinstance(probs, Tensor) else type(probs).__name__
        want = "(B, K)" if dims == 2 else "(S, B, K)"
        raise ValueError(f"{name} must be a {want} tensor of probabilities, got {shape}")
    if not torch.isfinite(probs).all() or (probs < 0).any():
        raise ValueError(f"{name} must hold finite, non-negative probabilities")


def predictive_entropy(probs: Tensor) -> Tensor:
    """Total uncertainty ``H[p] = -sum_k p_k log p_k`` of ``(B, K)`` mean probabilities -> (B,)."""
    _check_probs(probs, 2, "probs")
    return _entropy(probs)


def expected_entropy(sample_probs: Tensor) -> Tensor:
    """Aleatoric uncertainty ``mean_s H[p_s]`` of ``(S, B, K)`` sample probabilities -> (B,)."""
    _check_probs(sample_probs, 3, "sample_probs")
    return _entropy(sample_probs).mean(dim=0)


def mutual_information(sample_probs: Tensor) -> Tensor:
    """Epistemic uncertainty ``H[mean_s p_s] - mean_s H[p_s]`` (>= 0) -> (B,).

    The mutual information between the label and the weights under the posterior; clamped at 0
    against rounding.
    """
    _check_probs(sample_probs, 3, "sample_probs")
    total = _entropy(sample_probs.mean(dim=0))
    return (total - _entropy(sample_probs).mean(dim=0)).clamp(min=0)
