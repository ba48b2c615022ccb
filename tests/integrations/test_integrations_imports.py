"""``import snaptail`` loads no agent framework; the integrations load theirs on use."""

from __future__ import annotations

import subprocess
import sys

FRAMEWORKS = ("agents", "langgraph", "openai")


def loaded_after(statement: str) -> set[str]:
    code = (
        f"import sys; {statement}; print(','.join(m for m in {FRAMEWORKS!r} if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    return set(filter(None, out.split(",")))


def test_import_snaptail_loads_no_framework() -> None:
    assert loaded_after("import snaptail") == set()


def test_stored_sessions_decode_without_the_sdk() -> None:
    """The session module (whose aggregate type events name) imports the SDK only
    when a session is made."""
    assert loaded_after("import snaptail.integrations.openai_agents") == set()
    assert "agents" in loaded_after(
        "from snaptail.integrations.openai_agents import SnaptailSession; "
        "SnaptailSession('s', ':memory:')"
    )
