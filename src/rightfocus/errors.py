"""User errors: the exception library code raises for a mistake in what the user asked for,
and the one-line message the command line prints for it.

:class:`UserError` (a ``ValueError``, so existing ``except ValueError`` code keeps working)
carries a message that names the problem and an optional ``hint`` saying what to do.
:func:`user_message` turns any exception that is the user's to fix (``UserError``, config and
checkpoint errors, validation errors, missing files, permissions, a full disk, weights from
another model) into exactly one line, and returns ``None`` for everything else (a bug: the
command line then shows the traceback).

Example:
    >>> user_message(UserError("data.folds is 5 but only 3 samples", hint="lower data.folds"))
    'data.folds is 5 but only 3 samples (lower data.folds)'
"""

from __future__ import annotations

import errno

__all__ = ["UserError", "one_line", "user_message"]


class UserError(ValueError):
    """A mistake in the user's input (config, files, options); the message says which.

    Args:
        message: what is wrong, naming the value, field or file.
        hint: what to do about it (appended in parentheses by :func:`user_message`).
    """

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


def one_line(text: str) -> str:
    """Collapse a multi-line message into one line (``"a:\\n  b\\n  c"`` -> ``"a: b; c"``)."""
    parts = [p.strip() for p in str(text).splitlines() if p.strip()]
    out = ""
    for part in parts:
        if not out:
            out = part
        elif out.endswith((":", ";", ",")):
            out = f"{out} {part}"
        else:
            out = f"{out}; {part}"
    return out


_DISK_FULL = (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))
_NOT_WRITABLE = (errno.EACCES, errno.EPERM, errno.EROFS)


def _os_message(err: OSError) -> str | None:
    name = err.filename or ""
    where = f" {name}" if name else ""
    if err.errno in _DISK_FULL:
        return (
            f"no space left on the device while writing{where}: free some space (or choose "
            "another folder), then run the same command again"
        )
    if err.errno in _NOT_WRITABLE:
        return (
            f"permission denied for{where or ' a file'} ({err.strerror or 'not allowed'}): "
            "choose a folder you can write to (runs_dir, --out) or fix its permissions"
        )
    if isinstance(err, FileNotFoundError):
        if name and (err.strerror or "") in str(err):
            return f"no such file or folder: {name}"
        return str(err)
    if isinstance(err, IsADirectoryError | NotADirectoryError | FileExistsError):
        return f"{err.strerror or type(err).__name__}: {name}" if name else str(err)
    return None


def _state_dict_message(err: BaseException) -> str | None:
    text = str(err)
    if isinstance(err, RuntimeError) and "Error(s) in loading state_dict" in text:
        first = one_line(text)[:300]
        return (
            f"the checkpoint's weights do not fit the configured model ({first}); it was saved "
            "from another model or model options: use the config it was trained with"
        )
    return None


def user_message(err: BaseException) -> str | None:
    """The one-line message for an exception the user can fix, else ``None`` (a bug).

    User errors: :class:`UserError` and every other ``ValueError`` (config, checkpoint, run
    conflict and validation errors are ``ValueError`` subclasses), missing files, permission
    and read-only errors, a full disk, and weights that do not fit the model.
    """
    if isinstance(err, OSError):
        message = _os_message(err)
    elif isinstance(err, ValueError):
        message = str(err) or type(err).__name__
    else:
        message = _state_dict_message(err)
    if message is None:
        return None
    return one_line(message)
