"""Every registered attribution method has a row in the cross-library benchmark's table
(benchmarks/attribution.py ``TABLE``), so a new method cannot skip the benchmark."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from rightfocus import METHODS

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"_bench_{name}", BENCH / f"{name}.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def table():
    return _load("attribution").TABLE


def test_every_registered_method_has_a_benchmark_row(table):
    missing = sorted(set(METHODS.names()) - set(table))
    assert not missing, f"methods without a row in benchmarks/attribution.py TABLE: {missing}"
    unknown = sorted(set(table) - set(METHODS.names()))
    assert not unknown, f"TABLE rows for methods that are not registered: {unknown}"


@pytest.mark.parametrize("name", METHODS.names())
def test_each_row_is_timed_somewhere(name, table):
    entry = table[name]
    script = BENCH / entry.script
    assert script.exists(), f"{name}: {entry.script} does not exist"
    if entry.script == "attribution.py":
        assert entry.models, f"{name}: no model to time it on"
        for tag, opts in entry.models.items():
            METHODS.get(name)(**opts)  # the benchmark's options are valid for the method
            assert tag in _load("attribution").MODELS
    else:
        timed = f'"{name}"' in script.read_text()
        assert timed or "*" in entry.skip, f"{name}: not timed by {entry.script}, no reason"


def test_peers_are_known(table):
    known = {"captum", "zennit", "pytorch-grad-cam"}
    for name, entry in table.items():
        assert set(entry.peers) <= known, (name, entry.peers)
