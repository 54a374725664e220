"""Shared timing for the benchmarks: interleaved repetitions, medians (the machine is shared)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def interleaved_medians(cases: dict[str, Callable[[], None]], reps: int) -> dict[str, float]:
    """Median seconds per call of each case: one warm-up call each, then ``reps`` round-robin
    rounds, so load changes on the machine hit every case alike."""
    times: dict[str, list[float]] = {k: [] for k in cases}
    for fn in cases.values():
        fn()
    for _ in range(reps):
        for name, fn in cases.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {k: statistics.median(v) for k, v in times.items()}
