"""The feedback store: a folder of "don't look here" masks keyed by training-pool index.

Layout (``<i>`` is the image's index in the run's training pool, the dataset that
``build_dataset(config, "train")`` returns)::

    store.json              which pool the indices refer to (dataset fields of the run's config)
    masks/<i>.png           the current mask of image i at the image's own resolution, 8-bit
                            0/255, with its version record (JSON) in the PNG text chunk
                            ``rightfocus``: version, who, when, run, checkpoint hash, strategy,
                            the SHA-256 of the image tensor the mask was painted on
    right/<i>.png           optional "this is the right reason" mask, same format
    history/<i>/v<NNNN>.png every saved version (written once, never changed)

A save writes the history file, then replaces ``masks/<i>.png`` atomically (temporary file,
fsync, rename), so a process killed at any moment leaves the old or the new mask, never a
partial one. The image data is never written. A save names the version it was painted on
(``base_version``); if another save came first the store raises :class:`ConflictError` and
changes nothing. :class:`rightfocus.data.feedback.FeedbackOverlay` reads the store directly
(``data.options.feedback_store`` in a config), so ``rightfocus train`` uses it as is.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, PngImagePlugin

from rightfocus._io import atomic_path, atomic_write_json

__all__ = [
    "ConflictError",
    "FeedbackStore",
    "MaskError",
    "MaskRecord",
    "image_sha256",
    "validate_mask",
]

STORE_FILE = "store.json"
TEXT_KEY = "rightfocus"
FORMAT = 1


class ConflictError(RuntimeError):
    """The mask was saved by someone else after the caller loaded it; nothing was written."""

    def __init__(self, message: str, current: dict[str, Any]) -> None:
        super().__init__(message)
        self.current = current


class MaskError(ValueError):
    """A mask array is not a valid binary mask for the image (shape, dtype or values)."""


@dataclass(frozen=True)
class MaskRecord:
    """One saved version: the metadata stored with the mask."""

    index: int
    version: int
    who: str
    when: str
    run: str
    checkpoint_sha256: str
    strategy: str
    image_sha256: str
    shape: tuple[int, int]
    has_right: bool = False

    def to_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["shape"] = list(self.shape)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MaskRecord:
        d = dict(d)
        d["shape"] = tuple(int(s) for s in d["shape"])
        return cls(**d)


def image_sha256(image: Any) -> str:
    """SHA-256 of an image tensor/array as float32 C-order bytes (ties a mask to its image)."""
    arr = np.ascontiguousarray(
        np.asarray(image.detach().cpu() if hasattr(image, "detach") else image, dtype=np.float32)
    )
    return hashlib.sha256(arr.tobytes()).hexdigest()


def validate_mask(mask: Any, shape: tuple[int, int]) -> np.ndarray:
    """``mask`` as a uint8 ``(H, W)`` array of 0/1, or :class:`MaskError` saying what is wrong.

    Accepts bool or integer arrays whose values are only 0 and 1, of exactly ``shape``.
    """
    arr = np.asarray(mask)
    if arr.dtype != np.bool_ and not np.issubdtype(arr.dtype, np.integer):
        raise MaskError(f"mask dtype must be bool or uint8 with values 0/1, got {arr.dtype}")
    if arr.ndim != 2 or tuple(arr.shape) != tuple(shape):
        raise MaskError(
            f"mask shape must be {tuple(shape)} (the image's height x width), got {arr.shape}"
        )
    if arr.size and (int(arr.min()) < 0 or int(arr.max()) > 1):
        raise MaskError(
            f"mask values must be 0 or 1, got range [{int(arr.min())}, {int(arr.max())}]"
        )
    return arr.astype(np.uint8)


def _write_png(path: Path, mask: np.ndarray, record: dict[str, Any]) -> None:
    info = PngImagePlugin.PngInfo()
    info.add_text(TEXT_KEY, json.dumps(record, sort_keys=True))
    with atomic_path(path) as tmp:
        Image.fromarray((mask * 255).astype(np.uint8), mode="L").save(
            tmp, format="PNG", pnginfo=info
        )


def _read_png(path: Path) -> tuple[np.ndarray, dict[str, Any]]:
    with Image.open(path) as img:
        img.load()
        text = img.text.get(TEXT_KEY) if hasattr(img, "text") else None  # type: ignore[attr-defined]
        arr = np.asarray(img.convert("L"))
    if text is None:
        raise ValueError(f"{path} is not a rightfocus feedback mask (no '{TEXT_KEY}' record)")
    return (arr > 127).astype(np.uint8), json.loads(text)


class FeedbackStore:
    """Versioned masks in a folder (see the module docstring).

    Args:
        root: the store folder (created on first save).
        pool: optional description of the training pool (dataset fields of the run's config);
            written to ``store.json`` when the store is new. An existing store describing a
            different pool is refused with a ValueError.
    """

    def __init__(self, root: str | Path, pool: dict[str, Any] | None = None) -> None:
        self.root = Path(root)
        self._lock = threading.Lock()
        meta = self.root / STORE_FILE
        if meta.is_file():
            saved = json.loads(meta.read_text())
            if pool is not None and saved.get("pool") not in (None, pool):
                raise ValueError(
                    f"Feedback store {self.root} belongs to another training pool "
                    f"({saved.get('pool')}); this run's pool is {pool}. Use another --store folder."
                )
            self.pool = saved.get("pool")
        else:
            self.pool = pool
            if pool is not None:
                atomic_write_json(meta, {"format": FORMAT, "pool": pool})

    # --- reading ----------------------------------------------------------------------------------

    def _mask_path(self, index: int, kind: str = "masks") -> Path:
        return self.root / kind / f"{int(index)}.png"

    def indices(self) -> list[int]:
        """Pool indices with a saved mask, sorted."""
        folder = self.root / "masks"
        if not folder.is_dir():
            return []
        return sorted(int(p.stem) for p in folder.glob("*.png") if p.stem.isdigit())

    def record(self, index: int) -> MaskRecord | None:
        """The current version's record of image ``index`` (None: never saved)."""
        path = self._mask_path(index)
        if not path.is_file():
            return None
        return MaskRecord.from_dict(_read_png(path)[1])

    def version(self, index: int) -> int:
        """Current version number of image ``index`` (0: no mask saved yet)."""
        rec = self.record(index)
        return 0 if rec is None else rec.version

    def load(self, index: int) -> tuple[np.ndarray, MaskRecord] | None:
        """``(mask uint8 (H, W) of 0/1, record)`` of image ``index``, None if never saved."""
        path = self._mask_path(index)
        if not path.is_file():
            return None
        mask, rec = _read_png(path)
        return mask, MaskRecord.from_dict(rec)

    def load_right(self, index: int) -> np.ndarray | None:
        """The "right reason" mask of image ``index`` (None if none was saved)."""
        path = self._mask_path(index, "right")
        return _read_png(path)[0] if path.is_file() else None

    def history(self, index: int) -> list[MaskRecord]:
        """Every saved version of image ``index``, oldest first."""
        folder = self.root / "history" / str(int(index))
        if not folder.is_dir():
            return []
        return [MaskRecord.from_dict(_read_png(p)[1]) for p in sorted(folder.glob("v*.png"))]

    def load_version(self, index: int, version: int) -> np.ndarray:
        """The mask of image ``index`` as saved in ``version``."""
        path = self.root / "history" / str(int(index)) / f"v{int(version):04d}.png"
        if not path.is_file():
            raise FileNotFoundError(f"image {index} has no saved version {version}")
        return _read_png(path)[0]

    # --- writing ----------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """One writer at a time: a thread lock plus an advisory file lock across processes."""
        self.root.mkdir(parents=True, exist_ok=True)
        with self._lock, open(self.root / ".lock", "a+b") as fh:
            try:
                import fcntl  # optional: POSIX only (Windows: the thread lock alone)

                fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            except ImportError:  # pragma: no cover - Windows: the thread lock only
                pass
            yield

    def save(
        self,
        index: int,
        mask: Any,
        *,
        base_version: int,
        image_sha256: str,
        who: str = "",
        run: str = "",
        checkpoint_sha256: str = "",
        strategy: str = "",
        right: Any | None = None,
    ) -> MaskRecord:
        """Save a new version of image ``index``'s mask (and optional "right reason" mask).

        Args:
            index: the image's pool index. mask: 0/1 array ``(H, W)`` at the image's resolution.
            base_version: the version the mask was painted on (0 for a new one).
            image_sha256: :func:`image_sha256` of the image; a mask saved earlier for a
                different image under this index is a conflict too.
            who, run, checkpoint_sha256, strategy: recorded with the version.
            right: optional "right reason" mask of the same shape (stored separately).

        Raises:
            MaskError: invalid mask. ConflictError: the current version is not ``base_version``.
        """
        if int(index) < 0:
            raise MaskError(f"index must be >= 0, got {index}")
        arr = np.asarray(mask)
        if arr.ndim != 2:
            raise MaskError(f"mask must be 2-d (height x width), got shape {arr.shape}")
        shape = (int(arr.shape[0]), int(arr.shape[1]))
        arr = validate_mask(arr, shape)
        right_arr = None if right is None else validate_mask(right, shape)
        with self._locked():
            current = self.record(index)
            have = 0 if current is None else current.version
            if have != int(base_version):
                assert current is not None
                raise ConflictError(
                    f"Image {index} was saved by {current.who or 'someone'} at {current.when} "
                    f"(version {have}) after you opened version {base_version}; nothing was "
                    "saved. Reload the image to see that mask, then paint again.",
                    current.to_dict(),
                )
            rec = MaskRecord(
                index=int(index),
                version=have + 1,
                who=str(who),
                when=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                run=str(run),
                checkpoint_sha256=str(checkpoint_sha256),
                strategy=str(strategy),
                image_sha256=str(image_sha256),
                shape=shape,
                has_right=right_arr is not None,
            )
            d = rec.to_dict()
            _write_png(self.root / "history" / str(int(index)) / f"v{rec.version:04d}.png", arr, d)
            if right_arr is not None:
                _write_png(self._mask_path(index, "right"), right_arr, d)
            _write_png(self._mask_path(index), arr, d)  # the commit point
        return rec

    def summary(self) -> dict[str, Any]:
        """Counts for display: annotated images and total versions."""
        idx = self.indices()
        return {"annotated": len(idx), "root": str(self.root)}
