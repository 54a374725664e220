"""No-gradient max pooling: ``rightfocus._pooling.MaxPool2d`` vs ``torch.nn.MaxPool2d``.

Times a no-gradient forward (validation, Monte-Carlo test evaluation) of LeNet's two pools at the
evaluation batch (256 digits: 6x26x26 and 16x11x11 activations) and of a whole mean-network
LeNet forward, interleaved repetitions in one run (medians), one torch thread by default (the
reproduction's workers use one). Ratio = torch seconds / ours (higher is better). Goal: the
pools at least 3x faster; outputs identical (checked).

    .venv/bin/python benchmarks/pooling.py [--reps 15] [--threads 1] [--batch 256]
"""

from __future__ import annotations

import argparse
import copy

import torch
from _timing import interleaved_medians
from torch import nn

from rightfocus._pooling import MaxPool2d
from rightfocus.models import LeNet


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=15)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch", type=int, default=256)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    ours = LeNet().eval()
    plain = copy.deepcopy(ours)
    plain.features.pool1 = nn.MaxPool2d(2)
    plain.features.pool2 = nn.MaxPool2d(2)
    x = torch.rand(args.batch, 1, 28, 28)
    rows = []
    with torch.no_grad():
        for label, shape in (("pool1", (6, 26, 26)), ("pool2", (16, 11, 11))):
            a = torch.relu(torch.randn(args.batch, *shape))
            assert torch.equal(MaxPool2d(2)(a), nn.MaxPool2d(2)(a))
            t = interleaved_medians(
                {"torch": lambda a=a: nn.MaxPool2d(2)(a), "ours": lambda a=a: MaxPool2d(2)(a)},
                args.reps,
            )
            rows.append((f"{label} {args.batch}x{'x'.join(map(str, shape))}", t))
        assert torch.equal(ours(x), plain(x))
        t = interleaved_medians({"torch": lambda: plain(x), "ours": lambda: ours(x)}, args.reps)
        rows.append((f"LeNet forward, batch {args.batch}", t))
    print(f"no-gradient max pooling, {args.threads} thread(s), median of {args.reps}")
    print(f"{'case':34s} {'torch ms':>9s} {'ours ms':>9s} {'ratio':>6s}")
    for label, t in rows:
        print(
            f"{label:34s} {t['torch'] * 1e3:9.2f} {t['ours'] * 1e3:9.2f} "
            f"{t['torch'] / t['ours']:5.2f}x"
        )


if __name__ == "__main__":
    main()
