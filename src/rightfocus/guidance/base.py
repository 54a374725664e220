"""The guidance contract: a method turns a batch ``(x, y, mask)`` and a model into loss terms.

A training step with guidance ``g_1 .. g_n`` (see :func:`guided_forward`):

1. ``batch = g.transform(batch)`` for each method (data-level changes, e.g. counterexamples);
2. the forward pass runs inside every ``g.forward_context(model, batch)`` (hooks that record
   layer moments or change activations; scoped by :mod:`rightfocus.hooks`), with
   ``x.requires_grad`` set when any method ``needs_input_grad``;
3. ``g.loss_terms(model, batch, logits)`` returns named terms, e.g. ``{"feedback": ...}``.

The caller adds the data terms (``nll``, and ``kl`` for Bayesian models) and sums everything.
Methods are small and composable: RRR on a Bayesian model is ``[BayesFeedback(), RRR()]``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, replace
from typing import ClassVar

from torch import Tensor, nn

__all__ = ["Guidance", "GuidedBatch", "guided_forward"]


@dataclass(frozen=True)
class GuidedBatch:
    """One minibatch: images ``x`` (B, C, H, W), labels ``y`` (B,), masks (B, 1, H, W).

    ``mask`` is 1 where the model must not look and 0 elsewhere; a sample without feedback has
    an all-zero mask.
    """

    x: Tensor
    y: Tensor
    mask: Tensor

    def __post_init__(self) -> None:
        if self.x.dim() != 4:
            raise ValueError(f"x must be (B, C, H, W), got {tuple(self.x.shape)}")
        if self.mask.dim() != 4 or self.mask.shape[1] != 1:
            raise ValueError(f"mask must be (B, 1, H, W), got {tuple(self.mask.shape)}")
        if self.mask.shape[0] != self.x.shape[0] or self.mask.shape[-2:] != self.x.shape[-2:]:
            raise ValueError(
                f"mask {tuple(self.mask.shape)} does not match images {tuple(self.x.shape)}: "
                "it must have the same batch size and spatial size"
            )
        if self.y.shape != self.x.shape[:1]:
            raise ValueError(f"y must be ({self.x.shape[0]},), got {tuple(self.y.shape)}")

    @property
    def has_feedback(self) -> Tensor:
        """(B,) bool: which samples carry a non-empty mask."""
        return self.mask.flatten(1).amax(dim=1) > 0

    def with_x(self, x: Tensor) -> GuidedBatch:
        return replace(self, x=x)


class Guidance(ABC):
    """One explanation-guided training method.

    Capabilities: ``requires_mask`` (needs masks), ``requires_bayesian`` (needs LRT layers),
    ``needs_input_grad`` (the forward input must require grad, e.g. RRR).
    """

    name: ClassVar[str] = ""
    requires_mask: ClassVar[bool] = True
    requires_bayesian: ClassVar[bool] = False
    needs_input_grad: ClassVar[bool] = False

    def check(self, model: nn.Module) -> None:  # noqa: B027 - optional hook
        """Validate the model once before training; raise ``ValueError`` saying what to do."""

    def transform(self, batch: GuidedBatch) -> GuidedBatch:
        """Data-level change of the batch before the forward pass (default: none)."""
        return batch

    @contextmanager
    def forward_context(self, model: nn.Module, batch: GuidedBatch) -> Iterator[None]:
        """Scope around the training forward pass (default: nothing)."""
        yield

    @abstractmethod
    def loss_terms(self, model: nn.Module, batch: GuidedBatch, logits: Tensor) -> dict[str, Tensor]:
        """Named scalar loss terms for this batch, already weighted by the method's lambda."""


def guided_forward(
    model: nn.Module, batch: GuidedBatch, guidance: Sequence[Guidance]
) -> tuple[Tensor, GuidedBatch, dict[str, Tensor]]:
    """Run steps 1-3 above: returns ``(logits, transformed batch, guidance terms)``."""
    for g in guidance:
        batch = g.transform(batch)
    if any(g.needs_input_grad for g in guidance) and not batch.x.requires_grad:
        batch = batch.with_x(batch.x.detach().requires_grad_(True))
    with ExitStack() as stack:
        for g in guidance:
            stack.enter_context(g.forward_context(model, batch))
        logits = model(batch.x)
    terms: dict[str, Tensor] = {}
    for g in guidance:
        for key, value in g.loss_terms(model, batch, logits).items():
            if key in terms:
                raise ValueError(f"Two guidance methods both produce the loss term {key!r}")
            terms[key] = value
    return logits, batch, terms
