"""``import snaptail`` loads nothing of Google ADK; stored ADK sessions decode without it;
examples/adk_agent.py runs (twice: the second run continues the first)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def adk_loaded_after(statement: str) -> bool:
    code = f"import sys; {statement}; print(any(m.startswith('google.adk') for m in sys.modules))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    ).stdout.strip()
    return out == "True"


def test_import_snaptail_loads_no_adk() -> None:
    assert not adk_loaded_after("import snaptail")
    # The aggregates' module (what stored events name) needs no ADK to decode them.
    assert not adk_loaded_after("import snaptail.integrations.adk_model")


def test_example_runs_and_continues(tmp_path: Path) -> None:
    pytest.importorskip("google.adk")
    url = f"sqlite:///{tmp_path / 'adk.db'}"
    outputs = []
    for _ in range(2):
        done = subprocess.run(
            [sys.executable, "examples/adk_agent.py", "--url", url, "--turns", "3"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
            env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        )
        assert done.returncode == 0, done.stderr[-3000:]
        outputs.append(done.stdout)
    assert "turn 1: heard 'message 0'" in outputs[0]
    assert "turn 6: heard 'message 5'" in outputs[1]
    assert "user:notes=2" in outputs[1]
