"""The README's Python examples run as written (all blocks in order, one namespace)."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).parents[1] / "README.md"


def test_readme_python_blocks_run() -> None:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert len(blocks) >= 2
    namespace: dict[str, object] = {}
    exec(compile("\n".join(blocks), str(README), "exec"), namespace)
    assert namespace["sg"].shape == (8, 1, 28, 28)  # type: ignore[attr-defined]


def test_readme_opens_with_the_two_commands() -> None:
    text = README.read_text()
    first = re.search(r"```bash\n(.*?)```", text, flags=re.S)
    assert first is not None
    lines = [ln.split("#")[0].strip() for ln in first.group(1).splitlines() if ln.strip()]
    assert lines == ["make demo", "make test"]
    makefile = (README.parent / "Makefile").read_text()
    ci = (README.parent / ".ci" / "run").read_text()
    assert "make test" in ci and "\ntest: setup" in makefile
