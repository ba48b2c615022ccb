"""``snaptail bench langgraph --quick`` runs and reports every saver at each length."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("langgraph.checkpoint.sqlite")

from typer.testing import CliRunner

from snaptail.cli import app

runner = CliRunner()


def test_bench_langgraph_quick_json() -> None:
    result = runner.invoke(
        app, ["bench", "langgraph", "--quick", "--steps", "5,12", "--chars", "100", "--json"]
    )
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    savers = {r["saver"] for r in rows}
    assert {"InMemorySaver (no disk)", "snaptail (SQLite)", "SqliteSaver"} <= savers
    assert sorted((r["saver"], r["steps"]) for r in rows if "SQLite" in r["saver"]) == [
        ("snaptail (SQLite)", 5),
        ("snaptail (SQLite)", 12),
    ]
    for row in rows:
        assert row["message_bytes"] == 2 * row["steps"] * 100
        if row["saver"].startswith("InMemorySaver"):
            assert row["storage_bytes"] == 0 and row["get_state_cold_ms"] is None
            continue
        for key in ("storage_bytes", "ms_per_step", "get_state_ms", "get_state_cold_ms"):
            assert row[key] > 0, (key, row)
    by_saver = {(r["saver"], r["steps"]): r["storage_bytes"] for r in rows}
    # SqliteSaver stores the whole message list at every step; snaptail only the new ones.
    assert by_saver[("snaptail (SQLite)", 12)] < by_saver[("SqliteSaver", 12)]
