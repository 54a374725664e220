"""Deletion/insertion for 256 MNIST images at 28 steps: batched vs a per-image loop.

Both are bound by the model's forward passes (256 x 29 of them); batching removes the per-call
overhead, so the speed-up is largest for small models (LeNet) and shrinks for large ones.

The per-image loop (one forward per image and step, like Quantus's known bottleneck) computes
exactly the same curves; the goal is a >= 10x speed-up. Prints a table and writes JSON to
benchmarks/results/metrics.json.  Run: python benchmarks/metrics.py
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from rightfocus.attribution import attribute
from rightfocus.data.mnist import bundled_mnist
from rightfocus.metrics.faithfulness import baseline_image, deletion
from rightfocus.models import LeNet


def per_image_deletion(model, x, attr, target, steps=28):  # type: ignore[no-untyped-def]
    """The same deletion curve, one image and one step at a time."""
    out = torch.empty(x.shape[0], steps + 1)
    n = x.shape[-1] * x.shape[-2]
    counts = torch.round(torch.linspace(0, n, steps + 1)).long()
    with torch.no_grad():
        for i in range(x.shape[0]):
            order = attr[i].abs().sum(0).flatten().argsort(descending=True)
            base = baseline_image(x[i : i + 1], "zero")[0]
            for s in range(steps + 1):
                img = x[i].clone().flatten(1)
                img[:, order[: counts[s]]] = base.flatten(1)[:, order[: counts[s]]]
                p = model(img.view(1, *x.shape[1:])).softmax(-1)[0, target[i]]
                out[i, s] = p
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    (x, y), _ = bundled_mnist()
    model = LeNet()
    opt = torch.optim.Adam(model.parameters(), 2e-3)
    for _ in range(100):
        idx = torch.randint(0, len(x), (64,))
        loss = F.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    x, y = x[: args.images], y[: args.images]
    attr = attribute(model, x, y, method="saliency", abs=True)
    batched_t, loop_t = [], []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        curve = deletion(model, x, attr, y, steps=28)
        batched_t.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        ref = per_image_deletion(model, x, attr, y, steps=28)
        loop_t.append(time.perf_counter() - t0)
    assert torch.allclose(curve.scores, ref, atol=1e-5), "batched and per-image curves differ"
    b, loop = statistics.median(batched_t), statistics.median(loop_t)
    result = {
        "images": args.images,
        "steps": 28,
        "batched_s": b,
        "per_image_s": loop,
        "speedup": loop / b,
    }
    print(f"{'method':<22}{'seconds':>10}")
    print(f"{'batched deletion':<22}{b:>10.3f}")
    print(f"{'per-image loop':<22}{loop:>10.3f}")
    print(f"speed-up: {loop / b:.1f}x (goal >= 10x)")
    out = Path(__file__).parent / "results" / "metrics.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
