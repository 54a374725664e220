"""Where a Decoy MNIST reproduction's wall time goes: phase timers and a cProfile of short runs.

Runs ``reproduce_decoy_mnist`` (quick protocol: Bayesian LeNet, MC-10 test evaluation, mean
network validated every epoch) on a small grid and prints

* the wall time, the time inside training steps (``StepTimer``) and the share outside them, the
  same definition as ``ReproduceResult.overhead_share``;
* the wall time of the engine's phases (training steps, validation, checkpoint writes, test
  evaluation, dataset building, the per-run analysis, figures and report), measured by timers
  wrapped around the functions that run them (cumulative: a phase includes the phases it calls);
* with ``--cprofile``, the top functions by own time and by cumulative time (cProfile slows
  Python-heavy code more than tensor code, so the phase shares are then inflated).

    python benchmarks/profile_engine.py [--epochs 4] [--variants position] [--methods none]
        [--folds 0] [--no-clean] [--cprofile] [--top 25] [--threads 1] [--out TEXT_FILE]
"""

from __future__ import annotations

import argparse
import cProfile
import functools
import importlib
import io
import pstats
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from rightfocus.engine.reproduce import reproduce_decoy_mnist

#: (label, module, attribute path): the engine's phases, timed around one function each.
PHASES = (
    ("run set-up + training + test", "rightfocus.engine.run", "run_experiment"),
    ("  dataset building", "rightfocus.engine.datamodule", "build_dataset"),
    ("  trainer.fit", "lightning.pytorch.trainer.trainer", "Trainer.fit"),
    ("    validation loops", "lightning.pytorch.loops.evaluation_loop", "_EvaluationLoop.run"),
    ("    checkpoint saves", "lightning.pytorch.trainer.trainer", "Trainer.save_checkpoint"),
    ("  test evaluation (MC)", "rightfocus.engine.run", "_evaluate"),
    ("analysis (decoy probes)", "rightfocus.engine.decoy", "analyse_run"),
    ("figures", "rightfocus.engine.reproduce", "_decoy_figures"),
    ("report", "rightfocus.engine.reproduce", "write_report"),
)


@contextmanager
def phase_timers() -> Iterator[dict[str, list[float]]]:
    """Wrap every function of :data:`PHASES` with a timer; yields label -> [seconds, calls]."""
    totals: dict[str, list[float]] = {}
    undo: list[Callable[[], None]] = []
    for label, module_name, path in PHASES:
        owner: Any = importlib.import_module(module_name)
        *parents, name = path.split(".")
        for p in parents:
            owner = getattr(owner, p)
        original = getattr(owner, name)
        totals[label] = [0.0, 0.0]
        wrapper = functools.wraps(original)(_timed(original, totals[label]))
        # the defining module (or class) and every module that imported the function by name
        holders = [owner] + [
            m
            for key, m in list(sys.modules.items())
            if key.startswith("rightfocus.") and m is not owner and vars(m).get(name) is original
        ]
        for holder in holders:
            setattr(holder, name, wrapper)
            undo.append(functools.partial(setattr, holder, name, original))
    try:
        yield totals
    finally:
        for u in reversed(undo):
            u()


def _timed(fn: Callable[..., Any], total: list[float]) -> Callable[..., Any]:
    def timed(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            total[0] += time.perf_counter() - start
            total[1] += 1

    return timed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--variants", default="position")
    parser.add_argument("--methods", default="none")
    parser.add_argument("--folds", default="0")
    parser.add_argument("--no-clean", action="store_true", help="skip the clean-baseline runs")
    parser.add_argument("--cprofile", action="store_true", help="also print cProfile's top list")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=None, help="also write the printed text to this file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    profiler = cProfile.Profile()
    with tempfile.TemporaryDirectory() as runs, phase_timers() as totals:
        t0 = time.perf_counter()
        if args.cprofile:
            profiler.enable()
        result = reproduce_decoy_mnist(
            runs,
            quick=True,
            variants=args.variants.split(","),
            methods=args.methods.split(","),
            folds=[int(f) for f in args.folds.split(",")],
            overrides=[f"optim.epochs={args.epochs}"],
            log=lambda _msg: None,
            clean_baseline=not args.no_clean,
        )
        if args.cprofile:
            profiler.disable()
        wall = time.perf_counter() - t0
    steps = result.train_step_seconds
    lines = [
        f"{len(result.run_seconds)} runs of {args.epochs} epochs, {torch.get_num_threads()} "
        f"thread(s){' under cProfile' if args.cprofile else ''}: wall {wall:.1f} s, training "
        f"steps {steps:.1f} s, outside training steps {100 * result.overhead_share:.1f} %",
        "",
        f"{'phase':<34}{'s':>9}{'% wall':>8}{'% steps':>9}{'calls':>7}",
        f"{'training steps (StepTimer)':<34}{steps:>9.2f}{100 * steps / wall:>7.1f}%{100.0:>8.1f}%",
    ]
    for label, (seconds, calls) in totals.items():
        lines.append(
            f"{label:<34}{seconds:>9.2f}{100 * seconds / wall:>7.1f}%"
            f"{100 * seconds / max(steps, 1e-9):>8.1f}%{int(calls):>7}"
        )
    text = "\n".join(lines)
    if args.cprofile:
        buffer = io.StringIO()
        stats = pstats.Stats(profiler, stream=buffer)
        for key in ("tottime", "cumulative"):
            stats.sort_stats(key).print_stats(args.top)
        text += "\n" + "\n".join(ln for ln in buffer.getvalue().splitlines() if ln.strip())
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
