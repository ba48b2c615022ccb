"""Every ```python block of README.md runs, in order, in one module namespace."""

from __future__ import annotations

import os
import re
import subprocess
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


def test_readme_examples_run_twice_from_any_directory(tmp_path: Path) -> None:
    """As a reader runs them: no database URL set, from another directory, twice in
    a row (two processes, as two runs of a script); nothing is written where they run."""
    blocks = BLOCK.findall(README.read_text(encoding="utf-8"))
    script = tmp_path / "readme_examples_script.py"
    script.write_text("\n".join(blocks), encoding="utf-8")
    where = tmp_path / "elsewhere"
    where.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "SNAPTAIL_DATABASE_URL"}
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), str(README.parent)])
    for attempt in (1, 2):  # imported as a module: agent types in __main__ are refused
        done = subprocess.run(
            [sys.executable, "-c", "import readme_examples_script"], cwd=where, env=env,
            capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        assert done.returncode == 0, f"run {attempt}: {done.stderr[-3000:]}"
    # (Hypothesis, run by snaptail.testing, keeps its example cache in ./.hypothesis.)
    assert [p.name for p in where.iterdir() if p.name != ".hypothesis"] == []
