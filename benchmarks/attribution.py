"""Attribution speed, side by side: rightfocus vs its peers vs the floor (images/s, one run).

Every registered method has an entry in :data:`TABLE` (a test checks this): the options it
runs with on each model, and the peer libraries that have it. Same models, batches, targets
and options for every implementation:

- LeNet-5, 1x28x28, batch 256; torchvision ResNet-18 (random weights), 3x224x224, batch 16;
  a ViT-Tiny/16 (timm, random weights), 3x224x224, batch 8, for the attention methods.
- Floor: one forward + one ``torch.autograd.grad`` of the target scores to the input (model
  parameters frozen, as our methods freeze them).
- The CAM family is timed against pytorch-grad-cam and Captum by ``benchmarks/cam_speed.py``
  (same run, its rows are merged here).

Each method is timed as one group: ours, every peer and the floor, repeats interleaved
(round-robin, ``torch.utils.benchmark`` timers, see ``benchmarks/_timing.py``) and the median
kept, because the machine is shared; ratios are within a group. On the large models the
methods of many passes get one timed round after a warm-up on 2 images.
Each group's rows are printed as soon as it finishes and the results file is rewritten after
every group, so a stopped run keeps what it measured.

Usage: ``python benchmarks/attribution.py [--quick] [--only NAME] [--model M] [--threads 2]``.
``--quick``: fewer repeats and cheaper settings (IG steps, noise samples, coalitions, masks),
the same batches.
A complete run (no ``--only``/``--model``) writes ``benchmarks/results/attribution.json``;
partial runs write ``benchmarks/results/attribution.<model>[.<method>].partial.json`` and never
touch it.
"""

from __future__ import annotations

import argparse
import copy
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from _timing import interleaved
from torch import nn

import rightfocus
from rightfocus import METHODS, attribute
from rightfocus._io import atomic_write_json
from rightfocus.models.lenet import LeNet5

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "attribution.json"


def partial_path(model: str | None, only: str | None) -> Path:
    """Where a partial run (or a full run still in progress) keeps its rows."""
    suffix = f".{only}" if only else ""
    return HERE / "results" / f"attribution.{model or 'all'}{suffix}.partial.json"


MODELS = ("lenet5", "resnet18", "vit")

IG_STEPS = 50
NT_SAMPLES = 10
_G = torch.Generator().manual_seed(0)
LENET_REFS = torch.rand(8, 1, 28, 28, generator=_G)
RESNET_REFS = torch.rand(4, 3, 224, 224, generator=_G)


@dataclass
class Entry:
    """How a method is benchmarked: our options per model (a model missing from ``models`` is
    not timed there, ``skip`` says why) and the peers that implement the same computation."""

    models: dict[str, dict[str, Any]]
    peers: tuple[str, ...] = ()
    script: str = "attribution.py"
    skip: dict[str, str] = field(default_factory=dict)
    floor: bool = False  # report ours / floor (methods that are one gradient pass)


