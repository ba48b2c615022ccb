"""``snaptail archive run`` killed (SIGKILL) at each of its steps, on both backends:
nothing is lost, nothing is read twice, and the next run completes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from snaptail import AgentStore
from snaptail.archive.manifest import DONE, WRITTEN
from snaptail.archive.runner import CRASH_VARIABLE, STEPS
from tests.archive.test_archive import from_zero, history_of, populate
from tests.projection_support import settle

ROOT = Path(__file__).resolve().parents[2]


def archive_run(url: str, to: Path, crash_at: str | None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop(CRASH_VARIABLE, None)
    if crash_at:
        env[CRASH_VARIABLE] = crash_at
    return subprocess.run(
        [sys.executable, "-m", "snaptail.cli", "archive", "run", "--db", url, "--to", str(to),
         "--recent-events", "10"],
        env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip


@pytest.mark.parametrize("step", STEPS)
def test_sigkill_at_each_step(database_url: str, tmp_path: Path, step: str) -> None:
    ids = populate(database_url, agents=3, events=120)
    settle(database_url)
    history = history_of(database_url, ids)
    stream = from_zero(database_url, tmp_path, ids)
    to = tmp_path / "archive"
    # Killed at the second segment: the first is done, the second half-way.
    killed = archive_run(database_url, to, f"{step}:2")
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    with AgentStore(database_url, recent_events=10) as store:
        segments = store.archive_reader.db.segments(state=None)
        done = 2 if step == "rows-deleted" else 1
        assert len([s for s in segments if s.state == DONE]) == done
        assert len([s for s in segments if s.state == WRITTEN]) == (
            1 if step in {"manifest-written"} else 0
        )
    # Every version readable in exactly one place (or both): the same history, and
    # a projection from zero sees each event once, in the same order.
    assert history_of(database_url, ids) == history
    assert from_zero(database_url, tmp_path, ids) == stream
    again = archive_run(database_url, to, None)
    assert again.returncode == 0, again.stderr
    if step == "manifest-written":
        assert "1 finished" in again.stdout
    assert not list(to.rglob("*.tmp-*"))  # a half-written file was replaced, then removed
    with AgentStore(database_url, recent_events=10) as store:
        assert not store.archive_reader.db.segments(state=WRITTEN)
        for agent_id in ids:
            upto = store.archive_reader.upto(agent_id)
            hot = store.recorder.select_page(agent_id, limit=10**6)
            assert upto > 0 and [e.originator_version for e in hot] == list(
                range(upto + 1, store.event_count(agent_id) + 1)
            )
            problems = [store.archive_reader.verify(s) for s in store.archive_reader.db.segments()]
            assert problems == [None] * len(problems)
    assert history_of(database_url, ids) == history
    assert from_zero(database_url, tmp_path, ids) == stream
