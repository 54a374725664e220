"""Attribution speed, side by side: rightfocus vs Captum / Zennit vs the floor (images/s).

Same models, batches and targets for every implementation, in one run:
- LeNet-5, 1x28x28, batch 256; torchvision ResNet-18 (random weights), 3x224x224, batch 16.
- Floor: one forward + one ``torch.autograd.grad`` of the target scores to the input (model
  parameters frozen, as our methods freeze them); for CAMs, to the target layer's activation.
Repeats are interleaved (round-robin over every case) and the median time is reported, because
the machine is shared. Rows of ``benchmarks/cam_speed.py:cam_rows(threads)`` and
``benchmarks/attribution_tail.py:tail_rows(threads)`` are included when those files exist.

Usage: ``python benchmarks/attribution.py [--quick] [--only NAME] [--model M] [--threads 2]``.
Writes ``benchmarks/results/attribution.json``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

import rightfocus
from rightfocus import METHODS, attribute
from rightfocus.models.lenet import LeNet5

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "attribution.json"

# Per-model options that keep every method's cost bounded (the same for ours and the peers).
IG_STEPS = 50
NT_SAMPLES = 10
KS_SAMPLES = 200  # Kernel SHAP coalitions per image (LeNet-5 only: ResNet-18 would take minutes)
BENCH_OPTIONS: dict[str, dict[str, dict[str, Any]]] = {
    "lenet5": {
        "integrated_gradients": {"n_steps": IG_STEPS},
        "occlusion": {"window": (7, 7), "strides": (7, 7)},
        "noise": {"n_samples": NT_SAMPLES, "stdev": 0.15, "relative": False},
        "deepshap": {"baselines": torch.rand(8, 1, 28, 28, generator=torch.Generator().manual_seed(0))},  # noqa: E501
        "kernel_shap": {"num_samples": KS_SAMPLES, "segments": "grid", "n_segments": 16},
    },
    "resnet18": {
        "integrated_gradients": {"n_steps": IG_STEPS, "internal_batch_size": 64},
        "occlusion": {"window": (56, 56), "strides": (56, 56)},
        "noise": {"n_samples": NT_SAMPLES, "stdev": 0.15, "relative": False,
                  "internal_batch_size": 64},
        "deepshap": {"baselines": torch.rand(4, 3, 224, 224, generator=torch.Generator().manual_seed(0)),  # noqa: E501
                     "internal_batch_size": 16},
    },
}  # fmt: skip
GOALS = {  # (ours, reference impl, minimum ratio ours/reference)
    "saliency": ("floor", 0.95),
    "input_x_gradient": ("floor", 0.95),
    "guided_backprop": ("floor", 0.95),
    "integrated_gradients": ("captum", 1.5),
    "deeplift": ("captum", 1.0),
    "deepshap": ("captum", 1.0),
    "kernel_shap": ("captum", 1.0),
    "lrp": ("zennit", 1.0),
}


@dataclass
class Case:
    model: str
    method: str
    impl: str
    batch: int
    fn: Callable[[], Any]
    note: str = ""


def _ours(model: nn.Module, x: torch.Tensor, t: torch.Tensor, name: str, **opts: Any):
    return lambda: attribute(model, x, t, name, **opts)


def _floor_input(model: nn.Module, x: torch.Tensor, t: torch.Tensor) -> Callable[[], Any]:
    def run() -> torch.Tensor:
        params = [p for p in model.parameters() if p.requires_grad]
        for p in params:
            p.requires_grad_(False)
        try:
            inp = x.detach().requires_grad_(True)
            out = model(inp)
            return torch.autograd.grad(out.gather(1, t[:, None]).sum(), inp)[0]
        finally:
            for p in params:
                p.requires_grad_(True)

    return run


def _floor_layer(
    model: nn.Module, x: torch.Tensor, t: torch.Tensor, layer: nn.Module
) -> Callable[[], Any]:
    def run() -> torch.Tensor:
        params = [p for p in model.parameters() if p.requires_grad]
        for p in params:
            p.requires_grad_(False)
        acts: list[torch.Tensor] = []
        handle = layer.register_forward_hook(lambda _m, _i, o: acts.append(o))
        try:
            out = model(x.detach().requires_grad_(True))
            return torch.autograd.grad(out.gather(1, t[:, None]).sum(), acts[0])[0]
        finally:
            handle.remove()
            for p in params:
                p.requires_grad_(True)

    return run


def _captum_cases(tag: str, model, x, t, layer, opts) -> list[tuple[str, Callable[[], Any]]]:
    try:
        import captum.attr as ca
    except ImportError:
        return []
    ig, occ, nt = opts["integrated_gradients"], opts["occlusion"], opts["noise"]
    C = x.shape[1]
    win, stride = (C, *occ["window"]), (C, *occ["strides"])
    nt_bs = nt.get("internal_batch_size")
    nt_kw = {"nt_samples": nt["n_samples"], "stdevs": nt["stdev"]}
    if nt_bs:
        nt_kw["nt_samples_batch_size"] = max(1, nt_bs // x.shape[0])
    return [
        ("saliency", lambda: ca.Saliency(model).attribute(x, t, abs=False)),
        ("input_x_gradient", lambda: ca.InputXGradient(model).attribute(x, t)),
        ("integrated_gradients", lambda: ca.IntegratedGradients(model).attribute(
            x, target=t, n_steps=ig["n_steps"], method="gausslegendre",
            internal_batch_size=ig.get("internal_batch_size"))),
        ("guided_backprop", lambda: ca.GuidedBackprop(model).attribute(x, t)),
        ("deconvnet", lambda: ca.Deconvolution(model).attribute(x, t)),
        ("smoothgrad", lambda: ca.NoiseTunnel(ca.Saliency(model)).attribute(
            x, nt_type="smoothgrad", target=t, abs=False, **nt_kw)),
        ("occlusion", lambda: ca.Occlusion(model).attribute(
            x, win, stride, baselines=0.0, target=t, perturbations_per_eval=max(1, 512 // len(x)))),
        ("gradcam", lambda: ca.LayerGradCam(model, layer).attribute(x, t, relu_attributions=True)),
        *_captum_reference_cases(ca, tag, model, x, t, opts),
        *_captum_lrp_cases(ca, model, x, t),
    ]  # fmt: skip


def _captum_lrp_cases(ca, model, x, t) -> list[tuple[str, Callable[[], Any]]]:
    """Captum's LRP with epsilon-plus rules (z+ = Alpha1_Beta0 on convs, epsilon on dense), on a
    copy of the model because Captum stores its rules as module attributes; skipped with a note
    where Captum's LRP refuses the model."""
    import copy

    from captum.attr._utils.lrp_rules import Alpha1_Beta0_Rule, EpsilonRule

    lrp_model = copy.deepcopy(model)
    for m in lrp_model.modules():
        if isinstance(m, nn.Conv2d):
            m.rule = Alpha1_Beta0_Rule()
        elif isinstance(m, nn.Linear):
            m.rule = EpsilonRule(epsilon=1e-6)
    try:
        ca.LRP(lrp_model).attribute(x[:2], target=t[:2])
    except Exception as err:  # any refusal means "not supported"
        print(f"  captum LRP skipped: {type(err).__name__}: {err}", file=sys.stderr)
        return []
    return [("lrp", lambda: ca.LRP(lrp_model).attribute(x, target=t))]


