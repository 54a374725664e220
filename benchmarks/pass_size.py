"""Pass sizes and several-target backward passes: the measurements behind two defaults.

LeNet-5 (random weights), batch 256, fixed random targets, interleaved repeats (best of each):

* ``auto`` pass size (``rightfocus.attribution.base.PASS_ELEMENTS``; occlusion's own
  ``rightfocus.attribution.perturbation.OCCLUSION_PASS_ELEMENTS``): Integrated Gradients
  (10 steps), SmoothGrad (4 samples) and occlusion (7x7 windows) at ``internal_batch_size``
  ``auto`` / 128 / 256 / 512 / 1024 images per pass, in images/s;
* several targets (``batched_vjp``): 10 class targets in one call, its vector-Jacobian
  products one after another through the shared forward graph (the default) or batched by
  ``torch.func.vmap`` in chunks of 2 and 5 cotangents, as speed-ups over 10 separate calls.

Usage: ``python benchmarks/pass_size.py [--threads 2] [--repeats 7]``; prints two tables.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from typing import Any

import torch

import rightfocus.attribution.base as base
from rightfocus import attribute
from rightfocus.models.lenet import LeNet5

PASS_SIZES: tuple[int | str, ...] = ("auto", 128, 256, 512, 1024)
PASS_METHODS: dict[str, dict[str, Any]] = {
    "integrated_gradients": {"n_steps": 10},
    "smoothgrad": {"n_samples": 4, "stdev": 0.15, "relative": False, "seed": 0},
    "occlusion": {"window": (7, 7), "strides": (7, 7)},
}
VJP_METHODS = ("saliency", "input_x_gradient", "guided_backprop", "deeplift", "lrp")


def best_seconds(cases: dict[str, Callable[[], Any]], repeats: int) -> dict[str, float]:
    """Fastest of ``repeats`` interleaved rounds per case, after two warm-up calls each."""
    for fn in cases.values():
        fn()
        fn()
    best = dict.fromkeys(cases, float("inf"))
    for _ in range(repeats):
        for name, fn in cases.items():
            start = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def pass_sizes(model: torch.nn.Module, x: torch.Tensor, t: torch.Tensor, repeats: int) -> None:
    print(f"images/s by images per pass (auto = {base.PASS_ELEMENTS} input values per pass)")
    print(f"{'method':<22}" + "".join(f"{s!s:>9}" for s in PASS_SIZES))
    for method, opts in PASS_METHODS.items():
        cases = {
            str(size): (
                lambda size=size, method=method, opts=opts: attribute(
                    model, x, t, method, internal_batch_size=size, **opts
                )
            )
            for size in PASS_SIZES
        }
        secs = best_seconds(cases, repeats)
        print(f"{method:<22}" + "".join(f"{len(x) / secs[str(s)]:>9.0f}" for s in PASS_SIZES))


def several_targets(model: torch.nn.Module, x: torch.Tensor, repeats: int) -> None:
    targets = torch.randint(0, 10, (len(x), 10), generator=torch.Generator().manual_seed(1))
    original = base.batched_vjp

    def chunked(chunk: int | None) -> Callable[..., torch.Tensor]:
        def vjp(outputs: Any, inp: Any, cot: Any, create_graph: bool = False, **_: Any) -> Any:
            return original(outputs, inp, cot, create_graph, chunk=chunk)

        return vjp

    modes = {"one at a time": None, "vmap chunks of 2": 2, "vmap chunks of 5": 5}
    print("\n10 targets in one call: speed-up over 10 separate calls")
    print(f"{'method':<22}" + "".join(f"{m:>18}" for m in modes))
    for method in VJP_METHODS:

        def one_call(chunk: int | None, method: str = method) -> torch.Tensor:
            holders = [  # base and every module that imported the function by name
                m
                for key, m in list(sys.modules.items())
                if key.startswith("rightfocus.") and vars(m).get("batched_vjp") is original
            ]
            for holder in holders:
                holder.batched_vjp = chunked(chunk)
            try:
                return attribute(model, x, targets, method)
            finally:
                for holder in holders:
                    holder.batched_vjp = original

        cases: dict[str, Callable[[], Any]] = {
            m: (lambda chunk=chunk: one_call(chunk)) for m, chunk in modes.items()
        }
        cases["separate"] = lambda method=method: torch.stack(
            [attribute(model, x, targets[:, k], method) for k in range(10)], dim=1
        )
        secs = best_seconds(cases, repeats)
        print(f"{method:<22}" + "".join(f"{secs['separate'] / secs[m]:>17.2f}x" for m in modes))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = LeNet5().eval()
    x = torch.rand(256, 1, 28, 28)
    t = torch.randint(0, 10, (256,))
    pass_sizes(model, x, t, args.repeats)
    several_targets(model, x, args.repeats)


if __name__ == "__main__":
    main()
