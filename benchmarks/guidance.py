"""Training-step cost of each guidance method relative to the plain step of the same model.

LeNet, batch 128 of 28x28 inputs with Decoy-style 4x4 masks on 70 % of the samples; one run,
interleaved repetitions, medians. Goals (issue 7): Bayesian feedback <= 1.15x the plain
Bayesian step; RRR <= 3x the plain deterministic step; X-Gradient prior <= 3x (on the X-DNN
LeNet, relative to its own plain step). Also the Proxy Attention step throughput (images/s
through prediction + CAM + replacement). Prints a table; writes benchmarks/results/guidance.json.

    .venv/bin/python benchmarks/guidance.py [--reps 15] [--threads 1]
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from _timing import interleaved_medians

from rightfocus import METHODS, bayes
from rightfocus._io import atomic_write_json
from rightfocus.guidance import RRR, BayesFeedback, GuidedBatch, XGradientPrior, guided_forward
from rightfocus.guidance.proxy_attention import ProxyDataset, proxy_step
from rightfocus.models import LeNet
from rightfocus.models.xdnn import to_xdnn


def _batch(n: int = 128) -> GuidedBatch:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(n, 1, 28, 28, generator=g)
    mask = torch.zeros(n, 1, 28, 28)
    mask[: int(0.7 * n), 0, :4, :4] = 1
    return GuidedBatch(x, torch.randint(0, 10, (n,), generator=g), mask)


def _step(model: torch.nn.Module, guidance: list, bayesian: bool) -> Callable[[], None]:
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    batch = _batch()
    model.train()

    def run() -> None:
        logits, b, terms = guided_forward(model, batch, guidance)
        if bayesian:
            loss = F.cross_entropy(logits, b.y, reduction="sum") + bayes.kl(model) / 32
        else:
            loss = F.cross_entropy(logits, b.y)
        loss = loss + sum(terms.values(), torch.zeros(()))
        opt.zero_grad()
        loss.backward()
        opt.step()

    return run


def _proxy_throughput(n: int = 512) -> dict[str, float]:
    method = "gradcam_plus_plus" if "gradcam_plus_plus" in METHODS else "gradcam"
    model = LeNet().eval()
    x = torch.rand(n, 1, 28, 28)
    items = [(x[i], (i % 10), torch.zeros(1, 28, 28)) for i in range(n)]
    ds = ProxyDataset(items)
    result = proxy_step(model, ds, method=method, subset=1.0, batch_size=128)
    return {
        "method": method,
        "images": n,
        "misclassified_changed": int(result.indices.numel()),
        "seconds": result.seconds,
        "images_per_s": result.images_per_second,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reps", type=int, default=15)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cases = {
        "plain (LeNet)": _step(LeNet(), [], False),
        "rrr": _step(LeNet(), [RRR(lam=1.0)], False),
        "plain (X-LeNet)": _step(to_xdnn(LeNet()), [], False),
        "xgradient_prior": _step(to_xdnn(LeNet()), [XGradientPrior(lam=1.0, gini_lam=0.1)], False),
        "plain (Bayesian LeNet)": _step(bayes.to_bayesian(LeNet()), [], True),
        "bayes_feedback": _step(bayes.to_bayesian(LeNet()), [BayesFeedback(lam=3e-4)], True),
    }
    med = interleaved_medians(cases, args.reps)
    baseline = {
        "plain (LeNet)": "plain (LeNet)",
        "rrr": "plain (LeNet)",
        "plain (X-LeNet)": "plain (X-LeNet)",
        "xgradient_prior": "plain (X-LeNet)",
        "plain (Bayesian LeNet)": "plain (Bayesian LeNet)",
        "bayes_feedback": "plain (Bayesian LeNet)",
    }
    goals = {"rrr": 3.0, "xgradient_prior": 3.0, "bayes_feedback": 1.15}
    rows = []
    print(f"{'case':<24}{'median ms':>11}{'x plain':>9}{'goal':>7}")
    for name, t in med.items():
        ratio = t / med[baseline[name]]
        goal = goals.get(name)
        rows.append({"case": name, "median_ms": 1e3 * t, "ratio": ratio, "goal": goal})
        print(f"{name:<24}{1e3 * t:>11.2f}{ratio:>9.2f}{(f'{goal:.2f}' if goal else ''):>7}")
    proxy = _proxy_throughput()
    print(
        f"proxy step ({proxy['method']}): {proxy['images_per_s']:.0f} images/s "
        f"({proxy['images']} images, {proxy['misclassified_changed']} changed)"
    )
    out = Path(__file__).parent / "results" / "guidance.json"
    atomic_write_json(
        out, {"reps": args.reps, "threads": args.threads, "steps": rows, "proxy": proxy}
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
