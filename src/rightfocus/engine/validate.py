"""Checks made before a run starts, so a user mistake stops it before anything is written.

:func:`validate_experiment` is called by :func:`rightfocus.engine.run.run_experiment` before
the run folder is created. It checks what the config schema alone cannot: that the runs folder
can be written, that the requested accelerator exists, that ``data.root`` is a readable folder,
that ``data.options`` / ``model.options`` are parameters the dataset / model accept, that there
are enough samples for ``data.folds``, that the model's number of classes matches the data (and
that folder datasets say how many they have), that a list of ``data.class_weights`` has one
finite, non-negative weight per class, and that the attribution used for ``overlap`` fits the
model (CAMs need a convolution layer), and that a model whose paper experiments start from
ImageNet weights (registered with ``imagenet_init=True``, e.g. AlexNet) is not silently trained
from a random init: it needs ``model.weights=<file>``, or ``model.weights=random`` on purpose.
Every failure is a :class:`~rightfocus.errors.UserError`
naming the config field and what to do.
"""

from __future__ import annotations

import inspect
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

import rightfocus.attribution
import rightfocus.data
import rightfocus.models  # noqa: F401  (the three register the methods, datasets and models)
from rightfocus._modules import resolve_layer
from rightfocus._registry import DATASETS, METHODS, MODELS
from rightfocus.engine.config import Config, _hint
from rightfocus.errors import UserError

__all__ = [
    "RANDOM_INIT",
    "check_device",
    "check_methods",
    "check_weights",
    "check_writable",
    "dataset_classes",
    "validate_experiment",
    "weights_file",
]

#: ``model.weights: random`` asks for a random init on purpose (see :func:`check_weights`).
RANDOM_INIT = "random"


def check_writable(path: str | Path, what: str, is_file: bool = False) -> Path:
    """Check that the folder ``path`` (or the parent of a file ``path``) can be created/written.

    The nearest existing ancestor must be a folder this process may write to. Nothing is
    created.

    Raises:
        UserError: a part of the path is a file, or the folder is not writable.
    """
    path = Path(path).expanduser()
    folder = path.parent if is_file else path
    if is_file and path.is_dir():
        raise UserError(f"{what} {path} is a folder; give a file name")
    probe = folder
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise UserError(f"{what} {path}: {probe} is a file, not a folder", hint="choose a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise UserError(
            f"{what} {path} cannot be written: {probe} is read-only for this user",
            hint="choose a folder you can write to or fix its permissions",
        )
    if is_file and path.exists() and not os.access(path, os.W_OK):
        raise UserError(f"{what} {path} exists and is read-only", hint="choose another file")
    return path


def check_methods(names: Sequence[str], what: str = "method") -> None:
    """Every name is a registered attribution method (lists the known ones otherwise)."""

    for name in names:
        if name not in METHODS:
            raise UserError(
                f"{what} {name!r} is not an attribution method{_hint(name, METHODS.names())}",
                hint=f"`rightfocus list methods` shows them: {', '.join(METHODS.names())}",
            )


def check_device(config: Config) -> None:
    """A GPU/MPS accelerator is only accepted when this machine has one (and enough of them)."""
    t = config.trainer
    if t.accelerator in ("gpu", "cuda"):
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise UserError(
                f"trainer.accelerator: {t.accelerator} but no CUDA GPU is available here",
                hint="use --set trainer.accelerator=cpu (or auto)",
            )
        if isinstance(t.devices, int) and t.devices > count:
            raise UserError(
                f"trainer.devices: {t.devices} but only {count} GPU(s) are available",
                hint=f"set trainer.devices to at most {count}",
            )
    if t.accelerator == "mps" and not torch.backends.mps.is_available():
        raise UserError(
            "trainer.accelerator: mps but Apple's MPS backend is not available here",
            hint="use --set trainer.accelerator=cpu (or auto)",
        )


