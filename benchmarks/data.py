"""Decoy MNIST generation speed: 60,000 images per variant (goal: < 2 s on this machine).

The 4,000 bundled training digits are tiled to 60,000 (the size of MNIST's training set); the
digits' loading is not timed, only ``make_decoy_mnist`` (positions, gray values, patches, masks).
Repeats are interleaved over the variants and the median is reported (the machine is shared).

Usage: ``python benchmarks/data.py [--n 60000] [--repeats 5] [--threads 1]``.
Writes ``benchmarks/results/data.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from rightfocus.data.decoy_mnist import VARIANTS, make_decoy_mnist
from rightfocus.data.mnist import bundled_mnist

GOAL_S = 2.0


def tiled_digits(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The bundled training digits repeated to ``n`` images."""
    (x, y), _ = bundled_mnist()
    reps = -(-n // x.shape[0])
    return x.repeat(reps, 1, 1, 1)[:n].contiguous(), y.repeat(reps)[:n].contiguous()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=60_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    x, y = tiled_digits(args.n)
    times: dict[str, list[float]] = {v: [] for v in VARIANTS}
    for r in range(args.repeats):
        for variant in VARIANTS:
            for train in (True, False):
                t0 = time.perf_counter()
                ds = make_decoy_mnist(x, y, variant, train=train, seed=r)
                dt = time.perf_counter() - t0
                assert len(ds) == args.n
                times[variant].append(dt)
                del ds
    rows = []
    print(f"Decoy MNIST generation, {args.n} images, {args.threads} thread(s)")
    print(f"{'variant':<10}{'median s':>10}{'min s':>10}{'images/s':>14}{'goal <2 s':>11}")
    for variant, ts in times.items():
        med = statistics.median(ts)
        rows.append(
            dict(
                variant=variant,
                n=args.n,
                median_s=med,
                min_s=min(ts),
                images_per_s=args.n / med,
                meets_goal=med < GOAL_S,
            )
        )
        ok = "yes" if med < GOAL_S else "NO"
        print(f"{variant:<10}{med:>10.3f}{min(ts):>10.3f}{args.n / med:>14,.0f}{ok:>11}")
    out = Path(__file__).parent / "results" / "data.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = dict(
        torch=torch.__version__,
        python=platform.python_version(),
        threads=args.threads,
        goal_s=GOAL_S,
    )
    out.write_text(json.dumps(dict(meta=meta, rows=rows), indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
