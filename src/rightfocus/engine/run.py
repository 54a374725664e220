"""Runs on disk: train or resume an experiment, evaluate it, explain it.

A run folder ``<runs_dir>/<experiment>/<run>/`` holds::

    .lock                    held (OS file lock) by the one process training the run
    config.yaml              the resolved config (written first; a different config is refused
                             once the run has a checkpoint, else replaced)
    batch_size.json          the batch size found by ``batch_size: auto`` (reused on resume)
    checkpoints/last.ckpt    at epoch ends and ``trainer.checkpoint_every_n_steps`` steps after
                             the previous save
    checkpoints/best.ckpt    best validation ``evaluation.monitor`` (weights only)
    tensorboard/             every loss term and metric (TensorBoard events)
    timing.json              seconds spent inside training steps (engine.timing)
    test_predictions.pt      the test probabilities (N, K) and labels (N,) behind metrics.json
    metrics.json             final test metrics, a flat dict of floats (written last)
    figures/                 ``rightfocus explain`` grids, Proxy Attention figures

Every file is written atomically (temporary file + fsync + rename), so a process killed at any
moment (SIGKILL included) leaves only complete files plus, at worst, a hidden ``.*.tmp`` file
(or a batch-size search's ``.scale_batch_size_*.ckpt``) that the next start removes. Only one
process at a time may train a run folder (a second one is refused, naming the holder's PID).
Running the same config again resumes from ``last.ckpt`` (mid-epoch: the data order of an
epoch depends only on the seed and the epoch, the sampler skips the batches already trained,
and the RNG state is restored; ``last.ckpt`` is never written between an epoch's last batch and
its validation, so no resume skips validation, best-checkpoint selection or testing), so on
CPU with ``deterministic: true`` it ends with the same metrics as an uninterrupted run. A
finished run (``metrics.json`` present) is not retrained; its metrics are returned.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import logging
import os
import shutil
import signal
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.fabric.utilities.rank_zero import rank_zero_only
from lightning.pytorch.callbacks import ModelCheckpoint, RichProgressBar
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.tuner import Tuner
from torch import nn

import rightfocus.data
import rightfocus.guidance
import rightfocus.models  # noqa: F401  (the three register the datasets, guidance, models)
from rightfocus._io import (
    LockHeldError,
    atomic_path,
    atomic_write_json,
    atomic_write_text,
    exclusive_lock,
)
from rightfocus._registry import DATASETS, GUIDANCE, METHODS, MODELS
from rightfocus.attribution import attribute
from rightfocus.attribution.outputs import with_output
from rightfocus.bayes import to_bayesian
from rightfocus.engine.checkpoint import (
    BEST,
    LAST,
    AtomicCheckpointIO,
    CheckpointError,
    ResumeCheckpoint,
    check_model_state,
    check_resume_checkpoint,
    load_checkpoint,
    remove_stale_temp_files,
)
from rightfocus.engine.config import Config, ConfigError, config_diff, load_config, parse_yaml
from rightfocus.engine.datamodule import ExperimentData
from rightfocus.engine.evaluate import evaluate_predictions, layer_option
from rightfocus.engine.module import GuidedModule
from rightfocus.engine.timing import TIMING_FILE, StepTimer
from rightfocus.engine.validate import validate_experiment, weights_file
from rightfocus.guidance.base import Guidance
from rightfocus.models.xdnn import to_xdnn
from rightfocus.models.zoo import load_weights_file

__all__ = [
    "RunConflictError",
    "RunInterrupted",
    "RunLockedError",
    "build_guidance",
    "build_model",
    "evaluate_run",
    "explain_run",
    "load_run",
    "prepare_run_dir",
    "run_experiment",
]

CONFIG_FILE, METRICS_FILE, BATCH_FILE = "config.yaml", "metrics.json", "batch_size.json"
PREDICTIONS_FILE = "test_predictions.pt"
LOCK_FILE = ".lock"
_TUNER_GLOB = ".scale_batch_size_*.ckpt"  # Lightning's batch-size search checkpoints
# keys that may differ when a run is resumed (they do not change the results)
_OPERATIONAL = ("runs_dir", "trainer.progress_bar", "data.num_workers", "evaluation.batch_size")


class RunConflictError(ValueError):
    """The run folder belongs to a different config."""


class RunLockedError(RunConflictError):
    """Another live process is training in the run folder."""


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped a run; the message says how to resume it."""


