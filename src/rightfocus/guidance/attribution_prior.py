"""Attribution priors on X-Gradient (Hesse, Schaub-Meyer & Roth, NeurIPS 2021)."""

from __future__ import annotations

import torch
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
from rightfocus.models.xdnn import check_homogeneous, homogeneity_error

__all__ = ["XGradientPrior", "gini", "gini_pairwise", "x_gradient"]


def gini_pairwise(v: Tensor, eps: float = 1e-12) -> Tensor:
    """Reference Gini coefficient, ``0.5 * mean_{i,j} |v_i - v_j| / mean(v)`` (O(n^2) memory)."""
    v = v.flatten()
    return 0.5 * (v[:, None] - v[None, :]).abs().mean() / (v.mean() + eps)


def gini(v: Tensor, eps: float = 1e-12) -> Tensor:
    """Gini coefficient of a non-negative vector, ``0.5 * mean_{i,j}|v_i - v_j| / mean(v)``.

    Computed in O(n log n) from the sorted values ``v_(1) <= ... <= v_(n)``:
    ``sum_{i,j} |v_i - v_j| = 2 sum_i (2i - n - 1) v_(i)``, hence
    ``gini = sum_i (2i - n - 1) v_(i) / (n * sum_i v_i)``. Differentiable (through the sort).
    0 for a constant vector, ``1 - 1/n`` when one entry holds everything.
    """
    v = v.flatten()
    n = v.numel()
    if n == 0:
        raise ValueError("gini of an empty vector is undefined")
    sorted_v, _ = torch.sort(v)
    i = torch.arange(1, n + 1, device=v.device, dtype=v.dtype)
    return ((2 * i - n - 1) * sorted_v).sum() / (n * v.sum() + eps)


def x_gradient(logits: Tensor, x: Tensor, target: Tensor, create_graph: bool = True) -> Tensor:
    """X-Gradient ``x * d logit_target / dx`` from an existing forward pass (one backward)."""
    if logits.dim() != 2:
        raise ValueError(f"X-Gradient needs (B, K) logits, got {tuple(logits.shape)}")
    scores = logits.gather(1, target.view(-1, 1).long()).sum()
    (grad,) = torch.autograd.grad(scores, x, create_graph=create_graph)
    return x * grad


_HINT = (
    "X-Gradient equals Integrated Gradients only on a positively homogeneous model (an X-DNN). "
    "Convert it with rightfocus.models.xdnn.to_xdnn, or pass force=True to train anyway."
)


def _check_no_bias(model: nn.Module) -> None:
    """Static part of the guard: an X-DNN has no bias terms (plain or Bayesian layers)."""
    for name, module in model.named_modules():
        for attr in ("bias", "mu_bias"):
            if isinstance(getattr(module, attr, None), Tensor):
                raise ValueError(
                    f"Layer {name or type(model).__name__!r} ({type(module).__name__}) has a "
                    f"bias, so the model is not positively homogeneous. {_HINT}"
                )


def _check_homogeneous(model: nn.Module, x: Tensor) -> None:
    """Dynamic part: ``f(a x) = a f(x)`` on a few real inputs (the mean network, no grad)."""
    sample = x[:16].detach()
    if not check_homogeneous(model, sample):
        err = homogeneity_error(model, sample)
        raise ValueError(
            f"{type(model).__name__} is not positively homogeneous on this batch "
            f"(max relative deviation of f(a x) from a f(x): {err:.3g}). {_HINT}"
        )


@register_guidance("xgradient_prior")
class XGradientPrior(Guidance):
    """Attribution priors on X-Gradient, trained with one extra backward (``create_graph``).

    Hesse et al. 2021, "Fast Axiomatic Attribution for Neural Networks": on an X-DNN (no bias
    terms, positively homogeneous of degree 1) the X-Gradient ``a = x * d f_y / dx`` equals
    Integrated Gradients with a zero baseline, so an attribution prior costs one backward:

        ``loss = CE + lam * sum (mask * a)^2  +  gini_lam * (-Gini(mean_n |a_n|))``

    The masked term pushes attribution out of the "do not use" region (the RRR idea on an
    axiomatic attribution); the sparsity prior (Erion et al. 2021, as used by Hesse et al.)
    rewards concentrated attributions, ``gini(v) = 0.5 * mean_{i,j} |v_i - v_j| / mean(v)``
    over the pixels (and channels) of the batch-mean absolute attribution.

    Args:
        lam: weight of the masked penalty (0 turns it off; then masks are not needed).
        gini_lam: weight of the sparsity prior (0 = off, the default).
        target: ``"label"`` (attribute the true class, default) or ``"pred"``.
        force: skip the homogeneity guard (X-Gradient is then only input x gradient).
        empty_masks: policy when the data carries no masks (``"error"``/``"warn"``/``"ignore"``).
    """

    requires_mask = True
    needs_input_grad = True

    def __init__(
        self,
        *,
        lam: float = 1.0,
        gini_lam: float = 0.0,
        target: str = "label",
        force: bool = False,
        empty_masks: str = "error",
    ) -> None:
        check_weights(lam=lam, gini_lam=gini_lam)
        if lam == 0 and gini_lam == 0:
            raise ValueError("Both lam and gini_lam are 0: set at least one to use the prior")
        self.lam = float(lam)
        self.gini_lam = float(gini_lam)
        self.target = check_choice(target, ("label", "pred"), "target")
        self.force = bool(force)
        self._guard = EmptyMaskGuard("xgradient_prior", empty_masks if lam > 0 else "ignore")
        self._checked: set[int] = set()

    def check(self, model: nn.Module) -> None:
        """Refuse models with bias terms unless ``force=True``."""
        if not self.force:
            _check_no_bias(model)

    def loss_terms(self, model: nn.Module, batch: GuidedBatch, logits: Tensor) -> dict[str, Tensor]:
        require_input_grad(batch, "xgradient_prior")
        if not self.force and id(model) not in self._checked:
            _check_no_bias(model)
            _check_homogeneous(model, batch.x)  # once per model, on its first batch
            self._checked.add(id(model))
        self._guard.update(batch.mask)
        target = batch.y if self.target == "label" else logits.argmax(1)
        attr = x_gradient(logits, batch.x, target, create_graph=True)
        terms: dict[str, Tensor] = {}
        if self.lam > 0:
            terms["xgrad_mask"] = self.lam * (batch.mask.to(attr) * attr).pow(2).sum()
        if self.gini_lam > 0:
            terms["xgrad_gini"] = -self.gini_lam * gini(attr.abs().mean(dim=0))
        return terms

    def __repr__(self) -> str:
        return (
            f"XGradientPrior(lam={self.lam}, gini_lam={self.gini_lam}, target={self.target!r}, "
            f"force={self.force})"
        )
