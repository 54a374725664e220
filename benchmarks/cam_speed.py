"""CAM family speed: rightfocus vs pytorch-grad-cam and Captum (images/s, one interleaved run).

Models: LeNet-5 (1x28x28, batch 256) and torchvision ResNet-18 with random weights
(3x224x224, batch 16; Score-CAM at batch 1 there: 512 masked forwards per image), target layer
the last conv, fixed random class targets, ``torch.set_num_threads(threads)``.
Each pair computes the same result:
- pytorch-grad-cam returns ReLU'd, min-max scaled maps resized to the input, so ours run with
  ``normalize=True`` (upsampled, ReLU); Grad-CAM++ / XGrad-CAM with their ``eps``;
- Score-CAM: ours with ``weighting="channel_softmax", align_corners=True`` (their rule);
- Captum ``LayerGradCam`` stays at the layer resolution: ours with ``upsample=False``;
  Captum ``GuidedGradCam`` (nearest upsampling): ours with ``interpolation="nearest"``.
Repeats are interleaved (every case once per round) and the median is reported, because the
machine is shared (``torch.utils.benchmark`` timers, ``benchmarks/_timing.py``). Goals: Grad-CAM
family >= 1.2x pytorch-grad-cam and >= Captum; Score-CAM >= 2x pytorch-grad-cam on LeNet-5 and
>= 1.3x on ResNet-18. Score-CAM's ``precision="bfloat16"`` option is timed in the same rounds
(its own row) and its map error vs float32 reported with the agreement.

Usage: ``python benchmarks/cam_speed.py [--threads 2] [--repeats 5] [--model lenet5]``.
Writes ``benchmarks/results/cam_speed.json``. ``cam_rows(threads)`` is what
``benchmarks/attribution.py`` imports.
"""

from __future__ import annotations

import argparse
import sys
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from _timing import interleaved
from torch import Tensor, nn

from rightfocus import attribute
from rightfocus._io import atomic_write_json
from rightfocus._modules import last_conv
from rightfocus.models.lenet import LeNet5

RESULTS = Path(__file__).resolve().parent / "results" / "cam_speed.json"
GOALS = {"pytorch-grad-cam": 1.2, "captum": 1.0}
SCORECAM_GOAL = {"lenet5": 2.0, "resnet18": 1.3}  # per model
PGC: dict[
    str, tuple[str, dict[str, Any]]
] = {  # our name -> (pytorch-grad-cam class, our extra options for the same result)
    "gradcam": ("GradCAM", {}),
    "gradcam_plus_plus": ("GradCAMPlusPlus", {"eps": 1e-6}),
    "layercam": ("LayerCAM", {}),
    "xgradcam": ("XGradCAM", {"eps": 1e-7}),
    "scorecam": ("ScoreCAM", {"weighting": "channel_softmax", "align_corners": True}),
}

Pair = tuple[str, str, Callable[[], Any], Callable[[], Any]]  # method, peer, ours, theirs


def _models() -> list[tuple[str, nn.Module, Tensor, Tensor, int]]:
    import torchvision

    torch.manual_seed(0)
    lenet = LeNet5().eval()
    resnet = torchvision.models.resnet18(weights=None).eval()
    return [
        ("lenet5", lenet, torch.rand(256, 1, 28, 28), torch.randint(0, 10, (256,)), 256),
        ("resnet18", resnet, torch.randn(16, 3, 224, 224), torch.randint(0, 1000, (16,)), 1),
    ]


def _ours(model: nn.Module, x: Tensor, t: Tensor, name: str, **opts: Any) -> Callable[[], Any]:
    return lambda: attribute(model, x, t, name, **opts)


def _pgc_pairs(
    model: nn.Module, x: Tensor, t: Tensor, layer: nn.Module, score_b: int
) -> list[Pair]:
    try:
        import pytorch_grad_cam as pgc
        import pytorch_grad_cam.score_cam as pgc_score_cam
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    except ImportError:
        return []
    # its Score-CAM draws a progress bar per sample: silence it (this module's binding only)
    pgc_score_cam.tqdm = types.SimpleNamespace(tqdm=lambda it, **_: it)  # type: ignore[assignment]
    pairs: list[Pair] = []
    for name, (cls_name, opts) in PGC.items():
        xb, tb = (x[:score_b], t[:score_b]) if name == "scorecam" else (x, t)
        targets = [ClassifierOutputTarget(int(c)) for c in tb]
        cls = getattr(pgc, cls_name)

        def theirs(cls: Any = cls, xb: Tensor = xb, targets: list = targets) -> Any:
            # built per call: its hooks stay on the model until released
            with cls(model=model, target_layers=[layer]) as cam:
                return cam(input_tensor=xb, targets=targets)

        ours = _ours(model, xb, tb, name, layer=layer, normalize=True, **opts)
        pairs.append((name, "pytorch-grad-cam", ours, theirs))
    return pairs


def _captum_pairs(model: nn.Module, x: Tensor, t: Tensor, layer: nn.Module) -> list[Pair]:
    try:
        import captum.attr as ca
    except ImportError:
        return []
    return [
        ("gradcam", "captum", _ours(model, x, t, "gradcam", layer=layer, upsample=False),
         lambda: ca.LayerGradCam(model, layer).attribute(x, t, relu_attributions=True)),
        ("guided_gradcam", "captum",
         _ours(model, x, t, "guided_gradcam", layer=layer, interpolation="nearest"),
         lambda: ca.GuidedGradCam(model, layer).attribute(x, t)),
    ]  # fmt: skip


