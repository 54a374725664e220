"""How fast a user error reaches the user: ``rightfocus train`` with a mistake vs bare imports.

Each case is a fresh process (what a user waits for), timed interleaved (median of
``--repeats``):

* ``import rightfocus.cli``: the floor every command pays (torch is imported by the package);
* ``+ Lightning``: ``rightfocus.cli`` and ``rightfocus.engine.run``, what ``train`` imported
  before its first check until config errors and pre-training validation moved ahead of it;
* ``train: config typo`` (``--set optim.lrr=1``) and ``train: too few samples for the folds``
  (a 4-image folder with ``data.folds: 9``), both ending in one ``error:`` line, exit 2.

Goals: a config error costs at most 1.3x the bare ``import rightfocus.cli``; a data error
(which has to import torchvision to read the folder) less than the old path with Lightning.

    python benchmarks/cli_errors.py [--repeats 3]

Prints a table and writes benchmarks/results/cli_errors.json.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from _timing import interleaved_medians

from rightfocus._io import atomic_write_json

PY = sys.executable
SCRIPT = str(Path(PY).with_name("rightfocus"))


def _run(argv: list[str], expect: int) -> None:
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    if proc.returncode != expect:
        raise SystemExit(f"{argv} exited {proc.returncode}, expected {expect}: {proc.stderr}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        for c in ("a", "b"):
            (tmp / "data" / c).mkdir(parents=True)
            for i in range(2):
                Image.fromarray(np.zeros((28, 28, 3), np.uint8)).save(tmp / "data" / c / f"{i}.png")
        cfg = {
            "runs_dir": str(tmp / "runs"),
            "data": {"dataset": "image_folder", "root": str(tmp / "data"), "folds": 9},
            "model": {"name": "lenet", "options": {"num_classes": 2}},
        }
        path = tmp / "c.yaml"
        path.write_text(yaml.safe_dump(cfg))
        cases = {
            "import rightfocus.cli": lambda: _run([PY, "-c", "import rightfocus.cli"], 0),
            "+ Lightning (old train path)": lambda: _run(
                [PY, "-c", "import rightfocus.cli, rightfocus.engine.run"], 0
            ),
            "train: config typo": lambda: _run(
                [SCRIPT, "train", str(path), "--set", "optim.lrr=1"], 2
            ),
            "train: too few samples for the folds": lambda: _run([SCRIPT, "train", str(path)], 2),
        }
        medians = interleaved_medians(cases, args.repeats)
        assert not (tmp / "runs").exists(), "an error run wrote its run folder"
    floor = medians["import rightfocus.cli"]
    print(f"{'case':40s} {'seconds':>8s} {'x import':>9s}")
    for name, sec in medians.items():
        print(f"{name:40s} {sec:8.2f} {sec / floor:9.2f}")
    typo = medians["train: config typo"] / floor
    data = medians["train: too few samples for the folds"]
    old = medians["+ Lightning (old train path)"]
    print(f"goal: config error <= 1.3x import: {'met' if typo <= 1.3 else 'NOT met'}")
    print(f"goal: data error < old path: {'met' if data < old else 'NOT met'}")
    out = Path(__file__).parent / "results" / "cli_errors.json"
    atomic_write_json(
        out,
        {
            "seconds": medians,
            "ratio_to_import": {k: v / floor for k, v in medians.items()},
            "repeats": args.repeats,
        },
    )


if __name__ == "__main__":
    main()
