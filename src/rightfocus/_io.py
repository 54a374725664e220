"""Atomic file writes: write to a temporary file in the same folder, then rename over.

A temporary file is named ``.<target name>.<writer pid>.<random>.tmp`` and created with mode
``0o666`` filtered by the process umask (as ``open()`` would create the target), so the renamed
file has the permissions the user asked for with ``umask``. The writer's PID in the name lets
:func:`remove_stale_temp_files` delete only the leftovers of processes that no longer exist,
never a file another live process is still writing.

:func:`exclusive_lock` gives one process at a time a folder (an OS file lock, released by the
kernel when the holder exits or is killed, so a stale lock never blocks).
"""

from __future__ import annotations

import json
import math
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = [
    "LockHeldError",
    "atomic_path",
    "atomic_write_json",
    "atomic_write_text",
    "exclusive_lock",
    "remove_stale_temp_files",
]

_SUFFIX = ".tmp"


def _create_temp(path: Path) -> Path:
    """Create an empty, new temporary file next to ``path`` (mode 0o666 & ~umask)."""
    for _ in range(100):
        tmp = path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}{_SUFFIX}"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        os.close(fd)
        return tmp
    raise FileExistsError(f"could not create a temporary file next to {path}")


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it replaces ``path`` atomically.

    The temporary file exists (empty) when yielded; it is fsynced and renamed over ``path``
    after the block. On any exception the temporary file is removed and ``path`` is left as it
    was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp_path = _create_temp(path)
    try:
        yield tmp_path
        with open(tmp_path, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def atomic_write_text(path: str | Path, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def _json_safe(obj: Any) -> Any:
    """NaN / +-Inf floats (undefined metrics) become ``None``, i.e. JSON ``null``."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_json_safe(v) for v in obj]
    return obj


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    """Strict JSON (``allow_nan=False``): NaN and Inf are written as ``null``, never as the
    invalid bare ``NaN``."""
    text = json.dumps(_json_safe(obj), indent=2, sort_keys=True, allow_nan=False)
    return atomic_write_text(path, text + "\n")


def _writer_pid(tmp: Path) -> int | None:
    """The PID in ``.<name>.<pid>.<random>.tmp`` (None for other names)."""
    parts = tmp.name.removesuffix(_SUFFIX).rsplit(".", 2)
    if len(parts) == 3 and parts[1].isdigit():
        return int(parts[1])
    return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


def remove_stale_temp_files(folder: str | Path) -> list[Path]:
    """Delete the temporary files (``.*.tmp``) that killed writers left under ``folder``.

    A file whose writer (the PID in its name) is still running is kept: it may be in flight.
    Returns the files removed.
    """
    removed = []
    for p in Path(folder).rglob(f".*{_SUFFIX}"):
        pid = _writer_pid(p)
        if not p.is_file() or (pid is not None and _alive(pid)):
            continue
        p.unlink(missing_ok=True)
        removed.append(p)
    return removed


class LockHeldError(RuntimeError):
    """Another live process holds the lock; ``pid`` is its process id (None if unknown)."""

    def __init__(self, path: Path, pid: int | None) -> None:
        self.path, self.pid = path, pid
        who = f"process {pid}" if pid is not None else "another process"
        super().__init__(f"{path} is locked by {who}")


@contextmanager
def exclusive_lock(path: str | Path) -> Iterator[Path]:
    """Hold an exclusive, non-blocking ``flock`` on ``path`` (created if needed) for the block.

    The holder's PID is written into the file so a refused process can name it. The kernel
    drops the lock when the file is closed, including when the holder is killed: a lock file
    left by a dead process does not block. Locks are per open file, so a second acquisition
    in the same process is refused like any other.

    Raises:
        LockHeldError: another process (or another open of this process) holds the lock.
    """
    import fcntl  # optional: POSIX only (file locks need fcntl)

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise LockHeldError(path, _lock_holder(path)) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield path
    finally:
        os.close(fd)  # releases the lock


def _lock_holder(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None