def _captum_reference_cases(ca, tag, model, x, t, opts) -> list[tuple[str, Callable[[], Any]]]:
    """DeepLift / DeepLiftShap (LeNet-5 only: Captum refuses ResNet-18's reused ReLU modules)
    and KernelShap on the same grid of superpixels as ours (where ``opts`` has kernel_shap)."""
    from rightfocus.attribution.surrogate import grid_segments

    cases: list[tuple[str, Callable[[], Any]]] = []
    if tag == "lenet5":
        refs = opts["deepshap"]["baselines"]
        cases += [
            ("deeplift", lambda: ca.DeepLift(model).attribute(x, 0.0, t)),
            ("deepshap", lambda: ca.DeepLiftShap(model).attribute(x, refs, t)),
        ]
    if "kernel_shap" in opts:
        ks = opts["kernel_shap"]
        _, C, H, W = x.shape
        mask = grid_segments(H, W, ks["n_segments"])[None, None].expand(1, C, H, W)
        n = ks["num_samples"]
        cases.append(("kernel_shap", lambda: ca.KernelShap(model).attribute(
            x, baselines=0.0, target=t, feature_mask=mask, n_samples=n,
            perturbations_per_eval=n)))  # fmt: skip
    return cases


def _zennit_cases(model, x, t, opts) -> list[tuple[str, Callable[[], Any]]]:
    try:
        from zennit.attribution import Gradient, IntegratedGradients, SmoothGrad
        from zennit.composites import DeconvNet, EpsilonPlus, GuidedBackprop
        from zennit.torchvision import ResNetCanonizer
    except ImportError:
        return []
    import torchvision

    is_resnet = isinstance(model, torchvision.models.ResNet)
    epsilon_plus = EpsilonPlus(canonizers=[ResNetCanonizer()] if is_resnet else None)
    n_classes = model(x[:1]).shape[1]
    onehot = torch.eye(n_classes, dtype=x.dtype)[t]

    def run(attributor_cls: type, composite: Any = None, **kw: Any) -> Callable[[], Any]:
        def call() -> Any:
            with attributor_cls(model=model, composite=composite, **kw) as attributor:
                return attributor(x, onehot)[1]

        return call

    nt = opts["noise"]
    return [
        ("saliency", run(Gradient)),
        ("guided_backprop", run(Gradient, GuidedBackprop())),
        ("deconvnet", run(Gradient, DeconvNet())),
        ("integrated_gradients", run(IntegratedGradients, n_iter=opts["integrated_gradients"]["n_steps"])),  # noqa: E501
        ("smoothgrad", run(SmoothGrad, n_iter=nt["n_samples"], noise_level=nt["stdev"])),
        ("lrp", run(Gradient, epsilon_plus)),
    ]  # fmt: skip


