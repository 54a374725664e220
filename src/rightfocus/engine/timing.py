"""Where a run's time goes: the share spent in training steps vs everything else.

:class:`StepTimer` sums the wall time of every training step (forward, guidance terms,
backward, optimizer step), from Lightning's ``on_train_batch_start`` to ``on_train_batch_end``.
Checkpoint writes, validation, data loading between steps, testing, attribution metrics and
reporting fall outside. The sum survives a resume (it is part of the checkpoint), and
``engine.run`` writes it to the run folder's ``timing.json``.
"""

from __future__ import annotations

import time
from typing import Any

import lightning.pytorch as pl

__all__ = ["TIMING_FILE", "StepTimer"]

TIMING_FILE = "timing.json"


class StepTimer(pl.Callback):
    """Accumulate the wall time spent inside training steps (``train_step_seconds``)."""

    def __init__(self) -> None:
        self.train_step_seconds = 0.0
        self.steps = 0
        self._start: float | None = None

    def on_train_batch_start(self, *args: Any) -> None:
        self._start = time.perf_counter()

    def on_train_batch_end(self, *args: Any) -> None:
        if self._start is not None:
            self.train_step_seconds += time.perf_counter() - self._start
            self.steps += 1
            self._start = None

    def state_dict(self) -> dict[str, Any]:
        return {"train_step_seconds": self.train_step_seconds, "steps": self.steps}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.train_step_seconds = float(state_dict.get("train_step_seconds", 0.0))
        self.steps = int(state_dict.get("steps", 0))