def _rank() -> int:
    """This process's global rank: Lightning's public ``rank_zero_only.rank`` (read from the
    launcher's ``RANK`` / ``LOCAL_RANK`` / ``SLURM_PROCID`` variables at import, then set by the
    Trainer's strategy), 0 in a single process."""
    return int(getattr(rank_zero_only, "rank", 0) or 0)


def _comparable(d: dict[str, Any]) -> dict[str, Any]:
    out = json.loads(json.dumps(d))
    for key in _OPERATIONAL:
        node = out
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.get(p, {})
        node.pop(leaf, None)
    return out


def _has_trained(run_dir: Path) -> bool:
    """Whether the run saved anything that depends on its config (a checkpoint, metrics)."""
    ckpts = run_dir / "checkpoints"
    return (run_dir / METRICS_FILE).is_file() or (
        ckpts.is_dir() and any(p.suffix == ".ckpt" for p in ckpts.iterdir())
    )


def prepare_run_dir(config: Config) -> Path:
    """Create the run folder with ``config.yaml``, or check that an existing one matches.

    A folder whose run never saved a checkpoint (it failed during set-up or was stopped before
    its first checkpoint) does not pin its config: the new config replaces it (and the
    batch size and TensorBoard events of the old one are removed). Call it while holding the
    run's lock (:func:`run_experiment` does): it removes the temporary files killed writers
    left behind.

    Raises:
        RunConflictError: the folder holds a trained run of another config (the differing keys
            are listed); it is never overwritten.
    """
    run_dir = config.run_dir
    cfg_file = run_dir / CONFIG_FILE
    write = not cfg_file.is_file()
    if not write:
        old = parse_yaml(cfg_file.read_text(), str(cfg_file)) or {}
        diff = config_diff(_comparable(old), _comparable(config.to_dict()))
        if diff and _has_trained(run_dir):
            raise RunConflictError(
                f"Run folder {run_dir} was created by a different config; refusing to overwrite "
                f"it. Differences (saved -> new): {'; '.join(diff[:10])}. Choose another run name "
                f"(--set run=NAME) or experiment, or delete the folder (rm -r {run_dir}) to start "
                "over."
            )
        if diff and _rank() == 0:
            warnings.warn(
                f"Run folder {run_dir} held a config that never trained (no checkpoint); "
                f"replacing it ({'; '.join(diff[:10])})",
                stacklevel=2,
            )
            (run_dir / BATCH_FILE).unlink(missing_ok=True)
            shutil.rmtree(run_dir / "tensorboard", ignore_errors=True)
        write = bool(diff)
    if write and _rank() == 0:
        atomic_write_text(cfg_file, config.to_yaml())
    if _rank() == 0:
        remove_stale_temp_files(run_dir)
        for leftover in run_dir.glob(_TUNER_GLOB):
            leftover.unlink(missing_ok=True)
    return run_dir


@contextlib.contextmanager
def _run_lock(run_dir: Path) -> Iterator[None]:
    """The run folder's exclusive lock (rank 0 only: DDP workers run under their launcher's)."""
    if _rank() != 0:
        yield
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    lock = exclusive_lock(run_dir / LOCK_FILE)
    try:
        lock.__enter__()
    except LockHeldError as err:
        who = f"process {err.pid}" if err.pid is not None else "another process"
        raise RunLockedError(
            f"Run folder {run_dir} is in use by {who} (lock {err.path}). Wait for it to finish "
            "or stop it, then run the same command again (it resumes); or choose another run "
            "name with --set run=NAME."
        ) from None
    try:
        yield
    finally:
        lock.__exit__(None, None, None)


@contextlib.contextmanager
def _torch_flags_restored() -> Iterator[None]:
    """Undo what ``Trainer(deterministic=...)`` sets process-wide once the run is over."""
    det = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    cudnn = (torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic)
    cublas = os.environ.get("CUBLAS_WORKSPACE_CONFIG")
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(det, warn_only=warn_only)
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = cudnn
        if cublas is None:
            os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)
        else:
            os.environ["CUBLAS_WORKSPACE_CONFIG"] = cublas