_NT = {"n_samples": NT_SAMPLES, "stdev": 0.15, "relative": False, "seed": 0}
_CAM = "cam_speed.py"
TABLE: dict[str, Entry] = {
    "saliency": Entry({"lenet5": {}, "resnet18": {}}, ("captum", "zennit"), floor=True),
    "input_x_gradient": Entry({"lenet5": {}, "resnet18": {}}, ("captum",), floor=True),
    "guided_backprop": Entry({"lenet5": {}, "resnet18": {}}, ("captum", "zennit"), floor=True),
    "deconvnet": Entry({"lenet5": {}, "resnet18": {}}, ("captum", "zennit"), floor=True),
    "integrated_gradients": Entry(
        {"lenet5": {"n_steps": IG_STEPS}, "resnet18": {"n_steps": IG_STEPS}},
        ("captum", "zennit"),
    ),
    "smoothgrad": Entry({"lenet5": _NT, "resnet18": _NT}, ("captum", "zennit")),
    "smoothgrad_sq": Entry({"lenet5": _NT, "resnet18": _NT}, ("captum",)),
    "vargrad": Entry({"lenet5": _NT, "resnet18": _NT}, ("captum",)),
    "occlusion": Entry(
        {
            "lenet5": {"window": (7, 7), "strides": (7, 7)},
            "resnet18": {"window": (56, 56), "strides": (56, 56)},
        },
        ("captum",),
    ),
    "lrp": Entry(
        {"lenet5": {"composite": "epsilon_plus"}, "resnet18": {"composite": "epsilon_plus"}},
        ("zennit", "captum"),
    ),
    "deeplift": Entry(
        {"lenet5": {}, "resnet18": {}},
        ("captum",),
        skip={"resnet18:captum": "Captum's DeepLift refuses ResNet-18's reused ReLU modules"},
    ),
    "deepshap": Entry(
        {"lenet5": {"baselines": LENET_REFS}, "resnet18": {"baselines": RESNET_REFS}},
        ("captum",),
        skip={"resnet18:captum": "Captum's DeepLiftShap refuses ResNet-18's reused ReLU modules"},
    ),
    "kernel_shap": Entry(
        {
            "lenet5": {"num_samples": 200, "segments": "grid", "n_segments": 16, "seed": 0},
            "resnet18": {"num_samples": 200, "segments": "grid", "n_segments": 49, "seed": 0},
        },
        ("captum",),
    ),
    "lime": Entry(
        {
            "lenet5": {"num_samples": 200, "segments": "grid", "n_segments": 16, "seed": 0},
            "resnet18": {"num_samples": 200, "segments": "grid", "n_segments": 49, "seed": 0},
        },
        ("captum",),
    ),
    "rise": Entry(
        {
            "lenet5": {"n_masks": 500, "grid_size": 7, "seed": 0},
            "resnet18": {"n_masks": 200, "grid_size": 7, "seed": 0},
        },
        skip={"*": "no installed peer implements RISE (Captum, Zennit, pytorch-grad-cam do not)"},
    ),
    "attention_rollout": Entry(
        {"vit": {}}, skip={"*": "no installed peer implements attention rollout"}
    ),
    "attention_gradient": Entry(
        {"vit": {}}, skip={"*": "no installed peer implements gradient x attention"}
    ),
    # the CAM family: benchmarks/cam_speed.py (vs pytorch-grad-cam and Captum)
    "cam": Entry({}, script=_CAM, skip={"*": "timed by cam_speed.py only as part of gradcam"}),
    "gradcam": Entry({}, ("pytorch-grad-cam", "captum"), script=_CAM),
    "gradcam_plus_plus": Entry({}, ("pytorch-grad-cam",), script=_CAM),
    "layercam": Entry({}, ("pytorch-grad-cam",), script=_CAM),
    "xgradcam": Entry({}, ("pytorch-grad-cam",), script=_CAM),
    "scorecam": Entry({}, ("pytorch-grad-cam",), script=_CAM),
    "guided_gradcam": Entry({}, ("captum",), script=_CAM),
}

GOALS = {  # method -> minimum ours / fastest peer (or floor)
    "saliency": 0.95,  # vs floor
    "input_x_gradient": 0.95,
    "guided_backprop": 0.95,
    "deconvnet": 0.95,
}
CHEAP = ("saliency", "input_x_gradient", "guided_backprop", "deconvnet", "lrp", "deeplift")
"""Methods of one or two passes: on the large models the others get one timed round, after a
warm-up round on ``WARMUP_IMAGES`` images (lazy set-up, thread pools, hooks) instead of a full
one."""
WARMUP_IMAGES = 2
QUICK_OPTIONS = {  # --quick: cheaper settings (the same for ours and the peers), same batches
    "integrated_gradients": {"n_steps": 10},
    "smoothgrad": {"n_samples": 4},
    "smoothgrad_sq": {"n_samples": 4},
    "vargrad": {"n_samples": 4},
    "kernel_shap": {"num_samples": 50},
    "lime": {"num_samples": 50},
    "rise": {"n_masks": 100},
}


# --- models ----------------------------------------------------------------------------------