def build_cases(tag: str, model: nn.Module, x: torch.Tensor, t: torch.Tensor) -> list[Case]:
    from rightfocus._modules import last_conv

    opts = BENCH_OPTIONS[tag]
    layer = last_conv(model)
    B = x.shape[0]
    cases = [
        Case(tag, "floor", "floor", B, _floor_input(model, x, t), "forward + grad to input"),
        Case(tag, "floor_layer", "floor", B, _floor_layer(model, x, t, layer), "to last conv"),
    ]
    for name, cls in METHODS.items():
        if cls.needs_layer and name != "gradcam":
            continue  # the CAM family is timed by benchmarks/cam_speed.py
        if name in ("smoothgrad", "smoothgrad_sq", "vargrad"):
            method_opts = dict(opts["noise"], seed=0)
        elif name == "kernel_shap" and name in opts:
            method_opts = dict(opts[name], seed=0)
        elif cls.stochastic:
            continue  # long-tail stochastic methods: benchmarks/attribution_tail.py
        else:
            method_opts = dict(opts.get(name, {}))
        cases.append(Case(tag, name, "rightfocus", B, _ours(model, x, t, name, **method_opts)))
    for name, fn in _captum_cases(tag, model, x, t, layer, opts):
        cases.append(Case(tag, name, "captum", B, fn))
    for name, fn in _zennit_cases(model, x, t, opts):
        cases.append(Case(tag, name, "zennit", B, fn))
    return cases


def time_cases(cases: list[Case], repeats: int, warmup: int = 1) -> dict[int, list[float]]:
    """Interleaved timing: every repeat runs every case once, in order."""
    times: dict[int, list[float]] = {i: [] for i in range(len(cases))}
    for rep in range(warmup + repeats):
        for i, case in enumerate(cases):
            start = time.perf_counter()
            case.fn()
            elapsed = time.perf_counter() - start
            if rep >= warmup:
                times[i].append(elapsed)
        print(f"  repeat {rep + 1}/{warmup + repeats} done", file=sys.stderr)
    return times


def _models() -> list[tuple[str, nn.Module, torch.Tensor, torch.Tensor]]:
    import torchvision

    torch.manual_seed(0)
    lenet = LeNet5().eval()
    resnet = torchvision.models.resnet18(weights=None).eval()
    x1 = torch.rand(256, 1, 28, 28)
    x2 = torch.randn(16, 3, 224, 224)
    return [
        ("lenet5", lenet, x1, torch.randint(0, 10, (256,))),
        ("resnet18", resnet, x2, torch.randint(0, 1000, (16,))),
    ]


def _extra_rows(module_file: str, func: str, threads: int) -> list[dict[str, Any]]:
    path = HERE / module_file
    if not path.exists():
        return []
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    if not hasattr(mod, func):
        return []
    return [dict(row, source=module_file) for row in getattr(mod, func)(threads)]


