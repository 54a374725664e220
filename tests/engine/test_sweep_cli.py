"""``rightfocus sweep`` through the real console script: a refused sweep is one ``error: ...``
line on stderr, exit code 2 and nothing written (``--dry-run`` validates the same way); a
sweep whose every trial fails exits non-zero. The script cases start together so their
start-ups overlap; more cases run in-process through the same top-level handler.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from rightfocus.cli import app

SCRIPT = Path(sys.executable).with_name("rightfocus")
BASE = """\
experiment: base
data: {dataset: decoy_mnist, variant: color, max_train: 40, max_test: 10, batch_size: 10}
model: {name: lenet}
optim: {epochs: 1}
trainer: {progress_bar: false}
"""
GOOD = "config: base.yaml\nparams:\n  optim.lr: [1e-3, 2e-3]\nfolds: 2\n"


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
    }


def _one_error_line(stderr: str) -> str:
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: "), stderr
    return lines[0]


# (case, sweep file text or None for GOOD, extra argv, text the one error line must contain)
SCRIPT_CASES: list[tuple[str, str | None, list[str], str]] = [
    ("malformed YAML", "config: base.yaml\nparams: {optim.lr: [1e-3\n", [], "not valid YAML"),
    (
        "param not in the config schema, dry run",
        "config: base.yaml\nparams:\n  optim.lrr: [1e-3]\n",
        ["--dry-run"],
        "did you mean 'lr'",
    ),
    ("bad --storage URL", None, ["--storage", "no-url"], "--storage 'no-url' is not a database"),
]
# the same through the in-process handler (CliRunner): cheaper than a process each
INPROCESS_CASES = [
    (
        "scalar param",
        "config: base.yaml\nparams:\n  optim.lr: 1e-3\n",
        [],
        "params.optim.lr is a single value (0.001)",
    ),
    (
        "objective not a metric, dry run",
        GOOD + "objective: acuracy\n",
        ["--dry-run"],
        "objective 'acuracy' is not one of",
    ),
    ("[brackets] in values stay", "config: base.yaml\nparams: {model.name: ['[x]']}\n", [], "[x]"),
    ("random sampler, no n_trials", GOOD + "sampler: random\n", [], "needs n_trials"),
    ("--out is a file", GOOD, ["--out", "{tmp}/base.yaml"], "is a file, not a folder"),
]


@pytest.fixture(scope="module")
def script_results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    if not SCRIPT.is_file():
        pytest.skip(f"console script {SCRIPT} is not installed (pip install -e .)")
    tmp = tmp_path_factory.mktemp("sweep_cli")
    (tmp / "base.yaml").write_text(BASE)
    for i, (_, text, _, _) in enumerate(SCRIPT_CASES):
        (tmp / f"sweep{i}.yaml").write_text(text if text is not None else GOOD)
    before = _snapshot(tmp)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
    env.pop("RIGHTFOCUS_DEBUG", None)
    procs = [
        subprocess.Popen(
            [str(SCRIPT), "sweep", f"sweep{i}.yaml", "--out", "out", *argv],
            cwd=tmp,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i, (_, _, argv, _) in enumerate(SCRIPT_CASES)
    ]
    results = {}
    for (name, *_), proc in zip(SCRIPT_CASES, procs, strict=True):
        stdout, stderr = proc.communicate(timeout=300)
        results[name] = (proc.returncode, stdout, stderr)
    return {"results": results, "before": before, "after": _snapshot(tmp)}


@pytest.mark.slow  # three console-script start-ups (~3 s of CPU each)
@pytest.mark.parametrize("case", [c[0] for c in SCRIPT_CASES])
def test_refused_sweep_is_one_line_exit_2(case: str, script_results: dict[str, Any]) -> None:
    code, stdout, stderr = script_results["results"][case]
    expected = next(c[3] for c in SCRIPT_CASES if c[0] == case)
    assert code == 2, (stdout, stderr)
    assert expected in _one_error_line(stderr)
    assert "Traceback" not in stdout + stderr


@pytest.mark.slow
def test_refused_sweeps_write_nothing(script_results: dict[str, Any]) -> None:
    assert script_results["after"] == script_results["before"]  # no out/, no sweep.db


# ---------------------------------------------------------------- in-process, same handler


@pytest.mark.parametrize(("case", "text", "argv", "expected"), INPROCESS_CASES)
def test_refused_sweep_in_process(
    tmp_path: Path, case: str, text: str, argv: list[str], expected: str
) -> None:
    (tmp_path / "base.yaml").write_text(BASE)
    (tmp_path / "s.yaml").write_text(text)
    before = _snapshot(tmp_path)
    out = str(tmp_path / "out")
    argv = [a.format(tmp=tmp_path) for a in argv]
    result = CliRunner().invoke(app, ["sweep", str(tmp_path / "s.yaml"), "--out", out, *argv])
    assert result.exit_code == 2, result.output
    assert expected in _one_error_line(result.stderr)
    assert _snapshot(tmp_path) == before


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize(
    ("storage", "expected"),
    [
        ("http://example.org/db", "unknown database kind 'http'"),
        ("mysql://me:secret@localhost/db", "driver is not installed"),
        (
            f"postgresql://me:secret@127.0.0.1:{_free_port()}/db",
            "Cannot open the sweep storage postgresql+psycopg://me:***@127.0.0.1",
        ),
    ],
)
def test_storage_errors_are_one_line(tmp_path: Path, storage: str, expected: str) -> None:
    (tmp_path / "base.yaml").write_text(BASE)
    (tmp_path / "s.yaml").write_text(GOOD)
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app,
        ["sweep", str(tmp_path / "s.yaml"), "--out", str(out), "--storage", storage],
    )
    assert result.exit_code == 2, result.output
    line = _one_error_line(result.stderr)
    assert expected in line and "secret" not in line
    assert not out.exists()


def test_every_trial_failing_exits_non_zero(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import rightfocus.engine.sweep as sweep

    calls: list[dict[str, Any]] = []

    def failing(config: Path, overrides: dict[str, Any]) -> int:
        calls.append(overrides)
        return 1

    monkeypatch.setattr(sweep, "_default_runner", failing)
    monkeypatch.chdir(tmp_path)  # the relative --out: nothing lands in the caller's folder
    (tmp_path / "base.yaml").write_text(BASE)
    (tmp_path / "s.yaml").write_text(GOOD)
    result = CliRunner().invoke(app, ["sweep", str(tmp_path / "s.yaml"), "--out", "out"])
    assert result.exit_code == 2, result.output
    assert "Every trial of the sweep failed (2)" in _one_error_line(result.stderr)
    assert len(calls) == 2  # the first fold of each configuration; its other folds never ran


@pytest.mark.slow
def test_every_trial_failing_for_real_exits_non_zero(tmp_path: Path) -> None:
    """A trial that fails inside its training child (corrupt weights file: ~20 s)."""
    if not SCRIPT.is_file():
        pytest.skip(f"console script {SCRIPT} is not installed (pip install -e .)")
    (tmp_path / "w.pt").write_bytes(b"not a checkpoint")
    weights = f"{{name: lenet, weights: {tmp_path / 'w.pt'}}}"
    (tmp_path / "base.yaml").write_text(BASE.replace("{name: lenet}", weights))
    (tmp_path / "s.yaml").write_text("config: base.yaml\nparams:\n  optim.lr: [1e-3]\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [str(SCRIPT), "sweep", "s.yaml", "--out", "out"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("error: ")]
    assert "Could not load weights" in lines[0]  # the child's own one-line error
    assert lines[-1].startswith("error: Every trial of the sweep failed (1)")
    assert "Traceback" not in proc.stderr
