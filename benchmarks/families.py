"""Modern families speed: ConvNeXt-T and ViT-B/16 (224x224, batch 8, random weights).

Saliency, Grad-CAM and Integrated Gradients, rightfocus vs the peers that support them on the
same model object, interleaved repeats, medians (``benchmarks/_timing.py``):

- saliency: Captum ``Saliency`` (``abs=True``, as ours with ``abs=True``);
- Grad-CAM: pytorch-grad-cam ``GradCAM`` (min-max scaled maps resized to the input, so ours
  with ``normalize=True``); on the ViT with the reshape transform of its documentation
  (drop the class token, 14 x 14 grid) where ours reshapes automatically; target layer
  ``stages[-1]`` / ``blocks[-1].norm1`` for both. Captum's ``LayerGradCam`` runs on ConvNeXt
  (no upsampling: ours with ``upsample=False``); it has no token reshape for the ViT;
- IG: Captum ``IntegratedGradients`` (Gauss-Legendre, ``n_steps``, all steps in one pass via
  ``internal_batch_size``) vs ours with the same rule and pass size.

Timm's fused attention is on for the ViT (first-order gradients only here). Goal: at least the
fastest peer (ratio peer seconds / our seconds >= 1). Rows are printed as they finish.

Usage: ``python benchmarks/families.py [--threads 2] [--repeats 3] [--steps 16]
[--models convnext_tiny,vit_b16] [--methods saliency,gradcam,...]``; writes
``benchmarks/results/families_<model>.json`` after every row (a run with ``--methods`` or
``--models`` replaces its own rows and keeps the others; each row records the 1-minute load
average when it finished).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import interleaved_medians

from rightfocus import attribute
from rightfocus._io import atomic_write_text
from rightfocus.models import build_model

RESULTS = Path(__file__).resolve().parent / "results" / "families.json"


def _models() -> list[tuple[str, nn.Module, nn.Module, Callable[[Tensor], Tensor] | None]]:
    """(name, model, Grad-CAM layer, pytorch-grad-cam reshape transform)."""
    torch.manual_seed(0)
    convnext = build_model("convnext_tiny", num_classes=1000).eval()
    vit = build_model("vit", num_classes=1000, fused_attn=True).eval()  # ViT-B/16 defaults

    def reshape_transform(tensor: Tensor, height: int = 14, width: int = 14) -> Tensor:
        result = tensor[:, 1:, :].reshape(tensor.size(0), height, width, tensor.size(2))
        return result.transpose(2, 3).transpose(1, 2)

    return [
        ("convnext_tiny", convnext, convnext.stages[-1], None),
        ("vit_b16", vit, vit.blocks[-1].norm1, reshape_transform),
    ]


def _cases(
    model: nn.Module, layer: nn.Module, reshape: Any, x: Tensor, t: Tensor, steps: int
) -> dict[str, dict[str, Callable[[], Any]]]:
    # the peers are optional (bench extra): imported only when the cases are built
    import captum.attr as ca
    import pytorch_grad_cam as pgc
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    targets = [ClassifierOutputTarget(int(c)) for c in t]
    n = x.shape[0] * steps

    def pgc_gradcam() -> Any:
        with pgc.GradCAM(model=model, target_layers=[layer], reshape_transform=reshape) as cam:
            return cam(input_tensor=x, targets=targets)

    cases: dict[str, dict[str, Callable[[], Any]]] = {
        "saliency": {
            "rightfocus": lambda: attribute(model, x, t, "saliency", abs=True),
            "captum": lambda: ca.Saliency(model).attribute(x, target=t, abs=True),
        },
        "gradcam": {
            "rightfocus": lambda: attribute(model, x, t, "gradcam", layer=layer, normalize=True),
            "pytorch-grad-cam": pgc_gradcam,
        },
        "integrated_gradients": {
            "rightfocus": lambda: attribute(
                model, x, t, "integrated_gradients", n_steps=steps, internal_batch_size=n
            ),
            "captum": lambda: ca.IntegratedGradients(model).attribute(
                x, target=t, n_steps=steps, internal_batch_size=n
            ),
        },
    }
    if reshape is None:
        cases["gradcam_layer"] = {
            "rightfocus": lambda: attribute(model, x, t, "gradcam", layer=layer, upsample=False),
            "captum": lambda: ca.LayerGradCam(model, layer).attribute(
                x, target=t, relu_attributions=True
            ),
        }
    return cases


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=16, help="IG steps")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--models", default="convnext_tiny,vit_b16", help="comma-separated")
    parser.add_argument("--methods", default="", help="comma-separated (default: all)")
    args = parser.parse_args()
    models, methods = set(args.models.split(",")), set(filter(None, args.methods.split(",")))
    torch.set_num_threads(args.threads)
    x = torch.randn(args.batch, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    t = torch.randint(0, 1000, (args.batch,), generator=torch.Generator().manual_seed(2))
    rows: list[dict[str, Any]] = []
    print(f"{'model':14} {'method':22} {'peer':18} {'ours s':>8} {'peer s':>8} {'ratio':>6}")
    for name, model, layer, reshape in _models():
        if name not in models:
            continue
        for method, pair in _cases(model, layer, reshape, x, t, args.steps).items():
            if methods and method not in methods:
                continue
            medians = interleaved_medians(pair, args.repeats)
            ours = medians.pop("rightfocus")
            for peer, seconds in medians.items():
                row = {"model": name, "method": method, "peer": peer, "ours_s": ours,
                       "peer_s": seconds, "ratio": seconds / ours, "batch": args.batch,
                       "threads": args.threads, "repeats": args.repeats, "steps": args.steps,
                       "loadavg_1min": os.getloadavg()[0]}  # fmt: skip
                rows.append(row)
                print(f"{name:14} {method:22} {peer:18} {ours:8.3f} {seconds:8.3f} "
                      f"{seconds / ours:6.2f}", flush=True)  # fmt: skip
            _save(
                RESULTS.with_name(f"families_{name}.json"), [r for r in rows if r["model"] == name]
            )


def _save(out: Path, rows: list[dict[str, Any]]) -> None:
    """Write ``rows`` into ``out``, keeping the rows of other (method, peer) pairs already there
    (a run with ``--methods`` updates its rows only)."""
    new = {(r["method"], r["peer"]) for r in rows}
    old = json.loads(out.read_text())["rows"] if out.is_file() else []
    kept = [r for r in old if (r["method"], r["peer"]) not in new]
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, json.dumps({"rows": kept + rows}, indent=2))


if __name__ == "__main__":
    main()
