"""A studio session: one run's model, its training pool, the feedback store and caches.

Everything the web app serves comes from here, addressed by pool index (an integer the
server checks against its own index of the run's training images), never by a path from the
client.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from rightfocus._registry import DATASETS, METHODS
from rightfocus.attribution import attribute
from rightfocus.bayes import is_bayesian
from rightfocus.bayes.inference import predict_probs
from rightfocus.data.splits import dataset_fold, dataset_labels
from rightfocus.engine.checkpoint import BEST, LAST, load_checkpoint
from rightfocus.engine.config import Config, load_config
from rightfocus.engine.datamodule import build_dataset
from rightfocus.engine.evaluate import layer_option
from rightfocus.engine.run import build_model
from rightfocus.feedback.store import FeedbackStore, image_sha256
from rightfocus.feedback.strategies import rank, score_pool
from rightfocus.metrics.uncertainty import explanation_uncertainty
from rightfocus.studio.render import to_display

__all__ = ["NotInPoolError", "StudioSession", "file_sha256"]


class NotInPoolError(LookupError):
    """The index is not one of the run's training images."""


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def pool_identity(config: Config) -> dict[str, Any]:
    """The config fields that fix the training pool (stored in ``store.json``)."""
    d = config.data
    options = {k: v for k, v in d.options.items() if k != "feedback_store"}
    return {
        "dataset": d.dataset,
        "variant": d.variant,
        "options": options,
        "root": d.root,
        "seed": d.seed,
        "image_size": d.image_size,
        "max_train": d.max_train,
    }


def _checkpoint(run_dir: Path, config: Config) -> Path:
    ckpt = run_dir / "checkpoints"
    order = (BEST, LAST) if config.evaluation.checkpoint == "best" else (LAST, BEST)
    for name in order:
        if (ckpt / name).is_file():
            return ckpt / name
    raise FileNotFoundError(
        f"Run {run_dir} has no checkpoint yet; train it first: "
        f"rightfocus train {run_dir}/config.yaml"
    )


def load_model(config: Config, checkpoint: Path) -> nn.Module:
    """The config's model with the checkpoint's weights (``weights_only`` loading)."""
    model = build_model(config)
    state = load_checkpoint(checkpoint)
    sd = state.get("state_dict", state)
    prefix = "model."
    if any(k.startswith(prefix) for k in sd):
        sd = {k[len(prefix) :]: v for k, v in sd.items() if k.startswith(prefix)}
    model.load_state_dict(sd)
    return model.eval()


