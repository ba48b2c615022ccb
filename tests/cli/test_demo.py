"""`snaptail demo` writes agents and prints a table of what loading them cost."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from snaptail import AgentStore
from snaptail.cli import app


def test_demo_prints_a_row_per_agent(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'demo.db'}"
    result = CliRunner().invoke(app, ["demo", "--db", url, "--scale", "0.08"])
    assert result.exit_code == 0, result.output
    for name in ("support-bot", "slack-thread-eng", "research-assistant", "cron-digest"):
        assert name in result.output
    assert "640" in result.output  # cron-digest: 8,000 x 0.08 events
    with AgentStore(url) as store:
        agent_ids = store.recorder.originator_ids()
        assert len(agent_ids) == 4
        counts = sorted(store.event_count(agent_id) for agent_id in agent_ids)
        assert counts == [120, 200, 320, 640]
