"""The guidance contract: a method turns a batch ``(x, y, mask)`` and a model into loss terms.

A training step with guidance ``g_1 .. g_n`` (see :func:`guided_forward`):

1. ``batch = g.transform(batch)`` for each method (data-level changes, e.g. counterexamples);
2. the forward pass runs inside every ``g.forward_context(model, batch)`` (hooks that record
   layer moments or change activations; scoped by :mod:`rightfocus.hooks`), with
   ``x.requires_grad`` set when any method ``needs_input_grad``;
3. ``g.loss_terms(model, batch, logits)`` returns named terms, e.g. ``{"feedback": ...}``.

The caller adds the data terms (``nll``, and ``kl`` for Bayesian models) and sums everything.
Methods are small and composable: RRR on a Bayesian model is ``[BayesFeedback(), RRR()]``.

Methods that act between epochs instead of inside a step (Proxy Attention) use the optional
training-run hooks, which the engine calls for every configured method without knowing any by
name: :meth:`Guidance.check_config` (validate the whole experiment config),
:meth:`Guidance.wrap_train_dataset` (wrap the training set once),
:meth:`Guidance.callbacks` (Lightning callbacks to add to the trainer) and
:attr:`Guidance.reload_dataloaders` (the training set changes size between epochs).
A method is registered with :func:`register_guidance`; its registry metadata are read from
the class attributes, so they are stated once.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from torch import Tensor, nn
from torch.utils.data import Dataset

from rightfocus._registry import GUIDANCE

__all__ = [
    "CAPABILITIES",
    "Guidance",
    "GuidedBatch",
    "check_choice",
    "check_weights",
    "guided_forward",
    "register_guidance",
    "require_input_grad",
]

#: Capability class attributes copied into the registry metadata.
CAPABILITIES = ("requires_mask", "requires_bayesian", "needs_input_grad")


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

    Capabilities (class attributes, copied into the registry by :func:`register_guidance`):
    ``requires_mask`` (needs masks), ``requires_bayesian`` (needs LRT layers),
    ``needs_input_grad`` (the forward input must require grad, e.g. RRR).
    """

    name: ClassVar[str] = ""
    requires_mask: ClassVar[bool] = True
    requires_bayesian: ClassVar[bool] = False
    needs_input_grad: ClassVar[bool] = False

    def check(self, model: nn.Module) -> None:  # noqa: B027 - optional hook
        """Validate the model once before training; raise ``ValueError`` saying what to do."""

    def check_config(self, config: Mapping[str, Any]) -> None:  # noqa: B027 - optional hook
        """Validate the whole experiment config (its plain mapping form, e.g. ``optim.epochs``)
        before anything runs; raise ``ValueError`` naming the setting to change."""

    def wrap_train_dataset(self, dataset: Dataset[Any]) -> Dataset[Any]:
        """The training set this method trains on, made once from ``dataset`` (default: as is)."""
        return dataset

    def callbacks(self, run_dir: Path | None = None) -> list[Any]:
        """Lightning callbacks this method adds to the trainer (default: none).

        ``run_dir`` is the run folder (None outside a run), e.g. for figures.
        """
        return []

    @property
    def reload_dataloaders(self) -> bool:
        """True when the training set changes size between epochs, so the trainer must rebuild
        its dataloaders every epoch (default: False)."""
        return False

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


G = TypeVar("G", bound=type[Guidance])


def check_weights(**weights: float) -> None:
    """Refuse negative loss weights: ``check_weights(lam=lam)`` raises ``lam must be >= 0``."""
    for name, value in weights.items():
        if not float(value) >= 0:
            raise ValueError(f"{name} must be >= 0, got {value}")


def check_choice(value: Any, allowed: Sequence[Any], name: str) -> Any:
    """``value`` when it is one of ``allowed``; else ``{name} must be one of (...), got ...``."""
    if value not in allowed:
        raise ValueError(f"{name} must be one of {tuple(allowed)}, got {value!r}")
    return value


def require_input_grad(batch: GuidedBatch, method: str) -> None:
    """Methods that differentiate w.r.t. the input (``needs_input_grad``) refuse a batch whose
    ``x`` does not require grad, saying how to fix it."""
    if not batch.x.requires_grad:
        raise ValueError(
            f"{method} needs the forward input to require grad; run it through guided_forward "
            "(which sets x.requires_grad) or call x.requires_grad_() before the forward pass."
        )


def register_guidance(name: str) -> Callable[[G], G]:
    """Class decorator: register a :class:`Guidance` subclass under ``name``.

    Sets ``cls.name`` and records the first docstring line as ``summary`` and every capability
    of :data:`CAPABILITIES` from the class attributes.
    """

    def decorator(cls: G) -> G:
        if not (isinstance(cls, type) and issubclass(cls, Guidance)):
            raise TypeError(f"register_guidance needs a Guidance subclass, got {cls!r}")
        cls.name = name
        doc = (cls.__doc__ or "").strip().splitlines()
        meta = {cap: bool(getattr(cls, cap)) for cap in CAPABILITIES}
        GUIDANCE.register(name, summary=doc[0] if doc else "", **meta)(cls)
        return cls

    return decorator


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
