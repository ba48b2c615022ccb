"""Every ```python block of README.md runs, in order, in one module namespace."""

from __future__ import annotations

import re
import sys
import types
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
BLOCK = re.compile(r"^```python\n(.*?)^```", re.DOTALL | re.MULTILINE)


def test_readme_examples_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocks = BLOCK.findall(README.read_text(encoding="utf-8"))
    assert len(blocks) >= 5, "the README's examples were not found"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SNAPTAIL_DATABASE_URL", f"sqlite:///{tmp_path / 'readme.db'}")
    # A real module, so classes defined by the examples have an importable topic.
    module = types.ModuleType("readme_examples")
    monkeypatch.setitem(sys.modules, module.__name__, module)
    for number, source in enumerate(blocks, start=1):
        code = compile(source, f"README.md python block {number}", "exec")
        exec(code, module.__dict__)


def test_readme_examples_run_twice_from_any_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As a reader runs them: no database URL set, from some directory, twice in a row
    in one process; nothing is written to the directory they run from."""
    blocks = BLOCK.findall(README.read_text(encoding="utf-8"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SNAPTAIL_DATABASE_URL", raising=False)
    for attempt in (1, 2):
        module = types.ModuleType(f"readme_examples_{attempt}")
        monkeypatch.setitem(sys.modules, module.__name__, module)
        for number, source in enumerate(blocks, start=1):
            code = compile(source, f"README.md python block {number} (run {attempt})", "exec")
            exec(code, module.__dict__)
    assert list(tmp_path.iterdir()) == []