def measure(args: argparse.Namespace) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for tag, model, x, t in _models():
        if args.model and tag != args.model:
            continue
        cases = build_cases(tag, model, x, t)
        if args.only:
            cases = [c for c in cases if c.method in (args.only, "floor", "floor_layer")]
        repeats = (3 if tag == "lenet5" else 1) if args.quick else (9 if tag == "lenet5" else 3)
        print(f"{tag}: {len(cases)} cases x {repeats} repeats", file=sys.stderr)
        times = time_cases(cases, repeats)
        for i, case in enumerate(cases):
            med = statistics.median(times[i])
            rows.append(
                {
                    "model": case.model,
                    "method": case.method,
                    "impl": case.impl,
                    "batch": case.batch,
                    "seconds": med,
                    "images_per_s": case.batch / med,
                    "repeats": len(times[i]),
                    "note": case.note,
                }
            )
    return rows


def add_ratios(rows: list[dict[str, Any]]) -> None:
    """ours/floor and ours/peer throughput ratios, per model."""
    by = {(r["model"], r["method"], r["impl"]): r["images_per_s"] for r in rows}
    for r in rows:
        if r["impl"] != "rightfocus":
            continue
        floor_name = "floor_layer" if METHODS.get(r["method"]).needs_layer else "floor"
        floor = by.get((r["model"], floor_name, "floor"))
        if floor:
            r["vs_floor"] = r["images_per_s"] / floor
        for peer in ("captum", "zennit"):
            if (r["model"], r["method"], peer) in by:
                r[f"vs_{peer}"] = r["images_per_s"] / by[(r["model"], r["method"], peer)]


def check_goals(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for r in rows:
        goal = GOALS.get(r["method"])
        if r["impl"] != "rightfocus" or goal is None:
            continue
        ref, minimum = goal
        ratio = r.get("vs_floor" if ref == "floor" else f"vs_{ref}")
        if ratio is not None:
            out.append({"model": r["model"], "method": r["method"], "vs": ref, "ratio": ratio,
                        "goal": minimum, "met": ratio >= minimum})  # fmt: skip
    return out


def print_table(rows: list[dict[str, Any]], goals: list[dict[str, Any]]) -> None:
    def fmt(v: Any) -> str:
        return f"{v:.2f}x" if isinstance(v, float) else ""

    header = f"{'model':<9} {'method':<21} {'impl':<11} {'img/s':>10} {'vs floor':>9} " \
             f"{'vs captum':>10} {'vs zennit':>10}"  # fmt: skip
    print(header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{r.get('model', ''):<9} {r.get('method', ''):<21} {r.get('impl', ''):<11} "
            f"{r.get('images_per_s', float('nan')):>10.1f} {fmt(r.get('vs_floor')):>9} "
            f"{fmt(r.get('vs_captum')):>10} {fmt(r.get('vs_zennit')):>10}"
        )
    if goals:
        print("\nGoals:")
        for g in goals:
            status = "met" if g["met"] else "MISSED"
            print(f"  {g['model']:<9} {g['method']:<21} {g['ratio']:.2f}x {g['vs']} "
                  f"(goal >= {g['goal']}x): {status}")  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    parser.add_argument("--only", default=None, help="time only this method (and the floors)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--model",
        choices=["lenet5", "resnet18"],
        default=None,
        help="time only this model (default: both)",
    )
    args = parser.parse_args(argv)
    if args.only and args.only not in METHODS:
        METHODS.get(args.only)  # raises with the known names
    torch.set_num_threads(args.threads)
    rows = measure(args)
    add_ratios(rows)
    if not args.only:
        rows += _extra_rows("cam_speed.py", "cam_rows", args.threads)
        rows += _extra_rows("attribution_tail.py", "tail_rows", args.threads)
    goals = check_goals(rows)
    print_table(rows, goals)
    meta = {
        "torch": torch.__version__,
        "rightfocus": rightfocus.__version__,
        "threads": args.threads,
        "quick": args.quick,
        "python": platform.python_version(),
        "ig_steps": IG_STEPS,
        "noise_samples": NT_SAMPLES,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"meta": meta, "rows": rows, "goals": goals}, indent=2))
    print(f"\nwrote {RESULTS}")


if __name__ == "__main__":
    main()
