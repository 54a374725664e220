"""The LightningModule: a model, its guidance terms and the metrics, trained as one sum of terms.

Training step for a batch ``(x, y, mask)``::

    logits, batch, terms = guided_forward(model, GuidedBatch(x, y, mask), guidance)
    data terms: Bayesian model -> bayes.elbo_terms(logits, y, model, num_batches)   (nll sum, kl)
                otherwise      -> {"nll": cross_entropy(logits, y, weight=class_weights)} (mean)
    loss = sum of all terms; each is logged as ``train/<name>``.

Validation predicts with MC averaging for Bayesian models (``mc_samples`` forward passes with
sampled weights, mean of the softmax probabilities) under a private, per-epoch seeded RNG, so it
neither changes nor depends on the training random stream; it logs ``val/loss`` (NLL) and every
classification metric as ``val/<name>`` (``val/acc`` = accuracy) for model selection.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rightfocus.bayes.inference import elbo_terms, predict_probs
from rightfocus.engine.checkpoint import rng_state, set_rng_state
from rightfocus.engine.config import OptimConfig
from rightfocus.guidance.base import Guidance, GuidedBatch, guided_forward
from rightfocus.metrics.classification import classification_report

__all__ = ["GuidedModule"]


class GuidedModule(pl.LightningModule):
    """Train ``model`` with the loss terms of ``guidance`` (see the module docstring).

    Args:
        model: the network (deterministic or with LRT Bayesian layers).
        guidance: guidance methods (empty: plain training).
        optim: optimiser and scheduler settings.
        bayesian: use the ELBO data terms and MC prediction.
        kl_weight: multiplies the ELBO's KL term (1.0: the plain ELBO).
        mc_samples: MC samples at validation (0: the mean network).
        class_weights: optional ``(K,)`` cross-entropy weights.
        seed: seeds the validation RNG (``seed + epoch``).
    """

    def __init__(
        self,
        model: nn.Module,
        guidance: Sequence[Guidance] = (),
        optim: OptimConfig | None = None,
        bayesian: bool = False,
        kl_weight: float = 1.0,
        mc_samples: int = 10,
        class_weights: Tensor | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.model = model
        self.guidance = list(guidance)
        self.optim = optim or OptimConfig()
        self.bayesian = bayesian
        self.kl_weight = float(kl_weight)
        self.mc_samples = mc_samples
        self.seed = seed
        self.register_buffer("class_weights", class_weights, persistent=False)
        self._val: list[tuple[Tensor, Tensor]] = []
        self._saved_rng: dict[str, Any] | None = None
        self._metric_fn: Any = None

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)  # type: ignore[no-any-return]

    def on_fit_start(self) -> None:
        for g in self.guidance:
            g.check(self.model)

    # --- training -------------------------------------------------------------------------------

    def data_terms(self, logits: Tensor, y: Tensor) -> dict[str, Tensor]:
        weight = cast(Tensor | None, self.class_weights)
        if self.bayesian:
            num_batches = max(1, int(self.trainer.num_training_batches))
            terms = elbo_terms(logits, y, self.model, num_batches, reduction="sum", weight=weight)
            if self.kl_weight != 1.0:
                terms["kl"] = terms["kl"] * self.kl_weight
            return terms
        return {"nll": F.cross_entropy(logits, y, weight=weight)}

    def training_step(self, batch: Sequence[Tensor], batch_idx: int) -> Tensor:
        x, y, mask = batch
        logits, gb, terms = guided_forward(
            self.model, GuidedBatch(x, y.long(), mask), self.guidance
        )
        terms = {**self.data_terms(logits, gb.y), **terms}
        loss = torch.stack([t.float() for t in terms.values()]).sum()
        if self._should_log():
            logs = {f"train/{k}": v.detach() for k, v in terms.items()}
            logs["train/loss"] = loss.detach()
            logs["train/acc"] = (logits.detach().argmax(-1) == gb.y).float().mean()
            self.log_dict(logs, on_step=True, on_epoch=False, batch_size=len(y))
        return loss

    def _should_log(self) -> bool:
        trainer = self._trainer
        if trainer is None or trainer.logger is None:
            return False
        every = int(getattr(trainer, "log_every_n_steps", 50) or 50)
        return (trainer.global_step + 1) % every == 0

    def configure_optimizers(self) -> Any:
        o = self.optim
        params = self.model.parameters()
        optimizer: torch.optim.Optimizer
        if o.optimizer == "sgd":
            optimizer = torch.optim.SGD(
                params, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay
            )
        elif o.optimizer == "adamw":
            optimizer = torch.optim.AdamW(params, lr=o.lr, weight_decay=o.weight_decay)
        else:
            optimizer = torch.optim.Adam(params, lr=o.lr, weight_decay=o.weight_decay)
        scheduler: Any
        if o.scheduler == "exponential":
            scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=o.gamma)
        elif o.scheduler == "step":
            scheduler = torch.optim.lr_scheduler.StepLR(optimizer, o.step_size, gamma=o.gamma)
        elif o.scheduler == "cosine":
            scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=o.epochs)
        else:
            return optimizer
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"},
        }

    # --- validation -----------------------------------------------------------------------------

    def on_validation_epoch_start(self) -> None:
        self._saved_rng = rng_state()
        torch.manual_seed(self.seed * 7919 + self.current_epoch)
        self._val = []

    def validation_step(self, batch: Sequence[Tensor], batch_idx: int) -> None:
        x, y = batch[0], batch[1]
        probs = predict_probs(self.model, x, self.bayesian, self.mc_samples)
        self._val.append((probs.float().cpu(), y.long().cpu()))

    def on_validation_epoch_end(self) -> None:
        if self._saved_rng is not None:
            set_rng_state(self._saved_rng)
            self._saved_rng = None
        if not self._val:
            return
        probs = torch.cat([p for p, _ in self._val])
        y = torch.cat([t for _, t in self._val])
        self._val = []
        metrics = classification_report(probs, y)
        logs = {f"val/{k}": float(v) for k, v in metrics.items()}
        logs["val/acc"] = float(metrics["accuracy"])
        logs["val/loss"] = float(metrics["nll"])
        self.log_dict(logs, on_step=False, on_epoch=True, sync_dist=True)

    # --- checkpoint state -----------------------------------------------------------------------

    def _guidance_generators(self) -> dict[str, torch.Generator]:
        """Private random generators of the guidance methods (e.g. seeded counterexample
        noise), keyed ``"<index>.<attribute>"``."""
        return {
            f"{i}.{name}": value
            for i, g in enumerate(self.guidance)
            for name, value in vars(g).items()
            if isinstance(value, torch.Generator)
        }

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["rightfocus_rng"] = rng_state()
        checkpoint["rightfocus_guidance_rng"] = {
            key: {"state": gen.get_state(), "device": str(gen.device)}
            for key, gen in self._guidance_generators().items()
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Restore the global RNGs and the guidance generators, so a resumed run draws the
        same random numbers as an uninterrupted one."""
        if "rightfocus_rng" in checkpoint:
            set_rng_state(checkpoint["rightfocus_rng"])
        for key, saved in checkpoint.get("rightfocus_guidance_rng", {}).items():
            index, name = key.split(".", 1)
            gen = torch.Generator(device=saved["device"])
            gen.set_state(saved["state"])
            setattr(self.guidance[int(index)], name, gen)
