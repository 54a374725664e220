"""Right for the Right Reasons (Ross, Hughes & Doshi-Velez, IJCAI 2017)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rightfocus.guidance._masks import EmptyMaskGuard
from rightfocus.guidance.base import (
    Guidance,
    GuidedBatch,
    check_choice,
    check_weights,
    register_guidance,
    require_input_grad,
)

__all__ = ["LOG_PROB_MODES", "RRR", "explanation_score", "rrr_penalty"]

LOG_PROB_MODES = ("sum", "target", "loss")


def explanation_score(
    logits: Tensor, y: Tensor, log_prob: str = "sum", class_weight: Tensor | None = None
) -> Tensor:
    """The scalar whose input gradient RRR penalises.

    * ``"sum"``: ``sum_n sum_k log p_k(x_n)`` (Ross et al.'s choice: all classes);
    * ``"target"``: ``sum_n log p_{y_n}(x_n)``;
    * ``"loss"``: the summed (optionally class-weighted) cross-entropy ``sum_n w_{y_n} CE_n``;
      without class weights this is ``-target``, so its squared gradient is the same.
    """
    check_choice(log_prob, LOG_PROB_MODES, "log_prob")
    if logits.dim() != 2:
        raise ValueError(
            f"RRR needs (B, K) logits from one forward pass, got {tuple(logits.shape)}"
        )
    logp = F.log_softmax(logits, dim=1)
    if log_prob == "sum":
        return logp.sum()
    if log_prob == "target":
        return logp.gather(1, y.view(-1, 1).long()).sum()
    weight = None if class_weight is None else class_weight.to(logits)
    return F.cross_entropy(logits, y.long(), weight=weight, reduction="sum")


def rrr_penalty(input_grad: Tensor, mask: Tensor) -> Tensor:
    """``sum (mask * grad)^2`` over batch, channels and pixels; mask broadcasts over channels."""
    return (mask * input_grad).pow(2).sum()


@register_guidance("rrr")
class RRR(Guidance):
    """Right for the Right Reasons: penalise input gradients inside the mask.

    Ross et al. 2017, "Right for the Right Reasons: Training Differentiable Models by
    Constraining their Explanations", Eq. 1 (the right-reasons term):

        ``lam * sum_n sum_d (A_nd * d/dx_nd sum_k log p_k(x_n))^2``

    with ``A`` the mask (1 = must not be used; broadcast over channels). The gradient is taken
    with ``create_graph=True`` so the term trains the parameters (double backpropagation). The
    paper's weight decay term ``lambda_2 ||theta||^2`` belongs to the optimiser, not here.
    Works for deterministic and Bayesian models (the gradient of the sampled forward pass).

    Args:
        lam: weight ``lambda_1`` (1000 in the paper, for 0-255 inputs; the gradient with
            respect to [0, 1] inputs is 255 times larger, so the same strength there is
            ``1000 / 255**2``, about 0.015).
        log_prob: ``"sum"`` (paper), ``"target"`` or ``"loss"``, see :func:`explanation_score`.
        class_weight: optional (K,) class weights for ``log_prob="loss"``.
        empty_masks: ``"error"`` / ``"warn"`` / ``"ignore"`` when the data carries no masks
            (see :class:`~rightfocus.guidance._masks.EmptyMaskGuard`).
    """

    requires_mask = True
    needs_input_grad = True

    def __init__(
        self,
        *,
        lam: float = 1000.0,
        log_prob: str = "sum",
        class_weight: Tensor | list[float] | None = None,
        empty_masks: str = "error",
    ) -> None:
        check_weights(lam=lam)
        self.lam = float(lam)
        self.log_prob = check_choice(log_prob, LOG_PROB_MODES, "log_prob")
        self.class_weight = None if class_weight is None else torch.as_tensor(class_weight)
        self._guard = EmptyMaskGuard("rrr", empty_masks)

    def loss_terms(self, model: nn.Module, batch: GuidedBatch, logits: Tensor) -> dict[str, Tensor]:
        require_input_grad(batch, "RRR")
        self._guard.update(batch.mask)
        score = explanation_score(logits, batch.y, self.log_prob, self.class_weight)
        (grad,) = torch.autograd.grad(score, batch.x, create_graph=True)
        return {"rrr": self.lam * rrr_penalty(grad, batch.mask.to(grad))}

    def __repr__(self) -> str:
        return f"RRR(lam={self.lam}, log_prob={self.log_prob!r})"
