"""The one place that picks matplotlib's headless backend and writes a figure atomically."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rightfocus._io import atomic_path

__all__ = ["pyplot", "save_figure"]


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the non-interactive Agg backend (unless one is already chosen).

    Imported on use: matplotlib is slow to import and only figure writers need it.
    """
    import matplotlib  # heavy: see above

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt  # heavy: see above

    return plt


def save_figure(fig: Any, path: str | Path, dpi: int = 100, fmt: str | None = None) -> Path:
    """Write ``fig`` to ``path`` atomically (temp file + rename) and close it.

    ``fmt`` defaults to the path's suffix (``png`` when it has none).
    """
    path = Path(path)
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=dpi, format=fmt or path.suffix.lstrip(".") or "png")
    finally:
        pyplot().close(fig)
    return path
