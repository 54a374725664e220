"""Crash-safe checkpoints: atomic saves, ``weights_only`` loads with clear errors, RNG state.

* :class:`AtomicCheckpointIO` is Lightning's checkpoint plugin for every save the Trainer makes
  (``last.ckpt``, ``best.ckpt``, the batch-size finder's temporary file): it writes a temporary
  file next to the target, fsyncs it and renames it over the target, so a kill at any moment
  leaves either the old or the new checkpoint, never a partial one. Loads use
  ``torch.load(..., weights_only=True)``: a checkpoint carrying pickled Python objects is refused.
* :class:`ResumeCheckpoint` saves ``last.ckpt`` at each epoch end (after validation) and N
  training steps after its previous save, never after an epoch's last batch: a checkpoint there
  would resume as "epoch done" and skip the validation that follows (and with it
  best-checkpoint selection).
* :func:`rng_state` / :func:`set_rng_state` capture and restore every random generator, so a
  resumed run draws the same random numbers (MC samples, dropout, noise) as an uninterrupted one.
"""

from __future__ import annotations

import pickle
import random
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.fabric.plugins import CheckpointIO

from rightfocus._io import atomic_path, remove_stale_temp_files

__all__ = [
    "AtomicCheckpointIO",
    "CheckpointError",
    "ResumeCheckpoint",
    "check_model_state",
    "check_resume_checkpoint",
    "load_checkpoint",
    "remove_stale_temp_files",
    "rng_state",
    "set_rng_state",
]

LAST = "last.ckpt"
BEST = "best.ckpt"


class CheckpointError(ValueError):
    """A checkpoint file is missing, truncated, corrupt or carries pickled objects."""


def load_checkpoint(path: str | Path, map_location: Any = "cpu") -> dict[str, Any]:
    """``torch.load(path, weights_only=True)`` with errors that say what went wrong and what to do.

    Raises:
        CheckpointError: the file is missing, truncated/corrupt (whatever exception the
            unpickler raises on garbage), contains pickled code (refused for safety, never
            executed), or is not a checkpoint mapping.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"Checkpoint {path} does not exist")
    try:
        with warnings.catch_warnings():  # garbage bytes make torch warn about pickle protocols
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # random bytes raise anything from EOFError to KeyError
        reason = _unpickler_reason(err)
        if isinstance(err, pickle.UnpicklingError) and _is_code(reason):
            raise CheckpointError(
                f"Checkpoint {path} contains pickled code, refused for safety (nothing in it "
                f"was executed; {reason}). rightfocus checkpoints hold only tensors and plain "
                "containers; if you made this file yourself and trust it, save its state dicts "
                "again with torch.save."
            ) from err
        raise CheckpointError(
            f"Checkpoint {path} is truncated or corrupt ({reason}). Delete it to restart the "
            "run from scratch (or restore it from a backup)."
        ) from err
    if not isinstance(state, dict):
        raise CheckpointError(
            f"Checkpoint {path} holds a {type(state).__name__}, not a checkpoint mapping; "
            "delete it to restart the run from scratch"
        )
    return state


def _is_code(reason: str) -> bool:
    """Whether the weights-only unpickler refused a reference to Python code (a global, a
    reduce of a non-allowed callable) rather than stumbling over garbage bytes."""
    low = reason.lower()
    return "global" in low or "reduce" in low or "not an allowed" in low


def _unpickler_reason(err: BaseException) -> str:
    """The informative line of torch's weights-only unpickler error, without torch's advice
    (to load with ``weights_only=False``, which would execute the file's code)."""
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    for i, line in enumerate(lines):
        if "WeightsUnpickler error" in line:
            rest = line.split("WeightsUnpickler error:", 1)[1].strip()
            detail = rest or (lines[i + 1] if i + 1 < len(lines) else "")
            return _strip_advice(detail)
    return _strip_advice(_first_line(err))


def _strip_advice(text: str) -> str:
    markers = (". Please use", "Please use", "weights_only", "Check the documentation", ". This is")
    for marker in markers:
        text = text.split(marker)[0]
    return text.strip().rstrip(".,;:")[:300] or "unreadable"


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0][:300] if text else type(err).__name__


_RESUME_KEYS = ("state_dict", "optimizer_states", "loops", "callbacks", "epoch", "global_step")


