"""``snaptail worker run`` on PostgreSQL when its connections are lost for real
(``pg_terminate_backend`` on the worker's backends, a role that may no longer log in):
it notices it lost its lock and stands by while another worker runs; it reconnects
with backoff and catches up; or it exits non-zero after ``--give-up-after`` seconds,
logging each attempt. Never two workers applying events, never alive and stuck."""

from __future__ import annotations

import os
import signal
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from snaptail import AgentStore
from snaptail.projections.lock import advisory_key
from tests.conftest import POSTGRES_URL
from tests.projection_support import (
    actual,
    applied_by,
    close_views,
    expected,
    more,
    seed,
    start_worker,
    view_position,
    wait_caught_up,
    wait_until,
)
from tests.projection_support import stop_worker as stop

APPLIED = "tests.projection_support:Applied"


@pytest.fixture
def store(postgres_url: str) -> Iterator[AgentStore]:
    with AgentStore(postgres_url, snapshot_every=100) as s:
        yield s
    close_views()


def admin(statement: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        cursor = conn.execute(statement, params)
        return cursor.fetchall() if cursor.description else []


def lock_holders(schema: str, projection: str) -> list[int]:
    """Backend pids holding the projection's advisory lock."""
    key = advisory_key(schema, projection)
    rows = admin(
        "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 1 "
        "AND classid::bigint = %s AND objid::bigint = %s",
        ((key >> 32) & 0xFFFFFFFF, key & 0xFFFFFFFF),
    )
    return [int(str(row[0])) for row in rows]


def schema_of(url: str) -> str:
    return url.rpartition("schema=")[2]


def test_a_worker_that_loses_its_lock_stands_by_while_another_runs(
    store: AgentStore, tmp_path: Path
) -> None:
    url = store.url
    ids = seed(store, agents=2, events=40)
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    a = start_worker(url, logs[0], "--batch-size", "7", target=APPLIED)
    b: subprocess.Popen[bytes] | None = None
    try:
        wait_caught_up(store, a, logs[0], "Applied")
        [holder] = lock_holders(schema_of(url), "Applied")

        # Freeze A, end its lock's session on the server, and let B take the lock.
        a.send_signal(signal.SIGSTOP)
        admin("SELECT pg_terminate_backend(%s)", (holder,))
        b = start_worker(url, logs[1], "--batch-size", "7", target=APPLIED)
        wait_until(lambda: "lock acquired" in logs[1].read_text())
        a.send_signal(signal.SIGCONT)

        # A must find out it lost the lock (it checks while idle and before each
        # commit) and stand by; every event from now on is B's.
        taken_over = store.recorder.max_notification_id() or 0
        more(store, ids[0], 30, seed=1)
        wait_until(lambda: "standing by" in logs[0].read_text())
        more(store, ids[1], 30, seed=2)
        head = store.recorder.max_notification_id() or 0
        wait_until(lambda: view_position(url, "Applied")[0] == head)
        by = applied_by(url)
        assert {pid for n, pid in by.items() if n > taken_over} == {b.pid}
        assert lock_holders(schema_of(url), "Applied") != []

        # B stops; A takes over again and applies what comes next.
        assert stop(b, signal.SIGINT) == 0
        wait_until(lambda: logs[0].read_text().count("lock acquired") == 2)
        more(store, ids[0], 20, seed=3)
        head = store.recorder.max_notification_id() or 0
        wait_until(lambda: view_position(url, "Applied")[0] == head)
        assert applied_by(url)[head] == a.pid
    finally:
        statuses = [stop(w) for w in (a, b) if w is not None]
    text = logs[0].read_text()
    assert statuses == [0, 0], [log.read_text() for log in logs]
    assert "lost its view database connection" in text and "Traceback" not in text
    by = applied_by(url)
    assert sorted(by) == sorted(
        n.id for n in store.recorder.select_notifications(start=1, limit=10_000)
    )  # every event applied once, by one worker or the other


@pytest.fixture
def role(store: AgentStore) -> Iterator[str]:
    """A login role of its own for the worker (a member of ``postgres``, which owns
    the event tables the worker's recorder checks at start)."""
    name = f"snaptail_worker_{uuid.uuid4().hex[:8]}"
    admin(f"CREATE ROLE {name} LOGIN")
    admin(f"GRANT postgres TO {name}")
    try:
        yield name
    finally:
        admin("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", (name,))
        admin(f"DROP OWNED BY {name}")
        admin(f"DROP ROLE {name}")


def as_role(url: str, role: str) -> str:
    return url.replace("postgresql://postgres@", f"postgresql://{role}@", 1)


def cut_off(role: str) -> None:
    """The server refuses the role's new connections and ends its current ones."""
    admin(f"ALTER ROLE {role} NOLOGIN")
    admin("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", (role,))


def test_lost_connections_are_restored_with_backoff_and_the_worker_catches_up(
    store: AgentStore, role: str, tmp_path: Path
) -> None:
    assert store.url.startswith("postgresql://postgres@")
    ids = seed(store, agents=2, events=40)
    log = tmp_path / "worker.log"
    worker = start_worker(as_role(store.url, role), log, "--give-up-after", "120")
    try:
        wait_caught_up(store, worker, log)
        backends = admin("SELECT count(*) FROM pg_stat_activity WHERE usename = %s", (role,))
        assert int(str(backends[0][0])) >= 3  # events pool, view (and lock), LISTEN

        cut_off(role)
        wait_until(lambda: "reconnect attempt 3 failed" in log.read_text())
        more(store, ids[0], 30, seed=1)  # saved while the worker cannot connect
        admin(f"ALTER ROLE {role} LOGIN")
        more(store, ids[1], 30, seed=2)
        head = wait_caught_up(store, worker, log)
    finally:
        status = stop(worker)
    text = log.read_text()
    assert status == 0, text
    assert "reconnected" in text and "Traceback" not in text
    assert view_position(store.url) == (head, head)
    assert actual(store.url) == expected(store, ids)


def test_a_worker_gives_up_after_the_configured_time_and_exits_non_zero(
    store: AgentStore, role: str, tmp_path: Path
) -> None:
    seed(store, agents=1, events=20)
    log = tmp_path / "worker.log"
    worker = start_worker(as_role(store.url, role), log, "--give-up-after", "2")
    try:
        wait_caught_up(store, worker, log)
        cut_off(role)
        status = worker.wait(timeout=120)
    finally:
        stop(worker, signal.SIGKILL)
    text = log.read_text()
    assert status == 4, text
    assert "reconnect attempt 1 failed" in text and "reconnect attempt 2 failed" in text
    assert "within 2s" in text and "not permitted to log in" in text
    assert "Traceback" not in text
    assert os.path.exists(log)
