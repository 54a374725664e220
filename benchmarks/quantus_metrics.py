"""Evaluation metrics vs Quantus: deletion (pixel flipping) and the model-randomisation check.

Same trained LeNet (100 Adam steps on the bundled MNIST digits), same 256 images, same
attributions (``|saliency|``), one run, repeats interleaved (``torch.utils.benchmark`` timers,
``benchmarks/_timing.py``), median seconds. Timed with them: the *model floor* of each metric,
the work both libraries cannot avoid (the deletion curve's 256 x 29 forward passes in one
batch; the five saliency calls of the randomisation check, one per randomised layer);
Quantus's time over it bounds the speed-up any implementation doing the same model work can
reach.

- Deletion vs ``quantus.PixelFlipping``: 28 pixels per step on 28x28 images, so both remove
  the same top-attributed pixels at the same steps; removed pixels become 0 (Quantus:
  ``perturb_baseline=0.0``), scores are softmax probabilities of the target (``softmax=True``),
  attributions not re-normalised (ordering is all that matters). Quantus's curve starts after
  the first step; ours also has the unperturbed image at fraction 0, so Quantus's curve equals
  ``scores[:, 1:]`` (the maximum difference is reported; zero attributions are tied, so a
  ``1e-12`` ramp over the pixel index fixes one order for both).
- Randomisation vs ``quantus.MPRT`` (cascading, top-down, Spearman correlation of ``|a|``):
  both re-explain with the same saliency after randomising each layer; the random weights
  come from different generators (ours: a seeded ``torch.Generator`` with the layers' default
  initialisers; Quantus: ``torch.manual_seed`` and its own normal re-draw), so the correlations
  agree in trend (falling towards 0), not in value. Both are given the same attributions of
  the unmodified model (Quantus's ``a_batch``, our ``original=``): ours uses them; Quantus
  re-explains the unmodified model as well (its extra "original" entry), work outside the
  floor. Insertion has no Quantus equivalent.

Goal: >= 10x Quantus. Usage: ``python benchmarks/quantus_metrics.py [--images 256]``; writes
``benchmarks/results/quantus_metrics.json``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from _timing import interleaved

from rightfocus import attribute
from rightfocus._io import atomic_write_json
from rightfocus.data.mnist import bundled_mnist
from rightfocus.metrics.explanation import magnitude
from rightfocus.metrics.faithfulness import deletion
from rightfocus.metrics.sanity import model_randomisation_check
from rightfocus.models import LeNet

RESULTS = Path(__file__).resolve().parent / "results" / "quantus_metrics.json"
STEPS = 28


def _trained() -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
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
    return model.eval(), x, y


def main(argv: list[str] | None = None) -> None:
    import quantus

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    model, x, y = _trained()
    x, y = x[: args.images], y[: args.images]
    attr = magnitude(attribute(model, x, y, method="saliency"))  # (B, 1, H, W), |a| summed
    # break ties (zero gradients) by pixel index so both libraries remove pixels in one order
    n_pix = attr[0].numel()
    attr = attr + 1e-12 * (n_pix - torch.arange(n_pix, dtype=attr.dtype)).view(attr[0].shape)
    xn, yn, an = x.numpy(), y.numpy(), attr.numpy()
    n = x.shape[-1] * x.shape[-2]

    def explain_np(model: Any, inputs: np.ndarray, targets: np.ndarray, **_: Any) -> np.ndarray:
        xt = torch.as_tensor(inputs, dtype=torch.float32)
        return attribute(model, xt, torch.as_tensor(targets), method="saliency").numpy()

    flip = quantus.PixelFlipping(
        features_in_step=n // STEPS, perturb_baseline=0.0, normalise=False, abs=False,
        disable_warnings=True,
    )  # fmt: skip
    mprt = quantus.MPRT(layer_order="top_down", abs=True, normalise=False, disable_warnings=True,
                        return_average_correlation=False)  # fmt: skip
    cases = {
        "deletion: rightfocus": lambda: deletion(model, x, attr, y, steps=STEPS),
        "deletion: quantus PixelFlipping": lambda: flip(
            model=model,
            x_batch=xn,
            y_batch=yn,
            a_batch=an,
            device="cpu",
            softmax=True,
            batch_size=256,
        ),
        "randomisation: rightfocus": lambda: model_randomisation_check(
            model, x, y, "saliency", original=attr
        ),
        "randomisation: quantus MPRT": lambda: mprt(
            model=model,
            x_batch=xn,
            y_batch=yn,
            a_batch=an,
            device="cpu",
            explain_func=explain_np,
            batch_size=256,
        ),
    }
    # the floor: the model's forward passes alone over every (image, step) of the deletion
    # curve, in one batch (what both libraries must at least run); and the five saliency
    # passes of the randomisation check (one per randomised layer; both libraries are
    # given the attributions of the unmodified model)
    every = x.repeat(STEPS + 1, 1, 1, 1)
    n_layers = sum(1 for _, m in model.named_modules() if list(m.parameters(recurse=False)))

    def forwards() -> None:
        with torch.inference_mode():
            model(every)

    def saliencies() -> None:
        for _ in range(n_layers):
            attribute(model, x, y, method="saliency")

    cases["deletion: forward floor"] = forwards
    cases["randomisation: saliency floor"] = saliencies
    out_list: list[Any] = [None] * len(cases)
    interleaved(list(cases.values()), 1, warmup=0)  # one warm-up round (calls of seconds)
    secs = interleaved(list(cases.values()), args.repeats, warmup=0, outputs=out_list)
    med = dict(zip(cases, secs))
    outputs = dict(zip(cases, out_list))
    ours_curve = outputs["deletion: rightfocus"].scores[:, 1:].numpy()
    theirs_curve = np.asarray(outputs["deletion: quantus PixelFlipping"], dtype=np.float64)
    curve_diff = float(np.abs(ours_curve - theirs_curve).max())
    ours_r = outputs["randomisation: rightfocus"]
    theirs_r = outputs["randomisation: quantus MPRT"]
    theirs_layers = {k: float(np.mean(v)) for k, v in theirs_r.items()}
    rows = [
        {"metric": "deletion", "peer": "quantus PixelFlipping",
         "ours_s": med["deletion: rightfocus"], "peer_s": med["deletion: quantus PixelFlipping"],
         "floor_s": med["deletion: forward floor"], "max_curve_difference": curve_diff},
        {"metric": "randomisation", "peer": "quantus MPRT",
         "ours_s": med["randomisation: rightfocus"],
         "peer_s": med["randomisation: quantus MPRT"],
         "floor_s": med["randomisation: saliency floor"],
         "ours_correlations": dict(zip(ours_r.layers, ours_r.correlation)),
         "peer_correlations": theirs_layers},
    ]  # fmt: skip
    for r in rows:
        r["speedup"] = r["peer_s"] / r["ours_s"]
        r["max_speedup"] = r["peer_s"] / r["floor_s"]  # if all our time were the model's
        r["images"] = args.images
        print(f"{r['metric']:<14} ours {r['ours_s']:.3f} s  {r['peer']} {r['peer_s']:.3f} s  "
              f"-> {r['speedup']:.1f}x (goal >= 10x); model floor {r['floor_s']:.3f} s "
              f"(bound {r['max_speedup']:.1f}x)")  # fmt: skip
    print(f"deletion curves: max |ours - quantus| = {curve_diff:.2e}")
    print(
        "randomisation, ours:  ", {k: round(v, 3) for k, v in rows[1]["ours_correlations"].items()}
    )
    print("randomisation, quantus:", {k: round(v, 3) for k, v in theirs_layers.items()})
    command = " ".join(["python benchmarks/quantus_metrics.py", *(argv or sys.argv[1:])])
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    atomic_write_json(
        RESULTS,
        {"threads": args.threads, "steps": STEPS, "rows": rows, "command": command,
         "load_average": load, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())},
    )  # fmt: skip
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
