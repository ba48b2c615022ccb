"""Shared by the projection tests: seeded traffic and AgentStats' ground truth."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any
from uuid import UUID

import msgspec
import pytest
from eventsourcing.persistence import Notification, StoredEvent

from examples.chat_agent import ChatPlatformAgent
from snaptail import Agent, AgentStore
from snaptail.projections import (
    AgentStats,
    Partition,
    Projection,
    ViewCursor,
    ViewDatabase,
    open_view,
    read_agent_stats,
)
from snaptail.workload import Workload

ROOT = Path(__file__).resolve().parent.parent
FIGURES = ("events", "bytes", "last_version", "tokens_in", "tokens_out", "tool_calls", "errors")


def seed(
    store: AgentStore, agents: int, events: int, seed: int = 1, slices: int = 1
) -> list[UUID]:
    """``agents`` agents (every other one a user-defined ChatPlatformAgent) with
    about ``events`` events each, saved 50 at a time; more agents if needed until
    each of ``slices`` partitions owns at least one (ids are random)."""
    ids: list[UUID] = []
    i = 0
    while i < agents or any(
        not any(Partition(k, slices).owns(a) for a in ids) for k in range(slices)
    ):
        agent: Agent = ChatPlatformAgent(f"chat-{i}") if i % 2 else Agent(f"agent-{i}")
        Workload(seed=seed * 1000 + i).drive(agent, events=events, save=store.save, batch=50)
        ids.append(agent.id)
        i += 1
    return ids


def more(store: AgentStore, agent_id: UUID, events: int, seed: int) -> None:
    """Add ``events`` events to an existing agent (new commands on a loaded agent)."""
    agent = store.get(agent_id)
    for i in range(events // 2):
        agent.add_input("user", f"more {seed} {i}")
        agent.record_error(f"error {i}") if i % 5 == 0 else agent.add_output(
            "assistant_message", f"reply {i}"
        )
    store.save(agent)


def expected(store: AgentStore, ids: list[UUID]) -> dict[str, dict[str, int]]:
    """Each agent's figures computed the slow, independent way: a full replay (its
    own usage counters) and a page-by-page read of its stored events."""
    truth = {}
    for agent_id in ids:
        agent = store.replay(agent_id)
        size, gt = 0, 0
        while page := store.recorder.select_page(agent_id, gt=gt, limit=500):
            size += sum(len(s.state) for s in page)
            gt = page[-1].originator_version
        usage = agent.state.usage
        truth[str(agent_id)] = {
            "events": agent.version,
            "bytes": size,
            "last_version": agent.version,
            "tokens_in": usage.input_tokens,
            "tokens_out": usage.output_tokens,
            "tool_calls": usage.tool_calls,
            "errors": usage.errors + usage.tool_errors,
        }
    return truth


def actual(view_url: str) -> dict[str, dict[str, int]]:
    """The AgentStats view, as the same kind of dict."""
    view = open_view(view_url)
    try:
        rows = read_agent_stats(view, top=None)
    finally:
        view.close()
    return {row.agent_id: {f: getattr(row, f) for f in FIGURES} for row in rows}


_views: dict[str, ViewDatabase] = {}


def view_position(view_url: str, name: str = AgentStats.name) -> tuple[int, int]:
    """(notification id of the position, events processed) of a projection, read
    from its view (on one connection per view, kept open for polling until
    :func:`close_views`)."""
    view = _views.get(view_url)
    if view is None:
        view = _views[view_url] = open_view(view_url)
        view.setup()
    return view.position(name).notification_id, view.processed(name)


def close_views() -> None:
    while _views:
        _views.popitem()[1].close()


def wait_until(condition: Callable[[], bool], timeout: float = 60.0) -> None:
    """Poll ``condition`` until true; fail after ``timeout`` seconds (not a timing check:
    the bound only keeps a broken worker from hanging the suite)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(0.01)