# --- building blocks ------------------------------------------------------------------------------


def build_model(config: Config) -> nn.Module:
    """The configured model: zoo factory, weights file, X-DNN and Bayesian conversions, and the
    ``model.output`` selector (:func:`rightfocus.attribution.outputs.with_output`)."""
    meta = DATASETS.metadata(config.data.dataset)
    m = config.model
    factory = MODELS.get(m.name)
    kwargs: dict[str, Any] = {
        "num_classes": meta["num_classes"],
        "in_channels": meta["in_channels"],
        "image_size": config.data.image_size or meta["image_size"],
        **m.options,
    }
    weights = weights_file(config)  # None: random init (unset, or `random` on purpose)
    takes_weights = "weights" in inspect.signature(factory).parameters
    if weights is not None and takes_weights:
        kwargs["weights"] = weights
    model: nn.Module = factory(**kwargs)
    if weights is not None and not takes_weights:
        load_weights_file(model, weights)
    if m.xdnn:
        model = to_xdnn(model)
    if m.bayesian:
        model = to_bayesian(model, rho_init=m.rho_init, prior_sigma=m.prior_sigma)
    # the model returns the selected logits tensor everywhere (training, guidance, metrics,
    # MC prediction, the studio); state_dict keys are unchanged
    return with_output(model, m.output)


def build_guidance(config: Config) -> list[Guidance]:
    """Guidance objects from ``config.guidance``; dataset defaults fill ``pool`` (Bayesian
    feedback's mask resizing) and ``normalization`` (counterexample noise) when not given."""
    meta = DATASETS.metadata(config.data.dataset)
    out = []
    for spec in config.guidance:
        cls = GUIDANCE.get(spec.name)
        params = spec.params
        accepted = inspect.signature(cls.__init__).parameters
        if "pool" in accepted and "pool" not in params and meta.get("mask_pool"):
            params["pool"] = meta["mask_pool"]
        if "normalization" in accepted and "normalization" not in params:
            params["normalization"] = meta.get("normalization")
        out.append(cls(**params))
    return out


def _callbacks(
    config: Config, run_dir: Path, has_val: bool, quiet: bool, guidance: Sequence[Guidance] = ()
) -> list[pl.Callback]:
    ckpt_dir = run_dir / "checkpoints"
    callbacks: list[pl.Callback] = [StepTimer()]
    if has_val:
        monitor = config.evaluation.monitor
        callbacks.append(
            ModelCheckpoint(
                dirpath=ckpt_dir,
                filename=BEST.removesuffix(".ckpt"),
                monitor=monitor,
                mode="min" if monitor == "val/loss" else "max",
                save_top_k=1,
                save_weights_only=True,  # only its weights are read; resumes use last.ckpt
                auto_insert_metric_name=False,
                enable_version_counter=False,
                save_on_train_epoch_end=False,
            )
        )
    callbacks.append(ResumeCheckpoint(ckpt_dir, config.trainer.checkpoint_every_n_steps))
    for g in guidance:  # callbacks a guidance method contributes (e.g. Proxy Attention)
        callbacks.extend(g.callbacks(run_dir))
    if config.trainer.progress_bar and not quiet:
        callbacks.append(RichProgressBar(leave=True))
    return callbacks


class _Logger(TensorBoardLogger):
    """TensorBoard events only: config.yaml already holds the hyperparameters."""

    def save(self) -> None:
        if self._experiment is not None:
            self._experiment.flush()


def _logger(run_dir: Path) -> Any:
    return _Logger(save_dir=str(run_dir), name="tensorboard", version="", default_hp_metric=False)


