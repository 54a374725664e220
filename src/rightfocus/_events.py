"""A run's TensorBoard scalars as a pandas table: what the report and the curve figures read."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd

__all__ = ["training_curves"]


def training_curves(run_dir: str | Path, tags: Iterable[str] | None = None) -> pd.DataFrame:
    """Scalars from the event files under ``run_dir`` as a long table (tag, step, value);
    ``tags`` keeps only those tags (default: every scalar)."""
    # heavy: tensorboard takes about half a second; only reading curves needs it
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    wanted = None if tags is None else set(tags)
    rows: list[dict[str, Any]] = []
    for events in sorted(Path(run_dir).rglob("events.out.tfevents.*")):
        acc = EventAccumulator(str(events), size_guidance={"scalars": 0})
        acc.Reload()
        for tag in acc.Tags().get("scalars", []):
            if wanted is not None and tag not in wanted:
                continue
            rows.extend({"tag": tag, "step": e.step, "value": e.value} for e in acc.Scalars(tag))
    return pd.DataFrame(rows, columns=["tag", "step", "value"])
