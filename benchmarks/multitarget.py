"""Several targets in one call vs one call per target: LeNet-5, batch 256, all 10 classes.

For every method timed on LeNet-5 in ``benchmarks/attribution.py`` (its options, ``--quick``
settings for the costly ones) plus the CAM family: one call with a ``(256, 10)`` class tensor
vs 10 calls with one ``(256,)`` column each, interleaved repeats, median seconds; the results
must be identical (the maximum difference is reported). Goal: >= 3x.

Usage: ``python benchmarks/multitarget.py [--repeats 3] [--threads 2] [--only A,B]``; updates
``benchmarks/results/multitarget.json`` (rows of other methods from earlier runs are kept).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

import torch

from rightfocus import METHODS, attribute
from rightfocus._io import atomic_write_json

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "multitarget.json"
K = 10
GOAL = 3.0


def _bench_module() -> Any:
    spec = importlib.util.spec_from_file_location("bench_attribution", HERE / "attribution.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds first")
    parser.add_argument("--only", default=None, help="comma-separated method names")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    bench = _bench_module()
    model, x, _ = bench.build("lenet5")
    targets = torch.arange(K).expand(x.shape[0], K).contiguous()
    names = [n for n in METHODS.names() if "lenet5" in bench.TABLE[n].models]
    names += [n for n in METHODS.names() if METHODS.get(n).needs_layer and n != "cam"]
    # rows of earlier runs are kept, one per method (the latest run's row wins)
    earlier = json.loads(RESULTS.read_text()) if RESULTS.exists() else {"rows": []}
    rows = [r for r in earlier["rows"] if not args.only or r["method"] not in args.only.split(",")]
    commands = [c for c in [earlier.get("command")] if c]
    print(f"{'method':<22}{'one call s':>11}{'10 calls s':>11}{'speed-up':>10}{'max diff':>11}")
    for name in names:
        if args.only and name not in args.only.split(","):
            continue
        timed_here = "lenet5" in bench.TABLE[name].models
        opts = bench.options_for(name, "lenet5", True) if timed_here else {}
        outs: dict[str, Any] = {}

        def multi(name: str = name, opts: dict[str, Any] = opts, outs: dict = outs) -> None:
            outs["multi"] = attribute(model, x, targets, name, **opts)

        def separate(name: str = name, opts: dict[str, Any] = opts, outs: dict = outs) -> None:
            outs["separate"] = torch.stack(
                [attribute(model, x, targets[:, k], name, **opts) for k in range(K)], dim=1
            )

        one, loop = bench.interleaved([multi, separate], args.repeats, args.warmup)
        diff = float((outs["multi"] - outs["separate"]).abs().max())
        scale = float(outs["separate"].abs().max())
        row = {"method": name, "multi_s": one, "separate_s": loop, "speedup": loop / one,
               "max_abs_diff": diff, "max_abs": scale, "goal": GOAL,
               "met": loop / one >= GOAL}  # fmt: skip
        rows.append(row)
        mark = "" if row["met"] else "  below goal"
        print(f"{name:<22}{one:>11.3f}{loop:>11.3f}{loop / one:>9.2f}x{diff:>11.1e}{mark}",
              flush=True)  # fmt: skip
        command = "; ".join(
            [*commands, " ".join(["python benchmarks/multitarget.py", *(argv or sys.argv[1:])])]
        )
        atomic_write_json(RESULTS, {"threads": args.threads, "targets": K, "batch": x.shape[0],
                                    "rows": rows, "command": command})  # fmt: skip
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
