"""``--keys URL`` on the commands that read agents (``worker run``, ``inspect``,
``snapshots verify``, ``ui``), as on ``snaptail forget``; a missing or wrong master key
is one line on stderr in each."""

from __future__ import annotations

import base64
import os
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from snaptail import Agent, AgentStore
from snaptail.cli import app
from snaptail.privacy import KEYS_URL_ENV, MASTER_KEY_ENV, MASTER_KEY_FILE_ENV, new_master_key
from snaptail.projections import AgentStats, ProjectionWorker
from snaptail.projections.agent_stats import read_agent_stats
from snaptail.projections.view import open_view

MASTER = os.urandom(32)


@pytest.fixture
def sealed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[str, str, str, str]:
    """(db, keys, view, agent id): one agent with a subject, snapshotted; no
    $SNAPTAIL_KEYS_URL, the master key in $SNAPTAIL_MASTER_KEY."""
    db, keys = f"sqlite:///{tmp_path}/events.db", f"sqlite:///{tmp_path}/keys.db"
    monkeypatch.delenv(KEYS_URL_ENV, raising=False)
    monkeypatch.delenv(MASTER_KEY_FILE_ENV, raising=False)
    monkeypatch.setenv(MASTER_KEY_ENV, base64.b64encode(MASTER).decode())
    with AgentStore(db, keys=keys, snapshot_every=2) as store:
        agent = Agent("sealed")
        store.add_subject(agent, "user-1")
        agent.set_system_prompt("SEALED-PROMPT")
        store.save(agent)
        store.snapshot(agent.id)
    return db, keys, f"sqlite:///{tmp_path}/view.db", str(agent.id)


def _commands(db: str, keys: str, view: str, agent: str) -> dict[str, list[str]]:
    return {
        "inspect": ["inspect", agent, "--db", db, "--keys", keys],
        "verify": ["snapshots", "verify", "--db", db, "--keys", keys, "--all"],
        "worker": ["worker", "run", "snaptail.projections:AgentStats", "--db", db,
                   "--view-db", view, "--keys", keys, "--catch-up-only", "--no-progress"],
        "ui": ["ui", "--db", db, "--keys", keys],
    }  # fmt: skip


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """``snaptail ui`` runs the app it made through a test client, not a server."""
    pytest.importorskip("starlette")
    import uvicorn

    apps: list[Any] = []
    monkeypatch.setattr(uvicorn, "run", lambda application, **_: apps.append(application))
    return apps


def test_commands_read_encrypted_agents_with_keys_option(
    sealed: tuple[str, str, str, str], served: list[Any]
) -> None:
    from starlette.testclient import TestClient

    db, keys, view, agent = sealed
    runner = CliRunner()
    commands = _commands(db, keys, view, agent)
    result = runner.invoke(app, commands["inspect"])
    assert result.exit_code == 0, result.output
    assert "SystemPromptSet" in result.output and "redacted" not in result.output
    result = runner.invoke(app, commands["verify"])
    assert result.exit_code == 0, result.output
    assert "ok" in result.output
    result = runner.invoke(app, commands["worker"])
    assert result.exit_code == 0, result.output
    with ProjectionWorker(AgentStats, db, view, keys=keys, master_key=MASTER) as worker:
        assert [r.name for r in read_agent_stats(worker.view, top=None)] == ["sealed"]
    result = runner.invoke(app, commands["ui"])
    assert result.exit_code == 0, result.output
    with TestClient(served[0], base_url="http://127.0.0.1") as client:
        page = client.get(f"/api/v1/agents/{agent}/events/2")
    assert page.status_code == 200 and "SEALED-PROMPT" in page.text, page.text


@pytest.mark.parametrize("command", ["inspect", "verify", "worker", "ui"])
@pytest.mark.parametrize("master", ["missing", "wrong", "malformed"])
def test_a_missing_or_wrong_master_key_is_one_line(
    sealed: tuple[str, str, str, str],
    served: list[Any],
    monkeypatch: pytest.MonkeyPatch,
    command: str,
    master: str,
) -> None:
    if master == "missing":
        monkeypatch.delenv(MASTER_KEY_ENV)
    else:
        monkeypatch.setenv(MASTER_KEY_ENV, new_master_key() if master == "wrong" else "xyz")
    result = CliRunner().invoke(app, _commands(*sealed)[command])
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: key store "), result.output
    assert {
        "missing": "no master key: set $SNAPTAIL_MASTER_KEY",
        "wrong": "not the one this key store was made with",
        "malformed": "not 32 bytes in base64 or hex",
    }[master] in lines[0]
    assert "Traceback" not in result.output and not served


def test_partitioned_workers_get_the_keys_option(sealed: tuple[str, str, str, str]) -> None:
    view = sealed[2]
    result = CliRunner().invoke(app, [*_commands(*sealed)["worker"], "--partitions", "2"])
    assert result.exit_code == 0, result.output  # (each child decrypted its slice)
    built = open_view(view)
    try:
        assert [r.name for r in read_agent_stats(built, top=None)] == ["sealed"]
    finally:
        built.close()
