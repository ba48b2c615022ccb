"""``snaptail inspect``: through the real CLI, on a real SQLite file."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from snaptail import Agent, AgentStore, Never
from snaptail.application.inspection import InspectionStore, inspect_agent
from snaptail.cli import app
from snaptail.infrastructure.recorder import StoredSnapshot

runner = CliRunner()


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'inspect.db'}"


def inspect(*args: str) -> Result:
    return runner.invoke(app, ["inspect", *args], env={"COLUMNS": "250"})


def written(url: str, events: int, snapshot_every: int | None = 20) -> Agent:
    policy = {"policy": Never()} if snapshot_every is None else {"snapshot_every": snapshot_every}
    with AgentStore(url, **policy) as store:  # type: ignore[arg-type]
        agent = Agent("inspected")
        for i in range(events - 1):
            agent.add_input("user", f"message {i} " + "w" * 200)
            if i % 5 == 0:
                store.save(agent)
        store.save(agent)
    return agent


def test_inspect_shows_a_healthy_agent(url: str) -> None:
    agent = written(url, 45)
    result = inspect(str(agent.id), "--db", url)
    assert result.exit_code == 0, result.output
    out = result.output
    assert f"agent {agent.id}" in out
    assert "snaptail.domain.agent.Agent" in out
    assert "│ version              │ 45 " in out
    assert "snapshot versions    │ 42 (" in out and ", 22 (" in out
    assert "loaded from snapshot │ 42" in out
    assert "tail length          │ 3 events" in out
    assert "event bytes" in out and "KiB" in out
    assert "memory of the loaded agent" in out and "window" in out
    assert "recent_events" in out
    assert "last 20 events, newest first" in out
    assert out.count("Agent.InputItemAdded") == 20
    assert "Agent.Created" not in out  # older than the last 20
    assert "healthy" in out and "warning" not in out


def test_inspect_warns_when_no_snapshot_is_valid(url: str) -> None:
    agent = written(url, 30)
    with AgentStore(url) as store:
        [newest, *_] = store.recorder.select_snapshot_infos(agent.id)
        store.recorder.delete_snapshots(agent.id, keep=0)
        store.recorder.insert_snapshot(
            StoredSnapshot(
                originator_id=agent.id,
                originator_version=newest.originator_version,
                topic=store.mapper.topic_of(Agent),
                fingerprint="written-by-older-code",
                checksum=0,
                state=b"\x80",
            ),
            keep_snapshots=2,
        )
    result = inspect(str(agent.id), "--db", url)
    assert result.exit_code == 0, result.output
    assert "(invalid)" in result.output
    assert "warning: no valid snapshot" in result.output
    assert "loaded from snapshot │ none" in result.output


def test_inspect_warns_when_the_tail_is_past_the_policy(url: str) -> None:
    agent = written(url, 150, snapshot_every=None)
    result = inspect(str(agent.id), "--db", url, "--snapshot-every", "100")
    assert "warning: tail past its policy: 150 events since the last snapshot" in result.output
    relaxed = inspect(str(agent.id), "--db", url, "--snapshot-every", "500")
    assert "tail past its policy" not in relaxed.output and "healthy" in relaxed.output


def test_inspect_warns_when_the_agent_is_over_its_budget(url: str) -> None:
    agent = written(url, 45)
    result = inspect(str(agent.id), "--db", url, "--budget", "10KiB")
    assert result.exit_code == 3, result.output  # over its budget: exits 3 (issue 18)
    assert "warning: over its memory budget" in result.output
    assert "budget 10.0 KiB" in result.output
    assert "largest parts: " in result.output


def test_inspect_reports_an_unknown_or_malformed_id(url: str) -> None:
    written(url, 3)
    missing = inspect(str(uuid.uuid4()), "--db", url)
    assert missing.exit_code == 1 and "not found" in missing.output
    malformed = inspect("not-a-uuid", "--db", url)
    assert malformed.exit_code == 2 and "no agent has an id starting with" in malformed.output


def test_inspect_agent_as_a_library_call(database_url: str) -> None:
    agent = written(database_url, 25)
    with InspectionStore(database_url, snapshot_every=20) as store:
        found = inspect_agent(store, agent.id, last=3, budget=1)
    assert found.version == 25 and found.loaded_from == 22 and found.tail == 3
    assert [e.version for e in found.last_events] == [25, 24, 23]
    assert found.event_bytes > 24 * 200
    assert found.memory.total > 0 and found.budget == 1
    assert [w.split(":")[0] for w in found.warnings] == ["over its memory budget"]
