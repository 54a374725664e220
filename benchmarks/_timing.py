"""Shared timing for the benchmarks: ``torch.utils.benchmark`` timers, interleaved repetitions,
medians (the machine is shared).

Every call is timed by a :class:`torch.utils.benchmark.Timer` (one warm-up call, then one timed
call per measurement, at the caller's torch thread count: the Timer's own default is one
thread). Repetitions are
interleaved round-robin, each round starting one case later, so a load change on the machine
hits every case alike and no case always runs first; the median per case is kept.
"""

from __future__ import annotations

import statistics
import timeit
from collections.abc import Callable
from typing import Any

import torch
from torch.utils import benchmark


def time_call(fn: Callable[[], Any], keep: list[Any] | None = None, warm: bool = True) -> float:
    """Seconds of one ``fn()``; its return value is appended to ``keep`` when given.

    ``warm=True``: ``torch.utils.benchmark.Timer.blocked_autorange``, which calls ``fn`` once to
    size its block (a warm-up) and then times one call. ``warm=False``: one cold call timed by
    the standard-library ``timeit.Timer`` (the clock the torch Timer wraps), for calls of
    minutes that the caller warmed up more cheaply.
    """

    def call() -> None:
        out = fn()
        if keep is not None:
            keep.clear()
            keep.append(out)

    if not warm:
        return timeit.Timer(call).timeit(1)
    timer = benchmark.Timer(
        stmt="call()", globals={"call": call}, num_threads=torch.get_num_threads()
    )
    return float(timer.blocked_autorange(min_run_time=1e-9).median)


def interleaved(
    fns: list[Callable[[], Any]],
    repeats: int,
    warmup: int = 1,
    outputs: list[Any] | None = None,
) -> list[float]:
    """Median seconds per function over ``repeats`` round-robin rounds (rotated: round r
    starts with function r mod n). ``warmup`` > 0: every timed call is warmed up by the torch
    Timer right before it (:func:`time_call`); 0: cold single calls (calls of minutes, warmed
    up by the caller). ``outputs`` (a list of ``len(fns)``) receives each function's last
    return value."""
    times: list[list[float]] = [[] for _ in fns]
    n = len(fns)
    for rep in range(repeats):
        for j in range(n):
            i = (j + rep) % n
            keep: list[Any] = []
            times[i].append(time_call(fns[i], keep, warm=warmup > 0))
            if outputs is not None:
                outputs[i] = keep[0]
    return [statistics.median(ts) for ts in times]


def interleaved_medians(cases: dict[str, Callable[[], Any]], reps: int) -> dict[str, float]:
    """Median seconds per call of each named case over ``reps`` warmed-up rounds."""
    secs = interleaved(list(cases.values()), reps, warmup=1)
    return dict(zip(cases, secs))