def build_trainer(
    config: Config,
    run_dir: Path,
    has_val: bool,
    quiet: bool = False,
    logger: bool = True,
    guidance: Sequence[Guidance] = (),
) -> pl.Trainer:
    """A Lightning Trainer for the config: atomic checkpoints, TensorBoard, resumable data,
    the callbacks of the ``guidance`` methods (dataloaders rebuilt every epoch when one of them
    changes the training-set size)."""
    t = config.trainer
    reload = any(g.reload_dataloaders for g in guidance)
    return pl.Trainer(
        max_epochs=config.optim.epochs,
        accelerator=t.accelerator,
        devices=t.devices,
        strategy=t.strategy,
        precision=t.precision,  # type: ignore[arg-type]
        deterministic=t.deterministic,
        logger=_logger(run_dir) if logger else False,
        callbacks=_callbacks(config, run_dir, has_val, quiet, guidance),
        plugins=[AtomicCheckpointIO()],
        default_root_dir=str(run_dir),
        enable_progress_bar=t.progress_bar and not quiet,
        enable_model_summary=not quiet,
        num_sanity_val_steps=0,
        log_every_n_steps=t.log_every_n_steps,
        check_val_every_n_epoch=t.val_every_n_epochs,
        use_distributed_sampler=False,
        enable_checkpointing=has_val,  # else Lightning adds its own per-epoch ModelCheckpoint
        gradient_clip_val=t.gradient_clip_val,
        reload_dataloaders_every_n_epochs=1 if reload else 0,
    )


@contextlib.contextmanager
def _quiet(enabled: bool) -> Iterator[None]:
    """Silence Lightning's info logs and advisory warnings (for many runs in a row)."""
    if not enabled:
        yield
        return
    names = ("lightning.pytorch", "lightning.fabric", "lightning")
    levels = {n: logging.getLogger(n).level for n in names}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", module="lightning")
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        for n in names:
            logging.getLogger(n).setLevel(logging.WARNING)
        try:
            yield
        finally:
            for n, level in levels.items():
                logging.getLogger(n).setLevel(level)


# --- train ---------------------------------------------------------------------------------


