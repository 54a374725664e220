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
import re
import sys
from pathlib import Path

import pytest

import rightfocus

SRC = Path(rightfocus.__file__).resolve().parent

LAYERS: list[set[str]] = [
    # foundation
    {
        "_io",
        "_registry",
        "_modules",
        "_pooling",
        "hooks",
        "errors",
        "configs",
        "_images",
        "_events",
    },
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


# --- imports inside functions --------------------------------------------------------------------

#: Files (or folders, ending in "/") of ``src/rightfocus`` whose imports inside functions must
#: each say why they are not at the top: a ``# heavy: ...`` (avoids a slow import, e.g. Lightning,
#: pandas, torchvision on a path that does not need it) or ``# optional: ...`` (a package or
#: platform module that may be missing) comment on the import's line or directly above it (one
#: comment may head a block of consecutive imports). Every other import belongs at the top.
EXPLAINED = (
    "_events.py",
    "_images.py",
    "_io.py",
    "analysis/",
    "attribution/base.py",
    "attribution/deeplift.py",
    "attribution/rise.py",
    "attribution/surrogate.py",
    "bayes/inference.py",
    "cli.py",
    "data/base.py",
    "data/classification.py",
    "data/decoy_mnist.py",
    "data/feedback.py",
    "data/folders.py",
    "data/masked.py",
    "data/mnist.py",
    "data/splits.py",
    "data/transforms.py",
    "engine/callbacks.py",
    "engine/checkpoint.py",
    "engine/config.py",
    "engine/datamodule.py",
    "engine/decoy.py",
    "engine/evaluate.py",
    "engine/module.py",
    "engine/report.py",
    "engine/reproduce.py",
    "engine/run.py",
    "engine/sweep.py",
    "engine/sweep_spec.py",
    "engine/validate.py",
    "feedback/",
    "guidance/",
    "metrics/calibration.py",
    "metrics/classification.py",
    "models/zoo.py",
    "studio/",
    "viz/",
)
_MARKER = re.compile(r"#\s*(heavy|optional):")


def _function_imports(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    found: dict[int, ast.Import | ast.ImportFrom] = {}
    for fn in ast.walk(tree):
        if isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
            for node in ast.walk(fn):
                if isinstance(node, ast.Import | ast.ImportFrom):
                    found[id(node)] = node
    return sorted(found.values(), key=lambda n: n.lineno)


def _unexplained(path: Path) -> list[str]:
    """``file:line: import`` for each function-level import without a heavy/optional comment."""
    text = path.read_text()
    lines = text.splitlines()
    imports = _function_imports(ast.parse(text, str(path)))
    covered = {i for n in imports for i in range(n.lineno, (n.end_lineno or n.lineno) + 1)}
    bad = []
    for node in imports:
        if _MARKER.search(lines[node.lineno - 1]):
            continue
        j = node.lineno - 1  # 1-based line above the import; skip the imports of its block
        while j in covered:
            j -= 1
        comment = []
        while j >= 1 and lines[j - 1].strip().startswith("#"):
            comment.append(lines[j - 1])
            j -= 1
        if not any(_MARKER.search(c) for c in comment):
            bad.append(
                f"{path.relative_to(SRC.parent)}:{node.lineno}: {lines[node.lineno - 1].strip()}"
            )
    return bad


def _explained_files() -> list[Path]:
    files = []
    for entry in EXPLAINED:
        target = SRC / entry
        files += sorted(target.rglob("*.py")) if entry.endswith("/") else [target]
    return files


def test_imports_inside_functions_say_why() -> None:
    """In the listed modules an import inside a function avoids a heavy or optional import,
    and says so; everything else is imported at the top (so the import graph is visible)."""
    missing = [str(f) for f in _explained_files() if not f.is_file()]
    assert not missing, f"listed in EXPLAINED but missing: {missing}"
    bad = [line for f in _explained_files() for line in _unexplained(f)]
    assert not bad, (
        "imports inside functions without a '# heavy: ...' / '# optional: ...' reason (move "
        "them to the top of the module, or say why they cannot be there):\n" + "\n".join(bad)
    )


def test_the_import_reason_check_can_fail(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pkg = tmp_path / "rightfocus"
    pkg.mkdir()
    (pkg / "m.py").write_text(
        "def a():\n    # heavy: pandas\n    import pandas\n    import numpy\n"
        "def b():\n    import json\n"
        "def c():\n    import fcntl  # optional: POSIX only\n"
        "def d():\n    x = 1  # heavy: not above an import\n    import os\n"
    )
    monkeypatch.setattr(sys.modules[__name__], "SRC", pkg)
    assert [b.split(": ", 1)[1] for b in _unexplained(pkg / "m.py")] == ["import json", "import os"]
