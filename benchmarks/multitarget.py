"""Several targets in one call vs one call per target: LeNet-5, batch 256, all 10 classes.

For every method timed on LeNet-5 in ``benchmarks/attribution.py`` (its options, ``--quick``
settings for the costly ones) plus the CAM family: one call with a ``(256, 10)`` class tensor
vs 10 calls with one ``(256,)`` column each, interleaved repeats, median seconds; the results
must be identical up to float rounding (the maximum difference, absolute and relative to the
largest value, is reported: batched backward kernels may round the last bit differently).
Goal: >= 3x.

Gradient methods (saliency, input x gradient, IG, guided backprop, DeconvNet, SmoothGrad,
DeepLIFT) need one backward pass per target, however it is batched: one call costs
``F + K * Bw`` against ``K * (F + Bw)`` for K calls, so their speed-up cannot exceed
``K (F + Bw) / (F + K Bw)``. Every run first times the forward pass ``F`` (with its autograd
graph) and the backward pass to the input ``Bw`` of LeNet-5 and records that ceiling;
``--bound`` stops there.

Usage: ``python benchmarks/multitarget.py [--repeats 3] [--threads 2] [--only A,B]``; updates
``benchmarks/results/multitarget.json`` (rows of other methods from earlier runs are kept).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

from rightfocus import METHODS, attribute
from rightfocus._io import atomic_write_json

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "multitarget.json"
K = 10
GOAL = 3.0
# methods that need one full backward pass to the input per target (the ceiling above
# applies); Integrated Gradients and SmoothGrad stop each target's backward at the first
# layer's output and run its input gradient once per target for all steps
# (rightfocus/attribution/_entry.py), so they are not capped by it
FULL_BACKWARD = {
    "saliency", "input_x_gradient", "guided_backprop", "deconvnet", "smoothgrad_sq",
    "vargrad", "deeplift", "deepshap", "lrp", "guided_gradcam",
}  # fmt: skip


def _bench_module() -> Any:
    spec = importlib.util.spec_from_file_location("bench_attribution", HERE / "attribution.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def forward_backward_ceiling(model: torch.nn.Module, x: torch.Tensor, repeats: int) -> float:
    """Median forward ``F`` (building the graph) and input-gradient backward ``Bw`` seconds,
    interleaved; prints and returns the ceiling ``K (F + Bw) / (F + K Bw)``."""
    for p in model.parameters():
        p.requires_grad_(False)
    t = torch.zeros(x.shape[0], 1, dtype=torch.long)
    fw: list[float] = []
    bw: list[float] = []
    try:
        for rep in range(repeats + 1):
            start = time.perf_counter()
            inp = x.detach().requires_grad_(True)
            score = model(inp).gather(1, t).sum()
            mid = time.perf_counter()
            torch.autograd.grad(score, inp)
            end = time.perf_counter()
            if rep:  # the first round warms up
                fw.append(mid - start)
                bw.append(end - mid)
    finally:
        for p in model.parameters():
            p.requires_grad_(True)
    f, b = statistics.median(fw), statistics.median(bw)
    ceiling = K * (f + b) / (f + K * b)
    print(f"forward F {f * 1e3:.1f} ms, backward to the input Bw {b * 1e3:.1f} ms (Bw/F "
          f"{b / f:.2f}): one backward per target caps the speed-up at {ceiling:.2f}x")  # fmt: skip
    return ceiling


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds first")
    parser.add_argument("--only", default=None, help="comma-separated method names")
    parser.add_argument("--bound", action="store_true", help="time F and Bw, print the ceiling")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    bench = _bench_module()
    model, x, _ = bench.build("lenet5")
    ceiling = forward_backward_ceiling(model, x, args.repeats)
    if args.bound:
        return
    targets = torch.arange(K).expand(x.shape[0], K).contiguous()
    names = [n for n in METHODS.names() if "lenet5" in bench.TABLE[n].models]
    names += [n for n in METHODS.names() if METHODS.get(n).needs_layer and n != "cam"]
    # rows of earlier runs are kept, one per method (the latest run's row wins)
    earlier = json.loads(RESULTS.read_text()) if RESULTS.exists() else {"rows": []}
    rows = [r for r in earlier["rows"] if not args.only or r["method"] not in args.only.split(",")]
    commands = [c for c in [earlier.get("command")] if c]
    print(f"{'method':<22}{'one call s':>11}{'10 calls s':>11}{'speed-up':>10}{'max diff':>11}"
          f"{'relative':>10}")  # fmt: skip
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
               "met": loop / one >= GOAL, "full_backward": name in FULL_BACKWARD}  # fmt: skip
        rows.append(row)
        mark = "" if row["met"] else "  below goal"
        print(f"{name:<22}{one:>11.3f}{loop:>11.3f}{loop / one:>9.2f}x{diff:>11.1e}"
              f"{diff / max(scale, 1e-30):>10.1e}{mark}", flush=True)  # fmt: skip
        command = "; ".join(
            [*commands, " ".join(["python benchmarks/multitarget.py", *(argv or sys.argv[1:])])]
        )
        atomic_write_json(RESULTS, {"threads": args.threads, "targets": K, "batch": x.shape[0],
                                    "rows": rows, "command": command,
                                    "ceiling": ceiling})  # fmt: skip
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