def _batch_size(config: Config, run_dir: Path, module: GuidedModule, dm: ExperimentData) -> int:
    """``data.batch_size``, or for ``auto`` the Lightning tuner's choice (saved for resumes)."""
    if isinstance(config.data.batch_size, int):
        return config.data.batch_size
    saved = run_dir / BATCH_FILE
    if saved.is_file():
        return int(json.loads(saved.read_text())["batch_size"])
    tuner_trainer = pl.Trainer(
        max_epochs=1,
        accelerator=config.trainer.accelerator,
        devices=1,
        precision=config.trainer.precision,  # type: ignore[arg-type]
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        plugins=[AtomicCheckpointIO()],
        default_root_dir=str(run_dir),
        num_sanity_val_steps=0,
        use_distributed_sampler=False,
    )
    dm.batch_size = 32
    n = len(dm.train_dataset)  # type: ignore[arg-type]
    trials = max(1, min(8, (max(n, 64) // 32).bit_length()))
    try:
        found = Tuner(tuner_trainer).scale_batch_size(
            module, datamodule=dm, mode="power", steps_per_trial=2, max_trials=trials
        )
    finally:  # the search's own checkpoint, also when it fails (after a kill: the next start)
        for leftover in run_dir.glob(_TUNER_GLOB):
            leftover.unlink(missing_ok=True)
    size = max(1, min(int(found or 32), n))
    atomic_write_json(saved, {"batch_size": size})
    return size


def run_experiment(config: Config, quiet: bool = False) -> dict[str, float]:
    """Train (or resume) the configured run, then test it; returns the final test metrics.

    The run folder is ``config.run_dir``. A finished run is not retrained. Under DDP the
    processes other than rank 0 return ``{}`` after training.

    The process holds the run folder's lock throughout; process-wide torch flags the Trainer
    sets (``deterministic``) are restored afterwards.

    Raises:
        RunConflictError: the run folder belongs to another config.
        RunLockedError: another process is training in the run folder.
        CheckpointError: ``last.ckpt`` is corrupt, carries pickled code or belongs to another
            model.
        RunInterrupted: Ctrl-C (the message says that the same command resumes).
    """
    if config.data.batch_size == "auto" and config.trainer.devices not in (1,):
        raise ConfigError("data.batch_size: auto needs trainer.devices: 1 (tune, then set it)")
    validate_experiment(config)  # user mistakes stop here, before anything is written
    sigint = signal.getsignal(signal.SIGINT)
    with _run_lock(config.run_dir), _torch_flags_restored():
        try:
            return _train_and_test(config, quiet)
        except KeyboardInterrupt:
            if sigint is not None and signal.getsignal(signal.SIGINT) != sigint:
                with contextlib.suppress(ValueError):  # not the main thread
                    signal.signal(signal.SIGINT, sigint)  # Lightning left Ctrl-C ignored
            raise RunInterrupted(
                f"Interrupted. Run the same command again to resume {config.run_dir} from its "
                "last checkpoint."
            ) from None


def _train_and_test(config: Config, quiet: bool) -> dict[str, float]:
    run_dir = prepare_run_dir(config)
    metrics_file = run_dir / METRICS_FILE
    if metrics_file.is_file():  # null = undefined metric (NaN)
        saved = json.loads(metrics_file.read_text()).items()
        return {k: float("nan") if v is None else float(v) for k, v in saved}
    with _quiet(quiet):
        pl.seed_everything(config.data.seed, workers=True, verbose=False)
        guidance = build_guidance(config)
        dm = ExperimentData(config, guidance=guidance)
        dm.setup("fit")
        model = build_model(config)
        meta_classes = dm.meta["num_classes"]
        module = GuidedModule(
            model,
            guidance,
            optim=config.optim,
            bayesian=config.model.bayesian,
            kl_weight=config.model.kl_weight,
            mc_samples=(
                config.evaluation.mc_samples
                if config.evaluation.val_mc_samples is None
                else config.evaluation.val_mc_samples
            ),
            class_weights=dm.class_weights(meta_classes),
            seed=config.data.seed,
        )
        has_val = dm.val_dataset is not None
        last = run_dir / "checkpoints" / LAST
        dm.batch_size = _batch_size(config, run_dir, module, dm)
        if last.is_file():
            check_resume_checkpoint(last, module.state_dict())
        trainer = build_trainer(config, run_dir, has_val, quiet, guidance=guidance)
        try:
            trainer.fit(
                module, datamodule=dm, ckpt_path=last if last.is_file() else None, weights_only=True
            )
        except SystemExit:  # Lightning turns Ctrl-C into sys.exit(1) after its clean-up
            if trainer.interrupted:
                raise KeyboardInterrupt from None
            raise
        if trainer.interrupted:
            raise KeyboardInterrupt
        if not trainer.is_global_zero:
            return {}
        _load_selected(module.model, run_dir, config)
        dm.setup("test")
        device = trainer.strategy.root_device
        metrics = _evaluate(module.model, dm, config, device, run_dir)
        timer = next(c for c in trainer.callbacks if isinstance(c, StepTimer))  # type: ignore[attr-defined]
        atomic_write_json(
            run_dir / TIMING_FILE,
            {"train_step_seconds": timer.train_step_seconds, "train_steps": timer.steps},
        )
    atomic_write_json(metrics_file, metrics)
    return metrics


def _checkpoint_file(run_dir: Path, config: Config) -> Path:
    ckpt_dir = run_dir / "checkpoints"
    best, last = ckpt_dir / BEST, ckpt_dir / LAST
    if config.evaluation.checkpoint == "best" and best.is_file():
        return best
    if last.is_file():
        return last
    raise FileNotFoundError(
        f"Run {run_dir} has no checkpoint ({best.name} or {last.name}); train it first with "
        f"`rightfocus train {run_dir / CONFIG_FILE}`"
    )


def _load_selected(model: nn.Module, run_dir: Path, config: Config) -> Path:
    path = _checkpoint_file(run_dir, config)
    state = load_checkpoint(path).get("state_dict")
    if not isinstance(state, dict):
        raise CheckpointError(f"Checkpoint {path} has no state_dict; delete it to retrain")
    prefix = "model."
    weights = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    check_model_state(model.state_dict(), weights, path)
    model.load_state_dict(weights)
    return path


def _evaluate(
    model: nn.Module,
    dm: ExperimentData,
    config: Config,
    device: torch.device | str,
    run_dir: Path,
) -> dict[str, float]:
    """Test metrics; the probabilities and labels they came from go to ``test_predictions.pt``."""
    assert dm.test_dataset is not None
    model.eval()
    metrics, probs, labels = evaluate_predictions(model, dm.test_dataloader(), config, device)
    _save_predictions(run_dir, probs, labels)
    return metrics


def _save_predictions(run_dir: Path, probs: torch.Tensor, labels: torch.Tensor) -> None:
    with atomic_path(run_dir / PREDICTIONS_FILE) as tmp:
        torch.save({"probs": probs.float().cpu(), "labels": labels.long().cpu()}, tmp)


def load_test_predictions(run_dir: str | Path) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The test probabilities ``(N, K)`` and labels ``(N,)`` behind a run's ``metrics.json``
    (None when the run has not saved them, e.g. it is not finished)."""
    path = Path(run_dir) / PREDICTIONS_FILE
    if not (path.is_file() and (Path(run_dir) / METRICS_FILE).is_file()):
        return None
    saved = load_checkpoint(path)
    probs, labels = saved.get("probs"), saved.get("labels")
    if not isinstance(probs, torch.Tensor) or not isinstance(labels, torch.Tensor):
        raise CheckpointError(f"{path} holds no probs / labels tensors; delete it")
    return probs, labels


# --- evaluate and explain existing runs -----------------------------------------------------


def load_run(run_dir: str | Path) -> tuple[Config, nn.Module]:
    """A run's config and its model with the selected (best, else last) checkpoint's weights."""
    run_dir = Path(run_dir)
    cfg_file = run_dir / CONFIG_FILE
    if not cfg_file.is_file():
        raise FileNotFoundError(f"{run_dir} is not a run folder: it has no {CONFIG_FILE}")
    config = load_config(cfg_file)
    model = build_model(config)
    _load_selected(model, run_dir, config)
    return config, model.eval()


def evaluate_run(run_dir: str | Path, split: str = "test") -> dict[str, float]:
    """Recompute a run's metrics on ``split`` ("test" or "val") and write them
    (``metrics.json`` for test, ``metrics_val.json`` for val).

    Raises:
        RunLockedError: a process is training the run (its metrics would be overwritten).
    """
    if split not in ("test", "val"):
        raise ValueError(f"split must be 'test' or 'val', got {split!r}")
    run_dir = Path(run_dir)
    config, model = load_run(run_dir)
    dm = ExperimentData(config)
    with _run_lock(run_dir):
        if split == "test":
            dm.setup("test")
            loader = dm.test_dataloader()
        else:
            dm.setup("fit")
            if dm.val_dataset is None:
                raise ValueError("This run has no validation split (data.folds is 1)")
            loader = dm.eval_loader(dm.val_dataset)
        metrics, probs, labels = evaluate_predictions(model, loader, config)
        if split == "test":
            _save_predictions(run_dir, probs, labels)
        name = METRICS_FILE if split == "test" else f"metrics_{split}.json"
        atomic_write_json(run_dir / name, metrics)
    return metrics


def explain_run(
    run_dir: str | Path,
    methods: Sequence[str] = ("gradcam",),
    n: int = 16,
    split: str = "test",
    out: str | Path | None = None,
) -> Path:
    """Write a PNG grid (image with mask outline | one attribution per method) for the first
    ``n`` samples of ``split``; default ``<run>/figures/explain_<methods>.png``."""
    from rightfocus.viz import attribution_grid  # heavy: matplotlib, only when drawing

    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    for m in methods:
        METHODS.get(m)
    run_dir = Path(run_dir)
    config, model = load_run(run_dir)
    dm = ExperimentData(config)
    dm.setup("test" if split == "test" else "fit")
    dataset = dm.test_dataset if split == "test" else dm.val_dataset
    if dataset is None:
        raise ValueError(f"This run has no {split} split")
    x, y, mask = next(iter(dm.eval_loader(dataset, batch_size=n)))[:3]
    preds = model(x).argmax(-1)
    attributions = {}
    for m in methods:
        options = layer_option(config, m)
        attributions[m] = attribute(model, x, preds, method=m, **options).detach()
    titles = [f"y={int(a)} pred={int(b)}" for a, b in zip(y, preds, strict=True)]
    path = Path(out) if out else run_dir / "figures" / f"explain_{'+'.join(methods)}.png"
    return attribution_grid(x, attributions, path, masks=mask, titles=titles)