class StudioSession:
    """Model, training pool, store and explanation cache of one run.

    Args:
        run_dir: a run folder (``config.yaml`` + checkpoints). config, checkpoint: instead of
            a run folder, a config file and a checkpoint file.
        store: the feedback store folder (default ``<run>/feedback``).
        who: recorded with every save (the annotator's name).
        max_candidates: the queue scores at most this many training images (seeded sample).
    """

    def __init__(
        self,
        run_dir: str | Path | None = None,
        *,
        config: str | Path | None = None,
        checkpoint: str | Path | None = None,
        store: str | Path | None = None,
        who: str = "",
        max_candidates: int = 4000,
        cache_size: int = 512,
        device: str = "cpu",
    ) -> None:
        if run_dir is not None:
            self.run_dir = Path(run_dir).resolve()
            cfg_file = self.run_dir / "config.yaml"
            if not cfg_file.is_file():
                raise FileNotFoundError(
                    f"{self.run_dir} is not a run folder (no config.yaml); pass a finished run, "
                    "or --config FILE --checkpoint FILE"
                )
            self.config = load_config(cfg_file)
            self.checkpoint = _checkpoint(self.run_dir, self.config)
        else:
            if config is None or checkpoint is None:
                raise ValueError("pass a run folder, or both --config and --checkpoint")
            self.config = load_config(config)
            self.checkpoint = Path(checkpoint).resolve()
            if not self.checkpoint.is_file():
                raise FileNotFoundError(f"checkpoint {self.checkpoint} does not exist")
            self.run_dir = self.config.run_dir.resolve()
        self.device = device
        self.model = load_model(self.config, self.checkpoint).to(device)
        self.checkpoint_sha256 = file_sha256(self.checkpoint)

        self.meta = DATASETS.metadata(self.config.data.dataset)
        self.bayesian = is_bayesian(self.model)
        base = self.config.model_copy(deep=True)
        base.data.options = {k: v for k, v in base.data.options.items() if k != "feedback_store"}
        self.pool = build_dataset(base, "train")
        n = len(self.pool)  # type: ignore[arg-type]
        d = self.config.data
        train_idx = (
            dataset_fold(self.pool, d.folds, d.fold, d.seed)[0] if d.folds > 1 else np.arange(n)
        )
        self.train_indices = np.sort(np.asarray(train_idx, dtype=np.int64))
        self._in_train = np.zeros(n, dtype=bool)
        self._in_train[self.train_indices] = True
        self.labels = np.asarray(dataset_labels(self.pool), dtype=np.int64)
        rng = np.random.default_rng(d.seed)
        cand = self.train_indices
        if len(cand) > max_candidates:
            cand = np.sort(rng.choice(cand, size=max_candidates, replace=False))
        self.candidates = cand
        self.store = FeedbackStore(
            store if store is not None else self.run_dir / "feedback", pool_identity(self.config)
        )
        self.who = who
        self._cache: OrderedDict[tuple[Any, ...], Any] = OrderedDict()
        self._cache_size = cache_size
        self._queues: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
        self._lock = threading.RLock()
        self.jobs: dict[str, Any] = {}

    # --- pool -------------------------------------------------------------------------------------

    @property
    def run_name(self) -> str:
        return f"{self.config.experiment}/{self.config.run}"

    def check_index(self, index: int) -> int:
        """``index`` if it is one of the run's training images, else :class:`NotInPoolError`."""
        i = int(index)
        if not (0 <= i < len(self._in_train)) or not self._in_train[i]:
            raise NotInPoolError(
                f"image {index} is not in this run's training pool (indices come from the queue)"
            )
        return i

    def item(self, index: int) -> tuple[Tensor, int, Tensor]:
        x, y, m = self.pool[self.check_index(index)][:3]
        return x, int(y), m

    def methods(self) -> list[str]:
        return METHODS.names()

    def method_options(self, method: str) -> dict[str, Any]:
        return layer_option(self.config, method)

    # --- predictions and explanations -------------------------------------------------------------

    def _cached(self, key: tuple[Any, ...], make: Any) -> Any:
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        value = make()
        with self._lock:
            self._cache[key] = value
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return value

    def predict(self, index: int) -> Tensor:
        """Class probabilities of image ``index`` (MC mean for Bayesian models)."""

        def make() -> Tensor:
            x = self.item(index)[0][None].to(self.device)
            with torch.random.fork_rng():
                torch.manual_seed(self.config.data.seed)
                return predict_probs(
                    self.model, x, self.bayesian, self.config.evaluation.mc_samples
                )[0].cpu()

        return self._cached(("probs", int(index)), make)

    def explanation(self, index: int, method: str, target: int | None = None) -> Tensor:
        """Attribution ``(C, H, W)`` of ``method`` for the predicted class (cached)."""
        METHODS.get(method)
        t = int(self.predict(index).argmax()) if target is None else int(target)

        def make() -> Tensor:
            x = self.item(index)[0][None].to(self.device)
            a = attribute(
                self.model, x, torch.tensor([t]), method=method, **self.method_options(method)
            )
            return a.detach()[0].cpu()

        return self._cached(("attr", int(index), method, t), make)

    def uncertainty_map(self, index: int, method: str = "saliency", samples: int = 16) -> Tensor:
        """Per-pixel std ``(C, H, W)`` of the attribution over posterior samples (Bayesian)."""
        if not self.bayesian:
            raise ValueError("The uncertainty map needs a Bayesian model (model.bayesian: true)")

        def make() -> Tensor:
            x = self.item(index)[0][None].to(self.device)
            eu = explanation_uncertainty(
                self.model,
                x,
                method=method,
                samples=samples,
                seed=self.config.data.seed,
                **self.method_options(method),
            )
            return eu.std[0].cpu()

        return self._cached(("unc", int(index), method, samples), make)

    def suggestion(self, index: int, method: str, quantile: float = 0.9) -> np.ndarray:
        """Thresholded explanation: 1 where ``sum_c |a|`` is above its ``quantile``."""
        if not 0.0 < quantile < 1.0:
            raise ValueError(f"quantile must be in (0, 1), got {quantile}")
        mag = self.explanation(index, method).abs().sum(0).numpy()
        thr = float(np.quantile(mag, quantile))
        return ((mag > thr) & (mag > 0)).astype(np.uint8)

    def superpixels(
        self, index: int, n_segments: int = 50, compactness: float = 10.0
    ) -> np.ndarray:
        """SLIC superpixels of the image (Achanta et al. 2012, "SLIC Superpixels Compared to
        State-of-the-Art Superpixel Methods"), int32 labels ``(H, W)`` from 0."""
        # heavy: scikit-image, only for superpixels
        from skimage.segmentation import slic

        def make() -> np.ndarray:
            img = to_display(self.item(index)[0], self.meta.get("normalization"))
            gray = int(self.meta.get("in_channels", 3)) == 1
            seg = slic(
                img[..., 0] if gray else img,
                n_segments=int(n_segments),
                compactness=float(compactness) if not gray else 0.1,
                start_label=0,
                channel_axis=None if gray else -1,
            )
            return seg.astype(np.int32)

        return self._cached(("slic", int(index), int(n_segments), float(compactness)), make)

    # --- queue ------------------------------------------------------------------------------------

    def queue(
        self,
        strategy: str,
        per_class: bool = False,
        k: int = 50,
        method: str = "saliency",
        method_b: str = "gradcam",
    ) -> list[dict[str, Any]]:
        """The ``k`` training images ``strategy`` ranks first (cached per settings)."""
        key = (strategy, per_class, method, method_b)
        with self._lock:
            ranked = self._queues.get(key)
        if ranked is None:
            t0 = time.perf_counter()

            def stored(i: int) -> Tensor | None:
                got = self.store.load(i)
                return None if got is None else torch.from_numpy(got[0].astype("float32"))[None]

            scores = score_pool(
                self.model,
                self.pool,
                self.candidates,
                strategy,
                method=method,
                method_b=method_b,
                options=self.method_options,
                masks=stored if self.store.indices() else None,
                mc_samples=min(self.config.evaluation.mc_samples, 8),
                seed=self.config.data.seed,
                device=self.device,
            )
            order = rank(
                scores, self.candidates, self.labels[self.candidates] if per_class else None
            )
            pos = {int(i): p for p, i in enumerate(self.candidates)}
            ranked = [
                {"index": int(i), "label": int(self.labels[i]), "score": float(scores[pos[i]])}
                for i in order
            ]
            with self._lock:
                self._queues[key] = ranked
            self.last_queue_seconds = time.perf_counter() - t0
        annotated = set(self.store.indices())
        return [dict(r, annotated=r["index"] in annotated) for r in ranked[: int(k)]]

    def image_info(self, index: int) -> dict[str, Any]:
        x, y, _ = self.item(index)
        probs = self.predict(index)
        loaded = self.store.load(index)
        right = self.store.load_right(index)
        return {
            "index": int(index),
            "label": y,
            "pred": int(probs.argmax()),
            "probs": [float(p) for p in probs],
            "height": int(x.shape[-2]),
            "width": int(x.shape[-1]),
            "version": 0 if loaded is None else loaded[1].version,
            "record": None if loaded is None else loaded[1].to_dict(),
            "mask": None if loaded is None else loaded[0],
            "right": right,
            "image_sha256": image_sha256(x),
        }