def build(tag: str) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """Model (eval, random weights), batch and fixed random class targets for ``tag``."""
    torch.manual_seed(0)
    if tag == "lenet5":
        return LeNet5().eval(), torch.rand(256, 1, 28, 28), torch.randint(0, 10, (256,))
    if tag == "resnet18":
        import torchvision

        model = torchvision.models.resnet18(weights=None).eval()
        return model, torch.randn(16, 3, 224, 224), torch.randint(0, 1000, (16,))
    from rightfocus.models import build_model

    vit = build_model(
        "vit", image_size=224, patch_size=16, embed_dim=192, depth=12, num_heads=3
    ).eval()
    x = torch.randn(8, 3, 224, 224)
    with torch.no_grad():
        classes = vit(x[:1]).shape[1]
    return vit, x, torch.randint(0, classes, (8,))


# --- the floor and the peers ------------------------------------------------------------------


def floor(model: nn.Module, x: torch.Tensor, t: torch.Tensor) -> Callable[[], Any]:
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


def _superpixel_mask(x: torch.Tensor, n_segments: int) -> torch.Tensor:
    from rightfocus.attribution.surrogate import grid_segments

    _, C, H, W = x.shape
    return grid_segments(H, W, n_segments)[None, None].expand(1, C, H, W)


