"""The LangGraph integration stays optional: ``import snaptail`` loads none of it; and
the example script runs (interrupt in one process, resume and fork in another)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_import_snaptail_loads_no_langgraph() -> None:
    code = (
        "import sys, snaptail\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'langgraph', 'langchain_core', 'snaptail.integrations'} "
        "or m.startswith('snaptail.integrations'))\n"
        "print(loaded)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert done.stdout.strip() == "[]"


def test_langgraph_chat_example_runs(tmp_path: Path) -> None:
    pytest.importorskip("langgraph")
    db = tmp_path / "chat.db"

    def run(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "examples.langgraph_chat", "--db", str(db), *args],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=600,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    first = run("--turns", "30")
    assert "30 turns stored; waiting for approval: {'approve': 'refund order 1234'}" in first
    second = run("--approve", "yes")
    assert "resuming a thread of 61 messages at ('reply',)" in second
    assert "assistant: refund done" in second
    assert "the fork has" in second
