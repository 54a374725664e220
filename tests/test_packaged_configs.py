"""The example configs ship inside the package: found by name, valid, and present in a wheel."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from rightfocus import configs
from rightfocus.engine.config import load_config

ROOT = Path(__file__).resolve().parents[1]


def test_names_and_paths() -> None:
    names = configs.names()
    assert "decoy_mnist_color_lenet" in names and "sweeps/decoy_lambda" in names
    for name in names:
        assert configs.path(name).is_file()
        assert configs.path(name + ".yaml") == configs.path(name)
    with pytest.raises(FileNotFoundError, match="Did you mean 'decoy_mnist_color_lenet'"):
        configs.path("decoy_mnist_colour_lenet")


def test_the_checkout_folder_is_the_shipped_one() -> None:
    top = ROOT / "configs"
    assert sorted(p.name for p in top.glob("*.yaml")) == sorted(
        p.name for p in configs.DIR.glob("*.yaml")
    )
    assert (top / "decoy_mnist_color_lenet.yaml").resolve() == configs.path(
        "decoy_mnist_color_lenet"
    )


def test_load_config_by_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no configs/ folder here
    cfg = load_config("decoy_mnist_position_lenet", ["optim.epochs=1"])
    assert cfg.data.variant == "position" and cfg.optim.epochs == 1  # `base:` followed
    assert configs.resolve("nope.yaml") == Path("nope.yaml")  # the caller reports it missing


@pytest.mark.slow
def test_installed_wheel_runs_a_config_by_name(tmp_path: Path) -> None:
    """Build a wheel, install it (no deps) into a fresh venv that borrows this environment's
    packages but not the source checkout, and train a shipped config by name."""
    python = sys.executable
    wheels = tmp_path / "wheels"
    subprocess.run(
        [
            python,
            "-m",
            "pip",
            "wheel",
            str(ROOT),
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "-q",
            "-w",
            str(wheels),
        ],
        check=True,
        timeout=300,
    )
    (wheel,) = wheels.glob("rightfocus-*.whl")
    venv = tmp_path / "venv"
    subprocess.run([python, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    vpy = venv / "bin" / "python"
    site = subprocess.run(
        [str(vpy), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    # this environment's packages (torch, ...) as a plain path: its .pth files (the editable
    # install of the checkout among them) are not processed
    here = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    Path(site, "borrowed.pth").write_text(here + "\n")
    # --target: pip ignores the checkout's editable install visible through borrowed.pth
    subprocess.run(
        [
            python,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "--no-index",
            "-q",
            "--target",
            site,
            str(wheel),
        ],
        check=True,
        timeout=300,
    )
    work = tmp_path / "work"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    code = (
        "import rightfocus, rightfocus.configs as c; "
        "print(rightfocus.__file__); print(c.path('sweeps/decoy_lambda'))"
    )
    probe = subprocess.run(
        [str(vpy), "-c", code], cwd=work, env=env, capture_output=True, text=True
    )
    assert probe.returncode == 0, probe.stderr[-3000:]
    out = probe.stdout
    assert str(venv) in out and str(ROOT / "src") not in out
    run = subprocess.run(
        [
            str(vpy),
            "-m",
            "rightfocus.cli",
            "train",
            "decoy_mnist_color_lenet",
            "--set",
            "optim.epochs=1",
            "--set",
            "data.max_train=64",
            "--set",
            "data.max_test=32",
            "--set",
            "data.folds=1",
            "--set",
            "evaluation.mc_samples=1",
            "--set",
            "runs_dir=runs",
            "--set",
            "run=wheel",
        ],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    assert (work / "runs" / "decoy_mnist_color" / "wheel" / "metrics.json").is_file()