def check_resume_checkpoint(path: str | Path, expected: Mapping[str, torch.Tensor]) -> None:
    """Check before a resume that ``path`` is a complete training checkpoint of this model
    (``expected``: the LightningModule's ``state_dict()``).

    Raises:
        CheckpointError: unreadable (see :func:`load_checkpoint`), not a training checkpoint
            (keys missing), or written by another model (see :func:`check_model_state`).
    """
    state = load_checkpoint(path)
    missing = [k for k in _RESUME_KEYS if k not in state]
    if missing or not isinstance(state.get("state_dict"), Mapping):
        raise CheckpointError(
            f"Checkpoint {path} is not a complete training checkpoint (missing: "
            f"{', '.join(missing) or 'state_dict mapping'}). Delete it to restart the run from "
            "scratch."
        )
    check_model_state(expected, state["state_dict"], path)


def check_model_state(
    expected: Mapping[str, torch.Tensor], saved: Mapping[str, Any], path: str | Path
) -> None:
    """Check that a checkpoint's ``state_dict`` fits a model (same keys, same shapes).

    Raises:
        CheckpointError: naming missing / unexpected keys and shape mismatches: the checkpoint
            was written by another model (another config or code version).
    """
    missing = [k for k in expected if k not in saved]
    unexpected = [k for k in saved if k not in expected]
    shapes = [
        f"{k} {tuple(saved[k].shape)} vs {tuple(v.shape)}"
        for k, v in expected.items()
        if k in saved and getattr(saved[k], "shape", None) != v.shape
    ]
    if not (missing or unexpected or shapes):
        return
    parts = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("shape", shapes)):
        if items:
            more = f" (+{len(items) - 3} more)" if len(items) > 3 else ""
            parts.append(f"{label}: {', '.join(items[:3])}{more}")
    raise CheckpointError(
        f"Checkpoint {path} was written by another model ({'; '.join(parts)}). It does not "
        "belong to this run's config: use the run folder that made it, or delete it to "
        "retrain."
    )


class AtomicCheckpointIO(CheckpointIO):
    """Lightning checkpoint plugin: atomic temp-file + fsync + rename saves, weights-only loads."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO does not take storage_options")
        with atomic_path(path) as tmp:
            torch.save(checkpoint, tmp)

    def load_checkpoint(
        self, path: Any, map_location: Any | None = None, weights_only: bool | None = None
    ) -> dict[str, Any]:
        if weights_only is False:
            raise CheckpointError("rightfocus loads checkpoints with weights_only=True only")
        return load_checkpoint(path, map_location="cpu" if map_location is None else map_location)

    def remove_checkpoint(self, path: Any) -> None:
        Path(path).unlink(missing_ok=True)


class ResumeCheckpoint(pl.Callback):
    """Save ``<dirpath>/last.ckpt`` at epoch ends and whenever ``every_n_steps`` optimizer steps
    have passed since the last save (so a kill loses at most that many steps; epochs shorter
    than ``every_n_steps`` are saved only at their ends, no extra write per epoch).

    Runs after Lightning's ``ModelCheckpoint`` (checkpoint callbacks are ordered last and keep
    their relative order) so the saved state includes its best-model bookkeeping.
    """

    def __init__(self, dirpath: str | Path, every_n_steps: int | None = None) -> None:
        if every_n_steps is not None and every_n_steps < 1:
            raise ValueError(f"every_n_steps must be >= 1 or None, got {every_n_steps}")
        self.dirpath = Path(dirpath)
        self.every_n_steps = every_n_steps
        self._saved_step = 0  # the global step of the last save (or of the resumed checkpoint)

    @property
    def path(self) -> Path:
        return self.dirpath / LAST

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._saved_step = trainer.global_step

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        n = self.every_n_steps
        if n is None or trainer.global_step - self._saved_step < n:
            return
        progress = trainer.fit_loop.epoch_loop.batch_progress
        done = getattr(progress.current, "processed", progress.current.completed)
        if progress.is_last_batch or done >= trainer.num_training_batches:
            return  # the epoch-end checkpoint (after validation) follows
        self._save(trainer)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._save(trainer)

    def _save(self, trainer: pl.Trainer) -> None:
        trainer.save_checkpoint(self.path, weights_only=False)
        self._saved_step = trainer.global_step


def rng_state() -> dict[str, Any]:
    """Every RNG's state as tensors and plain types (loadable with ``weights_only=True``)."""
    np_state: Any = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": _plain(random.getstate()),
        "numpy": {
            "keys": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _plain(obj: Any) -> Any:
    if isinstance(obj, tuple | list):
        return [_plain(o) for o in obj]
    return obj


def _tuple(obj: Any) -> Any:
    if isinstance(obj, list):
        return tuple(_tuple(o) for o in obj)
    return obj


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` captured."""
    torch.set_rng_state(state["torch"])
    random.setstate(_tuple(state["python"]))
    np_state = state["numpy"]
    keys = np_state["keys"].numpy().astype(np.uint32)
    np.random.set_state(
        ("MT19937", keys, np_state["pos"], np_state["has_gauss"], np_state["cached_gaussian"])
    )
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
