"""The dependency rules of docs/architecture.md, checked on the real import graph.

Every ``import`` of ``src/rightfocus`` (module level and inside functions) is read with ``ast``.
A unit is a top-level module or subpackage of ``rightfocus`` (``attribution``, ``hooks``, ...;
``(root)`` is ``rightfocus/__init__.py``). A unit may import units of a LOWER layer of
:data:`LAYERS`; only the foundation layer may import within itself. Imports inside one unit are
not checked. :data:`EXCEPTIONS` lists the few upward imports the architecture allows, each with
its reason (the same list is in docs/architecture.md).
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

import rightfocus

SRC = Path(rightfocus.__file__).resolve().parent

LAYERS: list[set[str]] = [
    # foundation
    {"_io", "_registry", "_modules", "hooks", "errors", "configs", "_images", "_events"},
    {"bayes"},
    {"attribution", "data", "models"},
    {"metrics", "analysis"},
    {"guidance", "viz"},
    {"(root)"},  # rightfocus/__init__.py: the curated API; importing it registers everything
    {"engine"},
    {"feedback", "demo"},
    {"studio"},
    {"cli"},
]
# (importing module, imported module): allowed upward arrows.
EXCEPTIONS = {
    # the Guidance.callbacks hook builds the Lightning callback the engine installs; imported
    # inside the hook so that `import rightfocus` does not import Lightning
    ("rightfocus.guidance.proxy_attention", "rightfocus.engine.callbacks"),
    # training on the masks people painted: the overlay reads the feedback store (a folder of
    # masks that itself depends only on _io)
    ("rightfocus.data.feedback", "rightfocus.feedback.store"),
}


def _layer_of(unit: str) -> int:
    for i, layer in enumerate(LAYERS):
        if unit in layer:
            return i
    raise AssertionError(
        f"rightfocus.{unit} is not in the layer table: add it to LAYERS here and to the "
        "dependency rules in docs/architecture.md"
    )


def _module_name(path: Path) -> str:
    parts = ["rightfocus", *path.relative_to(SRC).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _unit(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1:
        return "(root)"
    name = parts[1]
    exists = (SRC / f"{name}.py").is_file() or (SRC / name / "__init__.py").is_file()
    return name if exists else "(root)"  # a name defined in rightfocus/__init__.py


def _imports(path: Path) -> list[tuple[str, int]]:
    """``(imported module, line)`` for every rightfocus import in ``path``."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out: list[tuple[str, int]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            # `from rightfocus import hooks` imports the submodule rightfocus.hooks
            out += [(f"{target}.{a.name}", node.lineno) for a in node.names]
    return [(t, line) for t, line in out if t == "rightfocus" or t.startswith("rightfocus.")]


def _violations() -> list[str]:
    bad = []
    for path in sorted(SRC.rglob("*.py")):
        module = _module_name(path)
        src_unit = _unit(module)
        for target, line in _imports(path):
            dst_unit = _unit(target)
            if dst_unit == src_unit:
                continue
            if any(target == e or target.startswith(e + ".") for m, e in EXCEPTIONS if m == module):
                continue
            a, b = _layer_of(src_unit), _layer_of(dst_unit)
            if b > a or (b == a and a != 0):
                rel = path.relative_to(SRC.parent)
                bad.append(f"{rel}:{line}: {src_unit} -> {dst_unit} ({target})")
    return bad


def test_dependencies_point_downwards() -> None:
    bad = _violations()
    assert not bad, "imports against docs/architecture.md's dependency rules:\n" + "\n".join(bad)


def test_exceptions_are_real() -> None:
    """An exception that no longer occurs must be removed (here and in the docs)."""
    for module, target in EXCEPTIONS:
        path = SRC.parent / (module.replace(".", "/") + ".py")
        assert path.is_file(), module
        assert any(t == target or t.startswith(target + ".") for t, _ in _imports(path)), (
            f"{module} no longer imports {target}: drop the exception"
        )


def test_the_checker_sees_an_upward_import(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The checker itself can fail: relative, absolute and in-function upward imports."""
    pkg = tmp_path / "rightfocus"
    for unit in ("hooks.py", "metrics/__init__.py", "engine/__init__.py", "engine/run.py"):
        (pkg / unit).parent.mkdir(parents=True, exist_ok=True)
        (pkg / unit).write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "metrics" / "a.py").write_text(
        "from ..engine import run\ndef f():\n    import rightfocus.engine.run\n"
        "from rightfocus import hooks\nfrom . import b\n"
    )
    monkeypatch.setattr(sys.modules[__name__], "SRC", pkg)
    assert [v.split(": ", 1)[1] for v in _violations()] == [
        "metrics -> engine (rightfocus.engine.run)",
        "metrics -> engine (rightfocus.engine.run)",
    ]
