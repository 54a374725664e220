"""Studio speed: server time to open an image with a fresh explanation.

Two goals from the studio's issue, measured through the real HTTP app (FastAPI TestClient,
in process) on fresh images (never cached):

* LeNet on Decoy MNIST (28x28): image info + image PNG + explanation PNG of a gradient method,
  goal < 200 ms in total;
* ResNet-18 on a 224x224 RGB image: the Grad-CAM overlay, goal < 1 s.

Server time is the app's own ``Server-Timing`` header (request in to response out, summed
over the requests that open an image). The baseline in the same run is the bare
``attribute()`` call on the same model and image, so ``overhead`` = studio time / bare
attribution time shows what the server adds (prediction, PNG encoding, routing). Models have
seeded random weights (speed does not depend on training).
Repeats are interleaved and medians reported (the machine is shared).

Usage: ``python benchmarks/studio.py [--threads 2] [--repeats 7]``; writes
``benchmarks/results/studio.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import interleaved_medians

RESULTS = Path(__file__).resolve().parent / "results" / "studio.json"
GOALS = {"lenet": 0.200, "resnet18": 1.0}


def _fake_run(root: Path, raw: dict[str, Any]) -> Path:
    """A run folder with the config and a checkpoint of the seeded, untrained model."""
    from rightfocus._io import atomic_write_text
    from rightfocus.engine.config import load_config_dict
    from rightfocus.engine.run import build_model

    cfg = load_config_dict(raw, [f"runs_dir={root}"])
    run_dir = cfg.run_dir
    atomic_write_text(run_dir / "config.yaml", cfg.to_yaml())
    torch.manual_seed(0)
    state = {f"model.{k}": v for k, v in build_model(cfg).state_dict().items()}
    (run_dir / "checkpoints").mkdir(parents=True)
    torch.save({"state_dict": state}, run_dir / "checkpoints" / "last.ckpt")
    return run_dir


def _image_folder(root: Path, n: int = 40) -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        for i in range(n // 2):
            arr = rng.integers(0, 255, (256, 256, 3), dtype=np.uint8)
            Image.fromarray(arr).save(root / c / f"{i}.png")
    return root


class _Fresh:
    """Open a new (uncached) image per call: GET every path, sum the server time of the
    ``timed`` ones (the app's Server-Timing header)."""

    def __init__(self, client: Any, indices: list[int], paths: list[str], timed: list[bool]):
        self.client, self.indices, self.paths, self.timed, self.k = client, indices, paths, timed, 0
        self.server_seconds: list[float] = []

    def __call__(self) -> None:
        i = self.indices[self.k % len(self.indices)]
        self.k += 1
        total = 0.0
        for path, timed in zip(self.paths, self.timed, strict=True):
            r = self.client.get(path.format(i=i))
            assert r.status_code == 200, r.text
            if timed:
                total += float(r.headers["server-timing"].split("dur=")[1]) / 1000
        self.server_seconds.append(total)


def run(threads: int, repeats: int) -> dict[str, Any]:
    from fastapi.testclient import TestClient

    from rightfocus import attribute
    from rightfocus.studio import StudioSession, create_app

    torch.set_num_threads(threads)
    tmp = Path(tempfile.mkdtemp(prefix="rf-studio-bench-"))
    lenet_run = _fake_run(
        tmp / "runs",
        {
            "experiment": "bench",
            "run": "lenet",
            "data": {"dataset": "decoy_mnist", "variant": "position", "folds": 1, "max_train": 400},
            "model": {"name": "lenet"},
        },
    )
    resnet_run = _fake_run(
        tmp / "runs",
        {
            "experiment": "bench",
            "run": "resnet18",
            "data": {
                "dataset": "image_folder",
                "root": str(_image_folder(tmp / "images")),
                "folds": 1,
                "image_size": 224,
            },
            "model": {"name": "resnet18", "options": {"num_classes": 2}},
        },
    )
    rows: dict[str, Any] = {}
    cases: dict[str, Any] = {}
    need = repeats + 2
    for name, run_dir, methods in (
        ("lenet", lenet_run, ("saliency", "input_x_gradient", "integrated_gradients", "gradcam")),
        ("resnet18", resnet_run, ("gradcam",)),
    ):
        session = StudioSession(run_dir, store=tmp / f"store-{name}")
        client = TestClient(create_app(session))
        pool = session.train_indices.tolist()
        for j, method in enumerate(methods):
            fresh = pool[j * need : (j + 1) * need]  # every call opens a never-opened image
            assert len(fresh) == need, "not enough images for the repeats"
            # the page opens an image with its info, the image and the overlay; LeNet: all
            # three count; ResNet-18: the Grad-CAM overlay (the info request is not timed)
            paths = [
                "/api/images/{i}",
                "/api/images/{i}/image.png",
                f"/api/images/{{i}}/explanation.png?method={method}",
            ]
            timed = [True, True, True] if name == "lenet" else [False, False, True]
            key = f"{name}/{method}"
            cases[f"{key}/studio"] = _Fresh(client, fresh, paths, timed)
            x = session.item(fresh[0])[0][None]
            opts = session.method_options(method)
            cases[f"{key}/attribute"] = lambda model=session.model, x=x, method=method, opts=opts: (
                attribute(model, x, torch.tensor([0]), method=method, **opts)
            )
            rows[key] = {"goal_seconds": GOALS[name]}
    t0 = time.perf_counter()
    medians = interleaved_medians(cases, repeats)
    for key, row in rows.items():
        fresh_case = cases[f"{key}/studio"]
        studio = statistics.median(fresh_case.server_seconds[1:])  # without the warm-up
        bare = medians[f"{key}/attribute"]
        row.update(
            studio_seconds=round(studio, 4),
            attribute_seconds=round(bare, 4),
            overhead=round(studio / bare, 2),
            meets_goal=studio < row["goal_seconds"],
        )
    return {
        "threads": threads,
        "repeats": repeats,
        "rows": rows,
        "wall_seconds": round(time.perf_counter() - t0, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    out = run(args.threads, args.repeats)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=2) + "\n")
    for key, row in out["rows"].items():
        print(
            f"{key:32s} studio {1000 * row['studio_seconds']:8.1f} ms "
            f"(goal < {1000 * row['goal_seconds']:.0f} ms, "
            f"{'met' if row['meets_goal'] else 'MISSED'}); bare attribute "
            f"{1000 * row['attribute_seconds']:7.1f} ms; x{row['overhead']}"
        )
    print(f"written to {RESULTS}")


if __name__ == "__main__":
    main()
