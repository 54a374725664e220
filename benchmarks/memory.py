"""Peak memory and speed of Integrated Gradients (50 steps) on ResNet-18, 224x224, batch 16.

rightfocus with its default ``internal_batch_size="auto"`` (pass size from the memory budget)
vs Captum's ``IntegratedGradients`` with ``internal_batch_size`` tuned (16 and 64 images per
pass) and with its default (all ``n_steps * B`` path points in one pass). Captum's default at
batch 16 is 800 ResNet-18 images in one forward+backward (about 19 GB), more than this shared
machine can give, so it is measured at batch 2 (100 images per pass) and its per-image peak
is reported with the extrapolation to batch 16.

Each case runs in a fresh subprocess; peak memory is the process's peak resident set size
(``ru_maxrss``) minus its resident size just before the call (model and input already built).

Usage: ``python benchmarks/memory.py [--threads 2] [--steps 50] [--cases A,B]``; writes
``benchmarks/results/memory.json``.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "memory.json"
STEPS = 50
CASES: dict[str, tuple[str, int, Any]] = {  # name -> (impl, batch, internal_batch_size)
    "rightfocus auto": ("rightfocus", 16, "auto"),
    "captum ibs=16": ("captum", 16, 16),
    "captum ibs=64": ("captum", 16, 64),
    "captum default (batch 2)": ("captum", 2, None),
}


def _rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * resource.getpagesize()


def run_case(name: str, threads: int, steps: int = STEPS) -> dict[str, Any]:
    """Run one case in this process; return its time and peak memory increase."""
    import torchvision

    from rightfocus import attribute

    torch.set_num_threads(threads)
    impl, batch, ibs = CASES[name]
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None).eval()
    x = torch.randn(batch, 3, 224, 224)
    t = torch.randint(0, 1000, (batch,))
    with torch.no_grad():
        model(x[:1])
    before = _rss_bytes()
    start = time.perf_counter()
    if impl == "rightfocus":
        attribute(model, x, t, "integrated_gradients", n_steps=steps, internal_batch_size=ibs)
    else:
        from captum.attr import IntegratedGradients

        IntegratedGradients(model).attribute(
            x, target=t, n_steps=steps, method="gausslegendre", internal_batch_size=ibs
        )
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    return {"case": name, "impl": impl, "batch": batch, "internal_batch_size": ibs, "steps": steps,
            "seconds": seconds, "images_per_s": batch / seconds,
            "peak_bytes": max(0, peak - before)}  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--steps", type=int, default=STEPS,
        help="IG steps (the peaks of 'auto' and of Captum's fixed pass sizes do not depend on "
        "it; time does; Captum's default is extrapolated to 50 steps)",
    )  # fmt: skip
    parser.add_argument("--case", default=None, help=argparse.SUPPRESS)
    parser.add_argument(
        "--cases", default=",".join(CASES), help=f"comma-separated subset of: {', '.join(CASES)}"
    )
    args = parser.parse_args(argv)
    if args.case:
        print(json.dumps(run_case(args.case, args.threads, args.steps)))
        return
    names = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = sorted(set(names) - set(CASES))
    if unknown:
        parser.error(f"unknown cases {unknown}; choose from {list(CASES)}")
    rows = []
    for name in names:
        proc = subprocess.run(
            [sys.executable, __file__, "--case", name, "--threads", str(args.threads),
             "--steps", str(args.steps)],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if proc.returncode != 0:
            row = {"case": name, "error": proc.stderr.strip().splitlines()[-1:]}
        else:
            row = json.loads(proc.stdout.strip().splitlines()[-1])
            row["peak_gb"] = row["peak_bytes"] / 2**30
            if row["internal_batch_size"] is None:  # all path points at once
                per_image = row["peak_bytes"] / (row["batch"] * args.steps)
                row["extrapolated_batch16_gb"] = per_image * 16 * STEPS / 2**30
        rows.append(row)
        extra = (f"  (-> ~{row['extrapolated_batch16_gb']:.1f} GB at batch 16)"
                 if "extrapolated_batch16_gb" in row else "")  # fmt: skip
        if "error" in row:
            print(f"{name:<26} ERROR {row['error']}", flush=True)
        else:
            print(f"{name:<26} {row['images_per_s']:>7.2f} img/s  peak {row['peak_gb']:.2f} GB"
                  f"{extra}", flush=True)  # fmt: skip
    from rightfocus._io import atomic_write_json

    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    command = " ".join(["python benchmarks/memory.py", *(sys.argv[1:] if argv is None else argv)])
    atomic_write_json(RESULTS, {"threads": args.threads, "steps": args.steps, "rows": rows,
                                "command": command, "load_average_after": load})  # fmt: skip
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