def captum_case(
    method: str, model: nn.Module, x: torch.Tensor, t: torch.Tensor, opts: dict[str, Any]
) -> Callable[[], Any] | None:
    """Captum's implementation of ``method`` with the same settings (None: Captum lacks it)."""
    import captum.attr as ca

    nt_kinds = {"smoothgrad": "smoothgrad", "smoothgrad_sq": "smoothgrad_sq", "vargrad": "vargrad"}
    if method == "saliency":
        return lambda: ca.Saliency(model).attribute(x, t, abs=False)
    if method == "input_x_gradient":
        return lambda: ca.InputXGradient(model).attribute(x, t)
    if method == "guided_backprop":
        return lambda: ca.GuidedBackprop(model).attribute(x, t)
    if method == "deconvnet":
        return lambda: ca.Deconvolution(model).attribute(x, t)
    if method == "integrated_gradients":
        # the fastest of Captum's settings measured here: all steps of the batch at once on
        # LeNet-5; on ResNet-18 that needs ~19 GB, so 64 images per pass there
        ibs = None if x.shape[-1] <= 64 else 64
        return lambda: ca.IntegratedGradients(model).attribute(
            x, target=t, n_steps=opts["n_steps"], method="gausslegendre", internal_batch_size=ibs
        )
    if method in nt_kinds:
        n = opts["n_samples"]
        per = max(1, 512 // x.shape[0]) if x.shape[-1] <= 64 else max(1, 64 // x.shape[0])
        return lambda: ca.NoiseTunnel(ca.Saliency(model)).attribute(
            x, nt_type=nt_kinds[method], nt_samples=n, stdevs=opts["stdev"], target=t,
            abs=False, nt_samples_batch_size=per,
        )  # fmt: skip
    if method == "occlusion":
        C = x.shape[1]
        win, stride = (C, *opts["window"]), (C, *opts["strides"])
        ppe = max(1, 512 // len(x)) if x.shape[-1] <= 64 else 4
        return lambda: ca.Occlusion(model).attribute(
            x, win, stride, baselines=0.0, target=t, perturbations_per_eval=ppe
        )
    if method == "deeplift":
        ca.DeepLift(model).attribute(x[:2], 0.0, t[:2])  # refusals raise here
        return lambda: ca.DeepLift(model).attribute(x, 0.0, t)
    if method == "deepshap":
        refs = opts["baselines"]
        ca.DeepLiftShap(model).attribute(x[:2], refs, t[:2])
        return lambda: ca.DeepLiftShap(model).attribute(x, refs, t)
    if method in ("kernel_shap", "lime"):
        mask = _superpixel_mask(x, opts["n_segments"])
        n = opts["num_samples"]
        ppe = n if x.shape[-1] <= 64 else 16
        cls = ca.KernelShap if method == "kernel_shap" else ca.Lime

        def run() -> Any:  # Captum explains one image per call for these two
            return torch.cat([
                cls(model).attribute(x[i : i + 1], baselines=0.0, target=int(t[i]),
                                     feature_mask=mask, n_samples=n, perturbations_per_eval=ppe)
                for i in range(x.shape[0])
            ])  # fmt: skip

        return run
    if method == "lrp":
        return _captum_lrp(model, x, t)
    return None


def _captum_lrp(model: nn.Module, x: torch.Tensor, t: torch.Tensor) -> Callable[[], Any] | None:
    """Captum's LRP with epsilon-plus rules (z+ = Alpha1_Beta0 on convs, epsilon on dense), on a
    copy of the model (Captum stores its rules as module attributes)."""
    import captum.attr as ca
    from captum.attr._utils.lrp_rules import Alpha1_Beta0_Rule, EpsilonRule

    lrp_model = copy.deepcopy(model)

    def with_rules() -> nn.Module:
        """Attach the rules; Captum deletes every layer's ``rule`` after each call, so this
        runs before each one (else the later calls would use Captum's epsilon defaults)."""
        for m in lrp_model.modules():
            if isinstance(m, nn.Conv2d):
                m.rule = Alpha1_Beta0_Rule()
            elif isinstance(m, nn.Linear):
                m.rule = EpsilonRule(epsilon=1e-6)
            elif isinstance(m, nn.MaxPool2d) and type(m) is not nn.MaxPool2d:
                # Captum looks its default rules up by exact type; a subclass (LeNet-5's fast
                # no-gradient pool, rightfocus._pooling) gets Captum's default for max pooling
                m.rule = EpsilonRule()
        return lrp_model

    ca.LRP(with_rules()).attribute(x[:2], target=t[:2])  # refusals raise here
    return lambda: ca.LRP(with_rules()).attribute(x, target=t)


def zennit_case(
    method: str, model: nn.Module, x: torch.Tensor, t: torch.Tensor, opts: dict[str, Any]
) -> Callable[[], Any] | None:
    import torchvision
    from zennit.attribution import Gradient, IntegratedGradients, SmoothGrad
    from zennit.composites import DeconvNet, EpsilonPlus, GuidedBackprop
    from zennit.torchvision import ResNetCanonizer

    n_classes = model(x[:1]).shape[1]
    onehot = torch.eye(n_classes, dtype=x.dtype)[t]

    def run(attributor_cls: type, composite: Any = None, **kw: Any) -> Callable[[], Any]:
        def call() -> Any:
            with attributor_cls(model=model, composite=composite, **kw) as attributor:
                return attributor(x, onehot)[1]

        return call

    if method == "saliency":
        return run(Gradient)
    if method == "guided_backprop":
        return run(Gradient, GuidedBackprop())
    if method == "deconvnet":
        return run(Gradient, DeconvNet())
    if method == "integrated_gradients":
        return run(IntegratedGradients, n_iter=opts["n_steps"])
    if method == "smoothgrad":
        return run(SmoothGrad, n_iter=opts["n_samples"], noise_level=opts["stdev"])
    if method == "lrp":
        is_resnet = isinstance(model, torchvision.models.ResNet)
        return run(Gradient, EpsilonPlus(canonizers=[ResNetCanonizer()] if is_resnet else None))
    return None


PEERS: dict[str, Callable[..., Callable[[], Any] | None]] = {
    "captum": captum_case,
    "zennit": zennit_case,
}


# --- timing ----------------------------------------------------------------------------------


def options_for(method: str, tag: str, quick: bool) -> dict[str, Any]:
    opts = dict(TABLE[method].models[tag])
    if quick:
        opts.update(QUICK_OPTIONS.get(method, {}))
    return opts


def implementations(
    method: str, tag: str, model: nn.Module, x: torch.Tensor, t: torch.Tensor,
    opts: dict[str, Any],
) -> tuple[list[tuple[str, Callable[[], Any]]], list[str]]:  # fmt: skip
    """(name, call) of ours, each peer that has ``method`` and the floor; notes on skips."""
    entry = TABLE[method]
    impls: list[tuple[str, Callable[[], Any]]] = [
        ("rightfocus", lambda: attribute(model, x, t, method, **opts))
    ]
    notes: list[str] = []
    for peer in entry.peers:
        why = entry.skip.get(f"{tag}:{peer}")
        if why:
            notes.append(f"{peer}: {why}")
            continue
        try:
            fn = PEERS[peer](method, model, x, t, opts)
        except ImportError as err:
            notes.append(f"{peer} not installed ({err})")
            continue
        except Exception as err:  # a peer refusing the model is a result, not a crash
            notes.append(f"{peer} refused: {type(err).__name__}: {str(err)[:120]}")
            continue
        if fn is not None:
            impls.append((peer, fn))
    if "*" in entry.skip:
        notes.append(entry.skip["*"])
    impls.append(("floor", floor(model, x, t)))
    return impls, notes


def time_method(
    method: str, tag: str, model: nn.Module, x: torch.Tensor, t: torch.Tensor, repeats: int,
    quick: bool,
) -> list[dict[str, Any]]:  # fmt: skip
    """One group: ours, each peer that has the method, the floor where it applies."""
    opts = options_for(method, tag, quick)
    impls, notes = implementations(method, tag, model, x, t, opts)
    heavy = tag != "lenet5" and method not in CHEAP
    if heavy:  # warm every implementation up on a few images, then one timed round
        small, _ = implementations(method, tag, model, x[:WARMUP_IMAGES], t[:WARMUP_IMAGES], opts)
        for _, fn in small:
            fn()
    secs = interleaved([fn for _, fn in impls], 1 if heavy else repeats, 0 if heavy else 1)
    B = x.shape[0]
    by = {name: B / s for (name, _), s in zip(impls, secs)}
    peers = {k: v for k, v in by.items() if k not in ("rightfocus", "floor")}
    row: dict[str, Any] = {
        "model": tag, "method": method, "batch": B, "images_per_s": by["rightfocus"],
        "peers": peers, "floor_images_per_s": by["floor"],
        "vs_floor": by["rightfocus"] / by["floor"],
        "vs_fastest_peer": by["rightfocus"] / max(peers.values()) if peers else None,
        "fastest_peer": max(peers, key=peers.__getitem__) if peers else None,
        "options": {k: v for k, v in opts.items() if not isinstance(v, torch.Tensor)},
        "notes": notes, "repeats": 1 if heavy else repeats, "source": "attribution.py",
        "warmup": f"{WARMUP_IMAGES} images" if heavy else "1 round",
    }  # fmt: skip
    entry = TABLE[method]
    goal = GOALS.get(method)
    if goal is not None and entry.floor:
        row.update(goal=goal, goal_vs="floor", met=row["vs_floor"] >= goal)
    elif peers:
        row.update(goal=1.0, goal_vs="fastest peer", met=row["vs_fastest_peer"] >= 1.0)
    return [row]


def cam_group(
    tag: str, threads: int, repeats: int, only: str | None = None
) -> list[dict[str, Any]]:
    """The CAM family rows from benchmarks/cam_speed.py, reshaped to this table's columns."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("cam_speed", HERE / "cam_speed.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out: list[dict[str, Any]] = []
    for r in mod.cam_rows(threads, repeats, [tag], [only] if only else None):
        same = [o for o in out if o["method"] == r["method"] and o["batch"] == r["batch"]]
        if same:
            same[0]["peers"][r["peer"]] = r["peer_ips"]
            row = same[0]
        else:
            row = {"model": tag, "method": r["method"], "batch": r["batch"],
                   "images_per_s": r["ours_ips"], "peers": {r["peer"]: r["peer_ips"]},
                   "notes": [r["note"]] if "note" in r else [], "repeats": r["rounds"],
                   "source": "cam_speed.py"}  # fmt: skip
            out.append(row)
        fastest = max(row["peers"], key=row["peers"].__getitem__)
        row["fastest_peer"] = fastest
        row["vs_fastest_peer"] = row["images_per_s"] / row["peers"][fastest]
        row["goal"], row["goal_vs"] = r["goal"], r["peer"]
        row["met"] = row.get("met", True) and bool(r["met"])
    return out


# --- output ----------------------------------------------------------------------------------


def fmt_row(r: dict[str, Any]) -> str:
    peers = ", ".join(f"{k} {v:.1f}" for k, v in r.get("peers", {}).items()) or "-"
    ratio = r.get("vs_fastest_peer")
    ratio_s = f"{ratio:.2f}x {r['fastest_peer']}" if ratio else ""
    floor_s = f"{r['vs_floor']:.2f}x" if r.get("vs_floor") is not None else ""
    mark = "" if r.get("met", True) else "  MISSED"
    return (f"{r['model']:<9} {r['method']:<21} {r['images_per_s']:>10.1f}  floor {floor_s:>6}  "
            f"{ratio_s:<24} [{peers}]{mark}")  # fmt: skip


def meta(args: argparse.Namespace, argv: list[str]) -> dict[str, Any]:
    import importlib.metadata as md

    versions = {}
    for dist in ("torch", "torchvision", "captum", "zennit", "grad-cam", "quantus", "timm",
                 "bayesian-torch", "numpy"):  # fmt: skip
        try:
            versions[dist] = md.version(dist)
        except md.PackageNotFoundError:
            versions[dist] = None
    return {
        "rightfocus": rightfocus.__version__, "versions": versions, "threads": args.threads,
        "quick": args.quick, "python": platform.python_version(),
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "cpu": _cpu_name(), "command": "python benchmarks/attribution.py " + " ".join(argv),
        "ig_steps": IG_STEPS, "noise_samples": NT_SAMPLES,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "load_average": " ".join(Path("/proc/loadavg").read_text().split()[:3]),
    }  # fmt: skip


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def methods_for(tag: str, only: str | None) -> list[str]:
    names = [n for n, e in TABLE.items() if tag in e.models and e.script == "attribution.py"]
    return [n for n in names if only in (None, n)]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats, cheaper settings")
    parser.add_argument("--only", default=None, help="time only this method")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--model", choices=MODELS, default=None, help="time only this model")
    args = parser.parse_args(argv)
    if args.only and args.only not in METHODS:
        METHODS.get(args.only)  # raises with the known names
    torch.set_num_threads(args.threads)
    full = args.only is None and args.model is None
    tmp_path = partial_path(args.model, args.only)
    out_path = RESULTS if full else tmp_path
    info = meta(args, sys.argv[1:] if argv is None else argv)
    rows: list[dict[str, Any]] = []
    print(f"{'model':<9} {'method':<21} {'ours img/s':>10}  {'vs floor':>12}  "
          f"{'vs fastest peer':<24} [peers img/s]")  # fmt: skip
    for tag in MODELS:
        if args.model not in (None, tag):
            continue
        try:
            model, x, t = build(tag)
        except Exception as err:  # e.g. timm missing for the ViT
            print(f"{tag:<9} not built: {type(err).__name__}: {err}", flush=True)
            continue
        repeats = (2 if tag == "lenet5" else 1) if args.quick else (5 if tag == "lenet5" else 3)
        for method in methods_for(tag, args.only):
            try:
                new = time_method(method, tag, model, x, t, repeats, args.quick)
            except Exception as err:
                new = [{"model": tag, "method": method, "error": f"{type(err).__name__}: {err}"}]
                print(f"{tag:<9} {method:<21} ERROR {new[0]['error']}", flush=True)
            else:
                for r in new:
                    print(fmt_row(r), flush=True)
            rows += new
            atomic_write_json(tmp_path, {"meta": info, "rows": rows, "finished": False})
        run_cams = tag != "vit" and (args.only is None or TABLE[args.only].script == _CAM)
        if run_cams:
            new = cam_group(tag, args.threads, repeats, args.only)
            for r in new:
                print(fmt_row(r), flush=True)
            rows += new
            atomic_write_json(tmp_path, {"meta": info, "rows": rows, "finished": False})
    atomic_write_json(out_path, {"meta": info, "rows": rows, "finished": True, "full": full})
    if full and tmp_path.exists():
        tmp_path.unlink()
    print(f"\nwrote {out_path}")


if __name__ == "__main__":
    main()
