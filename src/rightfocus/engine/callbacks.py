"""Lightning callbacks contributed by guidance methods (``Guidance.callbacks``).

:class:`ProxyAttentionCallback` runs the proxy steps of a
:class:`~rightfocus.guidance.proxy_attention.ProxyAttention` guidance object (Mukherjee 2023,
"Proxy Attention: Comparing and Combining Augmentation with Attention") on its schedule.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import lightning.pytorch as pl

from rightfocus.guidance.proxy_attention import (
    ProxyAttention,
    ProxyDataset,
    ProxyStepResult,
    proxy_step,
)
from rightfocus.viz.proxy import proxy_figure

__all__ = ["ProxyAttentionCallback"]

log = logging.getLogger(__name__)


class ProxyAttentionCallback(pl.Callback):
    """Run ``guidance``'s proxy steps at the start of the epochs its schedule lists.

    The training set must be a :class:`ProxyDataset` exposed as
    ``trainer.datamodule.train_dataset`` (``ProxyAttention.wrap_train_dataset`` makes it);
    ``trainer.datamodule.normalization`` (None or ``(mean, std)``) un-normalises the images.
    Each step saves ``<figure_dir>/proxy_epoch<E>.png`` (originals over proxies; default
    folder ``<trainer.default_root_dir>/proxy_attention``) and logs ``proxy/n_wrong``,
    ``proxy/n_changed`` and ``proxy/images_per_s``. The proxies go into the checkpoint
    (``state_dict``, tensors only), so a resumed run keeps them; a step that a resumed run
    missed is run at the start of its first epoch.
    """

    def __init__(self, guidance: ProxyAttention, figure_dir: str | Path | None = None) -> None:
        self.guidance = guidance
        self.figure_dir = None if figure_dir is None else Path(figure_dir)
        self.steps_done: list[int] = []
        self.history: list[dict[str, float]] = []
        self.dataset: ProxyDataset | None = None
        self.normalization: Any = None
        self._pending: dict[str, Any] | None = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        g = self.guidance
        g.check_method()
        datamodule = getattr(trainer, "datamodule", None)
        dataset = getattr(datamodule, "train_dataset", None)
        if not isinstance(dataset, ProxyDataset):
            raise ValueError(
                "Proxy Attention needs trainer.datamodule.train_dataset to be a ProxyDataset; "
                "wrap the training set with ProxyAttention.wrap_train_dataset(dataset)"
            )
        if g.reload_dataloaders and getattr(trainer, "reload_dataloaders_every_n_epochs", 0) != 1:
            raise ValueError(
                "store='add' changes the training-set size after each proxy step; create the "
                "Trainer with reload_dataloaders_every_n_epochs=1, or use store='replace'"
            )
        self.dataset = dataset
        self.normalization = getattr(datamodule, "normalization", None)
        if self._pending is not None:
            self._apply_state(self._pending)

    def _due(self, epoch: int) -> bool:
        return any(e <= epoch and e not in self.steps_done for e in self.guidance.proxy_epochs)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self._due(trainer.current_epoch):
            return
        if self.dataset is None:
            raise RuntimeError("ProxyAttentionCallback.setup did not run before the first epoch")
        g = self.guidance
        model = getattr(pl_module, "model", pl_module)
        if g.clear == "after_step":
            self.dataset.clear()
        result = proxy_step(
            model,
            self.dataset,
            method=g.method,
            layer=g.layer,
            threshold=g.threshold,
            weight=g.weight,
            subset=g.subset,
            rule=g.rule,
            store=g.store,
            normalization=self.normalization,
            batch_size=g.batch_size,
            device=pl_module.device,
        )
        epoch = trainer.current_epoch
        self.steps_done.extend(e for e in g.proxy_epochs if e <= epoch and e not in self.steps_done)
        self._report(trainer, result, epoch)

    def _report(self, trainer: pl.Trainer, result: ProxyStepResult, epoch: int) -> None:
        stats = {
            "epoch": float(epoch),
            "n_wrong": float(result.n_wrong),
            "n_changed": float(result.indices.numel()),
            "images_per_s": float(result.images_per_second),
        }
        self.history.append(stats)
        if trainer.logger is not None:
            metrics = {f"proxy/{k}": v for k, v in stats.items() if k != "epoch"}
            trainer.logger.log_metrics(metrics, step=trainer.global_step)
        log.info("Proxy Attention step at epoch %d: %s", epoch, stats)
        n = self.guidance.figure_images
        if result.indices.numel() and n > 0 and trainer.is_global_zero:
            folder = self.figure_dir or Path(trainer.default_root_dir) / "proxy_attention"
            proxy_figure(
                result.originals01, result.proxies01, folder / f"proxy_epoch{epoch:03d}.png", n
            )

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.guidance.clear == "end" and self.dataset is not None:
            self.dataset.clear()

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"steps_done": list(self.steps_done), "history": list(self.history)}
        if self.dataset is not None:
            state["dataset"] = self.dataset.state_dict()
        elif self._pending is not None and "dataset" in self._pending:
            state["dataset"] = self._pending["dataset"]
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if self.dataset is None:
            self._pending = dict(state_dict)
        else:
            self._apply_state(state_dict)

    def _apply_state(self, state: dict[str, Any]) -> None:
        if self.dataset is None:
            raise RuntimeError("ProxyAttentionCallback: no dataset to restore the proxies into")
        self.steps_done = [int(e) for e in state.get("steps_done", [])]
        self.history = [dict(h) for h in state.get("history", [])]
        if "dataset" in state:
            self.dataset.load_state_dict(state["dataset"])
        self._pending = None