def _accepted(fn: Callable[..., Any]) -> tuple[list[str], bool]:
    params = inspect.signature(fn).parameters.values()
    named = [p.name for p in params if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return named, any(p.kind == p.VAR_KEYWORD for p in params)


def _check_options(
    field: str,
    kind: str,
    name: str,
    fn: Callable[..., Any],
    fixed: set[str],
    options: dict[str, Any],
) -> bool:
    """Unknown keys of ``options`` are errors when ``fn`` takes no ``**kwargs``; returns
    whether ``fn`` forwards extra keyword arguments (then only a build can tell)."""

    named, var_kw = _accepted(fn)
    allowed = [n for n in named if n not in fixed]
    for key in options:
        if key in fixed:
            raise UserError(f"{field}.{key} is set by the config itself; remove it from {field}")
        if key not in named and not var_kw:
            raise UserError(
                f"{field}: {kind} {name!r} has no option {key!r}{_hint(key, allowed)}",
                hint=f"allowed: {', '.join(allowed) or '(none)'}",
            )
    return var_kw


def _unexpected_keyword(err: TypeError) -> str | None:
    text = str(err)
    if "unexpected keyword argument" in text:
        return text.rsplit("argument", 1)[-1].strip(" '\"")
    return None


def dataset_classes(dataset: Any) -> int | None:
    """The number of classes a dataset object declares (``classes``), through ``Subset``s."""
    while dataset is not None:
        classes = getattr(dataset, "classes", None)
        if classes is not None:
            return len(classes)
        dataset = getattr(dataset, "dataset", None)
    return None


def _check_root(config: Config) -> None:
    root = config.data.root
    if root is None:
        return
    path = Path(root).expanduser()
    if not path.exists() and config.data.download:
        check_writable(path, "data.root (download: true)")
        return
    if not path.exists():
        raise UserError(f"data.root: folder {path} does not exist", hint="check the path")
    if not path.is_dir():
        raise UserError(f"data.root: {path} is a file, not a folder")
    if not os.access(path, os.R_OK | os.X_OK):
        raise UserError(f"data.root: folder {path} is not readable by this user")


def _build_pool(config: Config) -> Any:
    """The train pool, built by the same registry call as ``datamodule.build_dataset`` (without
    its ``max_train`` subset), without importing Lightning so that errors come fast."""

    d = config.data
    options = dict(d.options)
    if d.variant is not None:
        options["variant"] = d.variant
    try:
        return DATASETS.get(d.dataset)(
            split="train",
            root=d.root,
            seed=d.seed,
            image_size=d.image_size,
            download=d.download,
            **options,
        )
    except TypeError as err:
        key = _unexpected_keyword(err)
        if key is None:
            raise
        raise UserError(
            f"data.options: dataset {d.dataset!r} has no option {key!r}",
            hint="remove it; see the dataset's documentation for its options",
        ) from None
    except RuntimeError as err:
        raise UserError(f"data: dataset {d.dataset!r} cannot be loaded: {err}") from None


def _check_data(config: Config, meta: dict[str, Any]) -> tuple[int | None, int | None]:
    """Number of training samples (None: unknown without loading) and classes in the data."""

    d = config.data
    fixed = {"split", "root", "seed", "image_size", "download"} | (
        {"variant"} if d.variant is not None else set()
    )
    forwards = _check_options(
        "data.options",
        "dataset",
        d.dataset,
        DATASETS.get(d.dataset),
        fixed,
        {k: v for k, v in d.options.items() if k != "feedback_store"},  # the studio's overlay
    )
    data_classes = meta.get("num_classes")
    # datasets read from the user's files (cheap to list) are built to count samples/classes
    if forwards or d.root is not None or data_classes is None:
        pool = _build_pool(config)
        n = len(pool) if d.max_train is None else min(len(pool), d.max_train)
        return n, data_classes if data_classes is not None else dataset_classes(pool)
    return d.max_train, data_classes


def _check_folds(config: Config, n: int | None) -> None:
    d = config.data
    if n is None or d.folds < 2:
        if n is not None and n < 1:
            raise UserError(f"data: dataset {d.dataset!r} has no training samples")
        return
    if n < d.folds:
        source = "data.max_train" if d.max_train is not None and n >= d.max_train else "the data"
        raise UserError(
            f"data.folds: {d.folds} folds need at least {d.folds} samples, but {source} gives {n}",
            hint="lower data.folds or use more samples",
        )


def _check_classes(config: Config, meta: dict[str, Any], data_classes: int | None) -> int:

    m = config.model
    forwards = _check_options(
        "model.options", "model", m.name, MODELS.get(m.name), set(), dict(m.options)
    )
    model_classes = m.options.get("num_classes", meta.get("num_classes"))
    if model_classes is None:
        found = f" (the data has {data_classes} classes)" if data_classes else ""
        raise UserError(
            f"data.dataset {config.data.dataset!r} does not fix the number of classes{found}",
            hint=f"set model.options.num_classes: {data_classes or 'N'}",
        )
    if isinstance(model_classes, bool) or not isinstance(model_classes, int) or model_classes < 2:
        raise UserError(f"model.options.num_classes must be an int >= 2, got {model_classes!r}")
    if data_classes is not None and model_classes != data_classes:
        raise UserError(
            f"model.options.num_classes is {model_classes} but the data has {data_classes} classes",
            hint=f"set model.options.num_classes: {data_classes}",
        )
    if forwards and m.options:  # the factory passes options on: only a build can tell
        try:
            _plain_model(config)
        except TypeError as err:
            key = _unexpected_keyword(err)
            if key is None:
                raise
            raise UserError(
                f"model.options: model {m.name!r} has no option {key!r}",
                hint="remove it; see the model's documentation for its options",
            ) from None
    return int(model_classes)


def _check_class_weights(config: Config, num_classes: int) -> None:
    spec = config.data.class_weights
    if not isinstance(spec, list):
        return
    if len(spec) != num_classes:
        raise UserError(
            f"data.class_weights lists {len(spec)} weights but the model has {num_classes} classes",
            hint=f"give {num_classes} weights or use inverse_frequency",
        )
    if not all(math.isfinite(w) and w >= 0 for w in spec) or not any(w > 0 for w in spec):
        raise UserError(
            f"data.class_weights must be finite, >= 0 and not all 0, got {spec}",
        )


def _plain_model(config: Config) -> Any:
    """The configured architecture without weights files or conversions (X-DNN and Bayesian
    conversions keep every convolution), built cheaply to look up its layers."""

    meta = DATASETS.metadata(config.data.dataset)
    m = config.model
    kwargs: dict[str, Any] = {
        "num_classes": meta["num_classes"],
        "in_channels": meta["in_channels"],
        "image_size": config.data.image_size or meta["image_size"],
        **m.options,
    }
    return MODELS.get(m.name)(**kwargs)


def _check_attribution(config: Config) -> None:
    """The ``overlap`` attribution must fit the model (a CAM needs a convolution layer)."""
    if "overlap" not in config.evaluation.metrics:
        return
    # heavy: torchmetrics (the metrics bundle), only when overlap is configured
    from rightfocus.engine.evaluate import attribution_method

    method, options = attribution_method(config)
    if not METHODS.metadata(method).get("needs_layer"):
        return
    model = _plain_model(config)
    try:
        resolve_layer(model, options.get("layer"))
    except ValueError as err:
        raise UserError(
            f"evaluation.attribution: {method} needs a layer of model {config.model.name!r} "
            f"({err})",
            hint="choose a model with convolutions, set evaluation.attribution_options.layer, "
            "or use evaluation.attribution: saliency",
        ) from None


def weights_file(config: Config) -> str | None:
    """The weights file of ``config.model`` (None: random init, unset or ``random``)."""
    weights = config.model.weights
    return None if weights in (None, RANDOM_INIT) else weights


def check_weights(config: Config) -> None:
    """Refuse to train a model from a random init without being asked when the papers it
    reproduces start from ImageNet weights (its registration says ``imagenet_init=True``; e.g.
    the Bayesian-feedback paper's AlexNet weight means). ``model.weights=random`` asks for
    random init explicitly.

    Raises:
        UserError: naming ``model.weights=<file>`` and ``model.weights=random``.
    """

    m = config.model
    if m.weights is not None or not MODELS.metadata(m.name).get("imagenet_init"):
        return
    raise UserError(
        f"model {m.name!r} starts from ImageNet weight means in the paper, but model.weights "
        "is not set",
        hint="pass --set model.weights=<file> (a local state-dict file, e.g. torchvision's "
        f"alexnet-owt-7be5be79.pth downloaded beforehand), or --set model.weights={RANDOM_INIT} "
        "to train from a random init on purpose",
    )


def validate_experiment(config: Config) -> None:
    """Everything checkable before training (see the module docstring); writes nothing.

    Raises:
        UserError: naming the config field and what to do.
    """

    if (config.run_dir / "metrics.json").is_file():
        return  # a finished run is not trained again
    check_weights(config)
    check_writable(config.run_dir, "runs_dir")
    check_device(config)
    _check_root(config)
    meta = DATASETS.metadata(config.data.dataset)
    n, data_classes = _check_data(config, meta)
    _check_folds(config, n)
    num_classes = _check_classes(config, meta, data_classes)
    _check_class_weights(config, num_classes)
    _check_attribution(config)
