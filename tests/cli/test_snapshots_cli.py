"""``snaptail snapshots prune`` and ``verify`` on both backends, through the real CLI app."""

from __future__ import annotations

import zlib
from uuid import UUID

from typer.testing import CliRunner

from snaptail import Agent, AgentStore
from snaptail.cli import app
from tests.snapshot_sql import set_snapshot_column, snapshot_row, snapshot_versions

runner = CliRunner(env={"COLUMNS": "200"})


def _agents(url: str, count: int = 3) -> list[UUID]:
    """Agents with 21 events each and a snapshot every 3 (all kept)."""
    ids = []
    with AgentStore(url, snapshot_every=3, keep_snapshots=50) as store:
        for n in range(count):
            agent = Agent(name=f"agent-{n}")
            for i in range(20):
                agent.add_input("user", f"{n}:{i}")
                store.save(agent)
            ids.append(agent.id)
    return ids


def test_prune_applies_the_retention_rule(database_url: str) -> None:
    ids = _agents(database_url)
    assert [len(snapshot_versions(database_url, i)) for i in ids] == [7, 7, 7]
    result = runner.invoke(app, ["snapshots", "prune", "--db", database_url, "--keep", "2"])
    assert result.exit_code == 0, result.output
    assert "pruned 15 snapshot(s) of 3 agent(s)" in result.output
    assert [snapshot_versions(database_url, i) for i in ids] == [[18, 21]] * 3
    again = runner.invoke(app, ["snapshots", "prune", "--db", database_url])
    assert again.exit_code == 0 and "pruned 0 snapshot(s)" in again.output
    refused = runner.invoke(app, ["snapshots", "prune", "--db", database_url, "--keep", "0"])
    assert refused.exit_code == 2


def test_verify_passes_on_a_healthy_database(database_url: str) -> None:
    _agents(database_url, count=2)
    with AgentStore(database_url) as store:
        bare = Agent(name="no snapshot yet")
        store.save(bare)
    result = runner.invoke(app, ["snapshots", "verify", "--db", database_url, "--all"])
    assert result.exit_code == 0, result.output
    assert "3 agent(s): 2 ok, 0 mismatch, 0 untrusted, 1 without snapshot" in result.output
    assert str(bare.id) in result.output


def test_verify_reports_mismatches_and_untrusted_snapshots(database_url: str) -> None:
    first, second, third = _agents(database_url)
    # A snapshot that decodes, matches its checksum and fingerprint, but holds
    # another agent's state: only a rebuild from the log can tell.
    _, _, state = snapshot_row(database_url, first, 21)
    set_snapshot_column(database_url, second, 21, "state", state)
    set_snapshot_column(database_url, second, 21, "checksum", zlib.crc32(state))
    set_snapshot_column(database_url, third, 21, "checksum", 1)
    result = runner.invoke(app, ["snapshots", "verify", "--db", database_url])
    assert result.exit_code == 1, result.output
    assert "1 ok, 1 mismatch, 1 untrusted" in result.output
    assert str(second) in result.output and "name" in result.output
    assert str(third) in result.output and "checksum" in result.output
    assert str(first) not in result.output, "only failures are listed without --all"
    one = runner.invoke(app, ["snapshots", "verify", "--db", database_url, "--agent", str(first)])
    assert one.exit_code == 0 and "1 agent(s): 1 ok" in one.output


def test_verify_refuses_bad_and_unknown_agent_ids(database_url: str) -> None:
    _agents(database_url, count=1)
    bad = runner.invoke(app, ["snapshots", "verify", "--db", database_url, "--agent", "x"])
    assert bad.exit_code == 2
    unknown = UUID(int=7)
    missing = runner.invoke(
        app, ["snapshots", "verify", "--db", database_url, "--agent", str(unknown)]
    )
    assert missing.exit_code == 2 and str(unknown) in missing.output


def test_maintenance_pages_through_every_agent(database_url: str) -> None:
    from snaptail.application.maintenance import prune_snapshots

    ids = _agents(database_url, count=5)
    with AgentStore(database_url) as store:
        assert list(store.agent_ids(page=2)) == sorted(ids)
        seen: list[UUID] = []
        report = prune_snapshots(store, keep=1, on_agent=seen.append)
        assert (report.agents, report.deleted) == (5, 5 * 6)
        assert seen == sorted(ids)


def test_verify_a_random_sample(database_url: str) -> None:
    ids = _agents(database_url, count=5)
    set_snapshot_column(database_url, ids[0], 21, "checksum", 1)
    seen: set[str] = set()
    for _ in range(12):  # a random draw each time: over a dozen, more than one sample
        result = runner.invoke(
            app, ["snapshots", "verify", "--db", database_url, "--sample", "2", "--all"]
        )
        assert result.exit_code in (0, 1), result.output
        assert "2 agent(s)" in result.output
        listed = {str(i) for i in ids if str(i) in result.output}
        assert len(listed) == 2
        assert (result.exit_code == 1) == (str(ids[0]) in listed)
        seen |= listed
    assert len(seen) > 2
    both = runner.invoke(
        app, ["snapshots", "verify", "--db", database_url, "--sample", "2", "--agent", str(ids[1])]
    )
    assert both.exit_code == 2


def test_verify_names_attribute_and_both_values(database_url: str) -> None:
    first, second = _agents(database_url, count=2)
    _, _, state = snapshot_row(database_url, first, 21)
    set_snapshot_column(database_url, second, 21, "state", state)
    set_snapshot_column(database_url, second, 21, "checksum", zlib.crc32(state))
    result = runner.invoke(app, ["snapshots", "verify", "--db", database_url])
    assert result.exit_code == 1, result.output
    assert "state.name: snapshot gives str 'agent-0', replay gives str 'agent-1'" in result.output