def start_worker(
    db: str,
    log: Path,
    *args: str,
    target: str = "snaptail.projections:AgentStats",
    env: dict[str, str] | None = None,
) -> subprocess.Popen[Any]:
    """``snaptail worker run`` as a real process, its stderr in ``log`` (``env``:
    extra environment variables, e.g. ``PGAPPNAME`` to find its connections)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    command = [sys.executable, "-m", "snaptail.cli", "worker", "run", target, "--db", db]
    with log.open("ab") as err:
        return subprocess.Popen(
            [*command, "--no-progress", *args],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )


POISON = "poison-pill"


class Boom(Projection):
    """Records each notification id it sees; raises on an event carrying ``POISON``."""

    tables = ("CREATE TABLE IF NOT EXISTS boom_seen (notification_id BIGINT PRIMARY KEY)",)

    def handle(self, view: ViewCursor, notification: Notification) -> None:
        if POISON.encode() in notification.state:
            raise ValueError(f"cannot digest {POISON}")
        view.execute("INSERT INTO boom_seen VALUES (?)", (notification.id,))


def boom_seen(view_url: str) -> list[int]:
    view = open_view(view_url)
    try:
        with view.reading() as cur:
            cur.execute("SELECT notification_id FROM boom_seen ORDER BY notification_id")
            return [row[0] for row in cur.fetchall()]
    finally:
        view.close()


def add_poison(store: AgentStore, agent_id: UUID) -> int:
    """Give the agent an input carrying ``POISON``; its notification id."""
    before = store.recorder.max_notification_id() or 0
    agent = store.get(agent_id)
    agent.add_input("user", POISON)
    store.save(agent)
    recorded = store.recorder.select_notifications(
        start=before, limit=10, inclusive_of_start=False
    )
    found = [n.id for n in recorded if POISON.encode() in n.state]
    assert len(found) == 1, found
    return found[0]


def add_undecodable_usage(store: AgentStore, agent_id: UUID) -> tuple[int, int]:
    """Store an ``LlmRequestFinished`` whose token counts are text (bad data written
    by some other tool). Returns (notification id, version)."""
    version = (store.recorder.max_version(agent_id) or 0) + 1
    state = msgspec.msgpack.encode(
        {"timestamp": "2026-01-01T00:00:00+00:00", "request_id": "r",
         "usage": {"input_tokens": "many", "output_tokens": 3}}
    )  # fmt: skip
    event = StoredEvent(agent_id, version, "snaptail.domain.agent:Agent.LlmRequestFinished", state)
    before = store.recorder.max_notification_id() or 0
    store.recorder.insert_events([event])
    notification = store.recorder.select_notifications(
        start=before, limit=1, inclusive_of_start=False
    )[0]
    return notification.id, version


class Applied(Projection):
    """Records which worker process applied each event (exactly once: a primary key)."""

    tables = (
        "CREATE TABLE IF NOT EXISTS applied_by "
        "(notification_id BIGINT PRIMARY KEY, pid BIGINT NOT NULL)",
    )

    def process(self, view: ViewCursor, batch: Sequence[Notification]) -> None:
        pid = os.getpid()
        view.executemany("INSERT INTO applied_by VALUES (?, ?)", [(n.id, pid) for n in batch])


def applied_by(view_url: str) -> dict[int, int]:
    """notification id -> pid of the worker that applied it."""
    view = open_view(view_url)
    try:
        with view.reading() as cur:
            cur.execute("SELECT notification_id, pid FROM applied_by")
            return dict(cur.fetchall())
    finally:
        view.close()


def stop_worker(process: subprocess.Popen[Any], how: signal.Signals = signal.SIGTERM) -> int:
    """Signal a worker process (if still running) and wait for its exit status."""
    if process.poll() is None:
        process.send_signal(how)
    return process.wait(timeout=60)


def wait_caught_up(
    store: AgentStore, worker: subprocess.Popen[Any], log: Path, name: str = AgentStats.name
) -> int:
    """Wait until the worker process has applied every stored event (failing at once,
    with its log, if it exits instead); the head it reached."""
    head = store.recorder.max_notification_id() or 0
    wait_until(lambda: view_position(store.url, name)[0] == head or worker.poll() is not None)
    assert worker.poll() is None, log.read_text()
    return head


def settle(url: str) -> None:
    """PostgreSQL: wait until every event stored is visible to projection readers (no
    transaction older than the newest write still running anywhere on the server;
    other clients of a shared test server can hold that back). SQLite: nothing."""
    if not url.startswith("postgresql"):
        return
    import psycopg

    from snaptail.infrastructure.urls import postgres_connect_args

    deadline = time.monotonic() + 60
    with psycopg.connect(**postgres_connect_args(url), autocommit=True) as conn:
        while time.monotonic() < deadline:
            row = conn.execute(
                "SELECT COALESCE((SELECT MAX(transaction_id::text::bigint) FROM stored_events),"
                " 0) < pg_snapshot_xmin(pg_current_snapshot())::text::bigint"
            ).fetchone()
            if row and row[0]:
                return
            time.sleep(0.2)
    pytest.skip("a transaction elsewhere on the server held the visibility horizon for 60 s")
