"""Review: a rolling deploy that bumps ``snapshot_version`` (old and new code loading
the same agents) must not make the two versions undo each other's snapshots, so
that each load after the first replays at most its tail."""

from __future__ import annotations

from pathlib import Path

from tests.snapshots.test_rolling_deploy import V1, V1_BUMPED, _run


def test_old_and_bumped_code_alternating_replay_the_log_once(
    sqlite_url: str, tmp_path: Path
) -> None:
    agent_id = _run(tmp_path, V1, "write", sqlite_url, {"events": 450})["id"]
    first = _run(tmp_path, V1_BUMPED, "load", sqlite_url, {"id": agent_id})
    assert first["loaded_from"] == 0  # the one replay the bump costs
    reports = []
    for module in (V1, V1_BUMPED, V1, V1_BUMPED):
        report = _run(tmp_path, module, "load", sqlite_url, {"id": agent_id})
        reports.append((report["loaded_from"], report["rows_read"], report["snapshots_after"]))
    for loaded_from, rows_read, _ in reports:
        assert loaded_from > 0 and rows_read < 100, reports
