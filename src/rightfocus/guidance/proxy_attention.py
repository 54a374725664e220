"""Proxy Attention: CAM-guided re-weighting of misclassified training images.

Mukherjee 2023, "Proxy Attention: Comparing and Combining Augmentation with Attention"
(thesis, REFERENCE.md §4). During a proxy step the misclassified training images are collected;
for the first ``ceil(subset * N_wrong)`` of them a CAM of the predicted class is computed,
min-max normalised to [0, 1] and resized to the input; the image is un-normalised to [0, 1] and

    ``proxy = where(cam > threshold, (1 - weight * cam) * image, image)``     (rule ``"blend"``)

down-weights the pixels that led to the wrong prediction. The proxies replace (or join) the
originals in the following epochs. The pure functions (:func:`blend_proxy`,
:func:`select_misclassified`, :func:`schedule_epochs`, :func:`proxy_step`) and the training-set
wrapper :class:`ProxyDataset` live in ``_proxy.py`` and are re-exported here; this module adds
the Lightning callback :class:`ProxyAttention`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as pl

from rightfocus._registry import METHODS
from rightfocus.guidance._proxy import (
    CLEAR_POLICIES,
    PROXY_RULES,
    STORE_POLICIES,
    Normalization,
    ProxyDataset,
    ProxyStepResult,
    blend_proxy,
    find_misclassified,
    make_proxies,
    proxy_step,
    save_proxy_figure,
    schedule_epochs,
    select_misclassified,
)

__all__ = [
    "PROXY_RULES",
    "ProxyAttention",
    "ProxyDataset",
    "ProxyStepResult",
    "blend_proxy",
    "find_misclassified",
    "make_proxies",
    "proxy_step",
    "save_proxy_figure",
    "schedule_epochs",
    "select_misclassified",
]

log = logging.getLogger(__name__)


class ProxyAttention(pl.Callback):
    """Lightning callback running Proxy Attention steps on a schedule.

    Mukherjee 2023 (thesis, REFERENCE.md §4). At the start of every epoch listed by
    :func:`schedule_epochs` it runs :func:`proxy_step` on the training set, which must be a
    :class:`ProxyDataset` exposed as ``trainer.datamodule.train_dataset`` (the engine wraps it
    when the config has a ``proxy_attention:`` block); ``trainer.datamodule.normalization``
    (None or ``(mean, std)``) un-normalises the images. Each step saves a figure of originals vs
    proxies (``<figure_dir>/proxy_epoch<E>.png``) and logs ``proxy/n_wrong``,
    ``proxy/n_changed`` and ``proxy/images_per_s``. The proxies go into the checkpoint
    (``state_dict``), so a resumed run keeps them; a step that a resumed run missed is run at
    the start of its first epoch.

    Args:
        schedule: e.g. ``[5, "p", 9, "p", 9, "p", 9, "p", 4]`` (the trainer's ``max_epochs``
            should be ``total_epochs``).
        method: a CAM from the attribution registry (default Grad-CAM++).
        layer: CAM target layer (dotted name in the model); default its last conv.
        threshold: CAM level above which pixels change (0.85). weight: blend weight (0.1).
        subset: fraction of the misclassified images that get a proxy (0.2).
        rule: ``"blend"``, ``"mean"``, ``"min"`` or ``"max"`` (:func:`blend_proxy`).
        store: ``"replace"`` the originals or ``"add"`` proxies as extra samples (needs
            ``Trainer(reload_dataloaders_every_n_epochs=1)`` so the loader sees the new size).
        clear: ``"after_step"`` (each step discards the previous step's proxies) or ``"end"``
            (proxies accumulate and are cleared when fitting ends).
        batch_size: batch size of the proxy step. figure_dir: where figures go (default
            ``<trainer.default_root_dir>/proxy_attention``); figure_images: images per figure.
    """

    def __init__(
        self,
        *,
        schedule: Sequence[int | str] = (5, "p", 9, "p", 9, "p", 9, "p", 4),
        method: str = "gradcam_plus_plus",
        layer: str | None = None,
        threshold: float = 0.85,
        weight: float = 0.1,
        subset: float = 0.2,
        rule: str = "blend",
        store: str = "replace",
        clear: str = "end",
        batch_size: int = 128,
        figure_dir: str | Path | None = None,
        figure_images: int = 8,
    ) -> None:
        self.total_epochs, self.proxy_epochs = schedule_epochs(list(schedule))
        for value, allowed, what in (
            (rule, PROXY_RULES, "rule"),
            (store, STORE_POLICIES, "store"),
            (clear, CLEAR_POLICIES, "clear"),
        ):
            if value not in allowed:
                raise ValueError(f"{what} must be one of {allowed}, got {value!r}")
        if not 0.0 < subset <= 1.0:
            raise ValueError(f"subset must be in (0, 1], got {subset}")
        if not 0.0 <= threshold < 1.0:
            raise ValueError(
                f"threshold must be in [0, 1) (CAMs are min-max normalised), got {threshold}"
            )
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.schedule = list(schedule)
        self.method, self.layer, self.rule = method, layer, rule
        self.threshold, self.weight, self.subset = float(threshold), float(weight), float(subset)
        self.store, self.clear, self.batch_size = store, clear, int(batch_size)
        self.figure_dir = None if figure_dir is None else Path(figure_dir)
        self.figure_images = int(figure_images)
        self.steps_done: list[int] = []
        self.history: list[dict[str, float]] = []
        self.dataset: ProxyDataset | None = None
        self.normalization: Normalization = None
        self._pending: dict[str, Any] | None = None

    def _check_method(self) -> None:
        if self.method not in METHODS:
            cams = [n for n, _ in METHODS.items() if METHODS.metadata(n).get("output") == "map"]
            raise ValueError(
                f"Proxy Attention method {self.method!r} is not a registered attribution method; "
                f"CAM methods available: {', '.join(cams) or '(none)'}"
            )
        if METHODS.metadata(self.method).get("output") != "map":
            raise ValueError(f"Proxy Attention needs a CAM (a map method), not {self.method!r}")

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        self._check_method()
        datamodule = getattr(trainer, "datamodule", None)
        dataset = getattr(datamodule, "train_dataset", None)
        if not isinstance(dataset, ProxyDataset):
            raise ValueError(
                "ProxyAttention needs trainer.datamodule.train_dataset to be a ProxyDataset; wrap "
                "the training set with rightfocus.guidance.proxy_attention.ProxyDataset(base)"
            )
        if self.store == "add" and getattr(trainer, "reload_dataloaders_every_n_epochs", 0) != 1:
            raise ValueError(
                "store='add' changes the training-set size after each proxy step; create the "
                "Trainer with reload_dataloaders_every_n_epochs=1, or use store='replace'"
            )
        self.dataset = dataset
        self.normalization = getattr(datamodule, "normalization", None)
        if self._pending is not None:
            self._apply_state(self._pending)

    def _due(self, epoch: int) -> bool:
        return any(e <= epoch and e not in self.steps_done for e in self.proxy_epochs)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self._due(trainer.current_epoch):
            return
        assert self.dataset is not None, "ProxyAttention.setup did not run"
        model = getattr(pl_module, "model", pl_module)
        if self.clear == "after_step":
            self.dataset.clear()
        result = proxy_step(
            model,
            self.dataset,
            method=self.method,
            layer=self.layer,
            threshold=self.threshold,
            weight=self.weight,
            subset=self.subset,
            rule=self.rule,
            store=self.store,
            normalization=self.normalization,
            batch_size=self.batch_size,
            device=pl_module.device,
        )
        epoch = trainer.current_epoch
        self.steps_done.extend(
            e for e in self.proxy_epochs if e <= epoch and e not in self.steps_done
        )
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
        if result.indices.numel() and self.figure_images > 0 and trainer.is_global_zero:
            folder = self.figure_dir or Path(trainer.default_root_dir) / "proxy_attention"
            save_proxy_figure(
                result.originals01,
                result.proxies01,
                folder / f"proxy_epoch{epoch:03d}.png",
                self.figure_images,
            )

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.clear == "end" and self.dataset is not None:
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
        assert self.dataset is not None
        self.steps_done = [int(e) for e in state.get("steps_done", [])]
        self.history = [dict(h) for h in state.get("history", [])]
        if "dataset" in state:
            self.dataset.load_state_dict(state["dataset"])
        self._pending = None
