"""The example experiment configs, shipped inside the package (an installed wheel has them).

In a source checkout the top-level ``configs/`` folder is a link to this one, so
``rightfocus train configs/decoy_mnist_color_lenet.yaml`` and
``rightfocus train decoy_mnist_color_lenet`` read the same file.

Example:
    >>> from rightfocus import configs
    >>> configs.path("decoy_mnist_color_lenet").name
    'decoy_mnist_color_lenet.yaml'
    >>> "sweeps/decoy_lambda" in configs.names()
    True
"""

from __future__ import annotations

from difflib import get_close_matches
from pathlib import Path

__all__ = ["DIR", "names", "path", "resolve"]

#: The folder holding the shipped configs.
DIR = Path(__file__).resolve().parent


def names() -> list[str]:
    """Shipped config names, e.g. ``"decoy_mnist_color_lenet"``, ``"sweeps/decoy_lambda"``."""
    return sorted(p.relative_to(DIR).with_suffix("").as_posix() for p in DIR.rglob("*.yaml"))


def path(name: str) -> Path:
    """The file of the shipped config ``name`` (with or without ``.yaml``).

    Raises:
        FileNotFoundError: for an unknown name; the message lists the shipped ones.
    """
    key = name[: -len(".yaml")] if name.endswith(".yaml") else name
    key = key.removeprefix("configs/")
    known = names()
    if key not in known:
        close = get_close_matches(key, known, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise FileNotFoundError(
            f"No shipped config named {name!r}.{hint} Shipped configs: {', '.join(known)}"
        )
    return DIR / f"{key}.yaml"


def resolve(name_or_path: str | Path) -> Path:
    """``name_or_path`` when that file exists, else the shipped config of that name, else
    ``name_or_path`` unchanged (so the caller reports the missing file)."""
    candidate = Path(name_or_path)
    if candidate.is_file():
        return candidate
    try:
        return path(str(name_or_path))
    except FileNotFoundError:
        return candidate
