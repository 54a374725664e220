"""Every sweep file shipped in ``rightfocus/configs/sweeps`` passes ``rightfocus sweep NAME
--dry-run`` (the full check: schema, every grid point through the config loader and the
pre-training checks), with a tiny copy of its dataset where the base config reads files; and
every shipped sweep the source code points at exists."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import rightfocus
from rightfocus import configs
from rightfocus.cli import app
from rightfocus.engine.config import load_config
from rightfocus.engine.sweep_spec import load_sweep

SWEEPS = [name for name in configs.names() if name.startswith("sweeps/")]


def test_there_are_shipped_sweeps() -> None:
    assert {"sweeps/decoy_lambda", "sweeps/proxy_attention_ablation"} <= set(SWEEPS)


@pytest.mark.parametrize("name", SWEEPS)
def test_shipped_sweep_passes_the_dry_run(
    name: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    write_dataset: Callable[[str, Path], Any],
) -> None:
    monkeypatch.chdir(tmp_path)
    spec = load_sweep(configs.path(name))
    base = load_config(spec.config)
    if base.data.root is not None:
        assert base.data.dataset in write_dataset.known, base.data.dataset  # type: ignore[attr-defined]
        write_dataset(base.data.dataset, tmp_path / base.data.root)
    result = CliRunner().invoke(app, ["sweep", name, "--dry-run", "--out", "out"])
    assert result.exit_code == 0, result.output
    grid = 1
    for values in spec.params.values():
        grid *= len(values)  # type: ignore[arg-type]
    assert f"{grid} configurations" in result.output, result.output
    assert not (tmp_path / "out").exists()  # a dry run writes nothing


def test_every_sweep_the_code_names_is_shipped() -> None:
    src = Path(rightfocus.__file__).parent
    named = {
        m.group(1)
        for path in src.rglob("*.py")
        for m in re.finditer(r"configs/(sweeps/[A-Za-z0-9_]+)\.yaml", path.read_text())
    }
    assert "sweeps/proxy_attention_ablation" in named
    assert named <= set(SWEEPS), sorted(named - set(SWEEPS))
