"""Crash-safe checkpoints: atomic saves, ``weights_only`` loads with clear errors, RNG state.

* :class:`AtomicCheckpointIO` is Lightning's checkpoint plugin for every save the Trainer makes
  (``last.ckpt``, ``best.ckpt``, the batch-size finder's temporary file): it writes a temporary
  file next to the target, fsyncs it and renames it over the target, so a kill at any moment
  leaves either the old or the new checkpoint, never a partial one. Loads use
  ``torch.load(..., weights_only=True)``: a checkpoint carrying pickled Python objects is refused.
* :class:`ResumeCheckpoint` saves ``last.ckpt`` every N training steps and at each epoch end.
* :func:`rng_state` / :func:`set_rng_state` capture and restore every random generator, so a
  resumed run draws the same random numbers (MC samples, dropout, noise) as an uninterrupted one.
"""

from __future__ import annotations

import pickle
import random
import zipfile
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.fabric.plugins import CheckpointIO

from rightfocus._io import atomic_path

__all__ = [
    "AtomicCheckpointIO",
    "CheckpointError",
    "ResumeCheckpoint",
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
        CheckpointError: the file is missing, truncated/corrupt, holds pickled Python objects
            (refused: only tensors and plain containers load), or is not a checkpoint mapping.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"Checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        reason = _unpickler_reason(err)
        if "global" not in reason.lower():
            raise CheckpointError(
                f"Checkpoint {path} is truncated or corrupt ({reason}). Delete it to restart the "
                "run from scratch (or restore it from a backup)."
            ) from err
        raise CheckpointError(
            f"Refusing to load checkpoint {path}: it holds pickled Python objects, which "
            f"weights_only=True loading does not execute ({reason}). Only checkpoints "
            "of tensors and plain containers (as rightfocus writes them) are accepted; if you "
            "trust the file, re-save its state dicts with torch.save."
        ) from err
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as err:
        raise CheckpointError(
            f"Checkpoint {path} is truncated or corrupt ({_first_line(err)}). Delete it to "
            "restart the run from scratch (or restore it from a backup)."
        ) from err
    if not isinstance(state, dict):
        raise CheckpointError(f"Checkpoint {path} holds a {type(state).__name__}, not a mapping")
    return state


def _unpickler_reason(err: BaseException) -> str:
    """The informative line of torch's weights-only unpickler error."""
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    for i, line in enumerate(lines):
        if "WeightsUnpickler error" in line:
            rest = line.split("WeightsUnpickler error:", 1)[1].strip()
            detail = rest or (lines[i + 1] if i + 1 < len(lines) else "")
            return detail.split(". Please use")[0][:300]
    return _first_line(err)


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0][:300] if text else type(err).__name__


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


def remove_stale_temp_files(folder: str | Path) -> list[Path]:
    """Delete temporary files a killed process left behind (``.<name>.*.tmp``); returns them."""
    stale = [p for p in Path(folder).rglob(".*.tmp") if p.is_file()]
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


class ResumeCheckpoint(pl.Callback):
    """Save ``<dirpath>/last.ckpt`` every ``every_n_steps`` optimizer steps and at epoch ends.

    Runs after Lightning's ``ModelCheckpoint`` (checkpoint callbacks are ordered last and keep
    their relative order) so the saved state includes its best-model bookkeeping.
    """

    def __init__(self, dirpath: str | Path, every_n_steps: int | None = None) -> None:
        if every_n_steps is not None and every_n_steps < 1:
            raise ValueError(f"every_n_steps must be >= 1 or None, got {every_n_steps}")
        self.dirpath = Path(dirpath)
        self.every_n_steps = every_n_steps

    @property
    def path(self) -> Path:
        return self.dirpath / LAST

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        n = self.every_n_steps
        if n is not None and trainer.global_step > 0 and trainer.global_step % n == 0:
            trainer.save_checkpoint(self.path, weights_only=False)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        trainer.save_checkpoint(self.path, weights_only=False)


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