def cam_rows(
    threads: int = 2,
    repeats: int = 5,
    models: list[str] | None = None,
    methods: list[str] | None = None,
) -> list[dict]:
    """Time every (ours, peer) pair (of ``methods``, default all); one row per pair with both
    throughputs and the ratio."""
    torch.set_num_threads(threads)
    rows: list[dict] = []
    for tag, model, x, t, score_b in _models():
        if models and tag not in models:
            continue
        layer = last_conv(model)
        pairs = _pgc_pairs(model, x, t, layer, score_b) + _captum_pairs(model, x, t, layer)
        pairs = [p for p in pairs if methods is None or p[0] in methods]
        slow = [p for p in pairs if p[0] == "scorecam"]
        fast = [p for p in pairs if p[0] != "scorecam"]
        # Score-CAM on ResNet-18 is 512 forwards per image: fewer rounds, cold calls (a call
        # is hundreds of forwards, so the first one warms the rest up)
        heavy = tag != "lenet5"
        for group, reps, warmup in (
            (fast, repeats, 1),
            (slow, max(1, repeats // 2) if heavy else repeats, 0 if heavy else 1),
        ):
            if not group:
                continue
            print(f"{tag}: {len(group)} pairs x {reps} rounds", file=sys.stderr)
            fns = [f for p in group for f in p[2:]]
            bf16 = group is slow and bool(slow)
            if bf16:  # the bfloat16 option, timed in the same rounds against the same peer
                xb, tb = x[:score_b], t[:score_b]
                opts = {**PGC["scorecam"][1], "precision": "bfloat16"}
                fns.append(_ours(model, xb, tb, "scorecam", layer=layer, normalize=True, **opts))
            outs: list[Any] = [None] * len(fns)
            secs = interleaved(fns, reps, warmup, outputs=outs)
            if bf16:
                s, peer_s = secs[-1], secs[1]
                err = float((outs[-1] - outs[0]).abs().max())  # maps min-max scaled to [0, 1]
                rows.append({
                    "method": "scorecam (bfloat16)", "model": tag, "batch": score_b,
                    "ours_ips": score_b / s, "peer": "pytorch-grad-cam",
                    "peer_ips": score_b / peer_s, "ratio": peer_s / s, "impl": "rightfocus",
                    "images_per_s": score_b / s, "goal": SCORECAM_GOAL[tag],
                    "met": peer_s / s >= SCORECAM_GOAL[tag], "threads": threads, "rounds": reps,
                    "note": f"precision='bfloat16': max |map - float32 map| = {err:.3f} "
                            "(maps scaled to [0, 1])",
                })  # fmt: skip
            for j, (method, peer, _, _) in enumerate(group):
                batch = score_b if method == "scorecam" else x.shape[0]
                ours_s, peer_s = secs[2 * j], secs[2 * j + 1]
                goal = SCORECAM_GOAL[tag] if method == "scorecam" else GOALS[peer]
                rows.append({
                    "method": method, "model": tag, "batch": batch, "ours_ips": batch / ours_s,
                    "peer": peer, "peer_ips": batch / peer_s, "ratio": peer_s / ours_s,
                    "impl": "rightfocus", "images_per_s": batch / ours_s, "goal": goal,
                    "met": peer_s / ours_s >= goal, "threads": threads, "rounds": reps,
                })  # fmt: skip
    return rows


def agreement(model_tag: str = "lenet5", n: int = 8) -> dict[str, float]:
    """Max |ours - peer| on the benchmark settings (a same-result check, small batch)."""
    _, model, x, t, _ = next(m for m in _models() if m[0] == model_tag)
    x, t = x[:n], t[:n]
    layer = last_conv(model)
    out = {}
    for method, peer, ours, theirs in _pgc_pairs(model, x, t, layer, n) + _captum_pairs(
        model, x, t, layer
    ):
        a, b = ours().detach(), torch.as_tensor(theirs()).detach().to(torch.float32)
        out[f"{method} vs {peer}"] = float((a.reshape(b.shape) - b).abs().max())
    opts = PGC["scorecam"][1]
    exact = attribute(model, x, t, "scorecam", layer=layer, normalize=True, **opts)
    bf16 = attribute(model, x, t, "scorecam", layer=layer, normalize=True, precision="bfloat16",
                     **opts)  # fmt: skip
    out["scorecam bfloat16 vs float32"] = float((bf16 - exact).abs().max())
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--model", choices=["lenet5", "resnet18"], default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    agree = agreement()
    rows = cam_rows(args.threads, args.repeats, [args.model] if args.model else None)
    header = f"{'model':<9} {'method':<18} {'batch':>5} {'ours img/s':>11} {'peer':<17} " \
             f"{'peer img/s':>11} {'ratio':>7} {'goal':>6}"  # fmt: skip
    print(header + "\n" + "-" * len(header))
    for r in rows:
        mark = "" if r["met"] else "  MISSED"
        print(
            f"{r['model']:<9} {r['method']:<18} {r['batch']:>5} {r['ours_ips']:>11.1f} "
            f"{r['peer']:<17} {r['peer_ips']:>11.1f} {r['ratio']:>6.2f}x {r['goal']:>5}x{mark}"
        )
    print("\nmax |ours - peer| on 8 LeNet-5 images (outputs in [0, 1] for pytorch-grad-cam):")
    for k, v in agree.items():
        print(f"  {k:<34} {v:.2e}")
    meta = {"torch": torch.__version__, "threads": args.threads, "repeats": args.repeats}
    atomic_write_json(RESULTS, {"meta": meta, "rows": rows, "agreement": agree})
    print(f"\nwrote {RESULTS}")


if __name__ == "__main__":
    main()
