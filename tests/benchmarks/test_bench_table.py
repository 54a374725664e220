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
    if name != "_timing" and "_timing" not in sys.modules:  # what the scripts import by name
        sys.modules["_timing"] = _load("_timing")
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


@pytest.mark.slow  # runs one real benchmark group (ours, Captum, Zennit, floor) on 4 images
def test_partial_runs_never_overwrite_the_full_results(tmp_path, monkeypatch):
    """``--only`` / ``--model`` write their own file, row by row; the full table stays."""
    import json

    import torch

    from rightfocus.models.lenet import LeNet5

    bench = _load("attribution")
    full = tmp_path / "attribution.json"
    full.write_text('{"untouched": true}')
    monkeypatch.setattr(bench, "RESULTS", full)
    monkeypatch.setattr(bench, "partial_path", lambda m, o: tmp_path / f"attribution.{m}.{o}.json")
    torch.manual_seed(0)
    tiny = (LeNet5().eval(), torch.rand(4, 1, 28, 28), torch.tensor([0, 1, 2, 3]))
    monkeypatch.setattr(bench, "build", lambda tag: tiny)
    bench.main(["--quick", "--model", "lenet5", "--only", "saliency", "--threads", "1"])
    assert json.loads(full.read_text()) == {"untouched": True}
    out = json.loads((tmp_path / "attribution.lenet5.saliency.json").read_text())
    assert out["finished"] and not out["full"]
    (row,) = out["rows"]
    assert row["method"] == "saliency" and row["images_per_s"] > 0
    assert set(row["peers"]) == {"captum", "zennit"}


def test_interleaved_timer_rotates_rounds_and_keeps_outputs():
    """The shared timer: every case once per round, rounds rotated, medians per case, the
    last return value of each case kept."""
    timing = _load("_timing")
    order: list[str] = []
    fns = [lambda n=n: order.append(n) or n for n in "abc"]
    outputs: list = [None] * 3
    secs = timing.interleaved(fns, repeats=2, warmup=1, outputs=outputs)
    assert order == list("aabbccbbccaa")  # each timed call right after its warm-up call
    order.clear()
    timing.interleaved(fns, repeats=2, warmup=0)
    assert order == list("abcbca")  # cold: one call each
    assert outputs == list("abc") and len(secs) == 3 and all(s >= 0 for s in secs)
    med = timing.interleaved_medians({"x": lambda: sum(range(10_000))}, reps=3)
    assert set(med) == {"x"} and med["x"] > 0
