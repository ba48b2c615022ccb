"""Projection workers in-process, on both backends: exact AgentStats figures,
batches, live following, locks, the position fence, a user-defined projection."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from uuid import UUID

import msgspec
import psycopg
import pytest
from typer.testing import CliRunner

from examples.tool_latency import ToolLatency
from snaptail import Agent, AgentStore
from snaptail.cli import app
from snaptail.projections import AgentStats, ProjectionWorker, open_view
from snaptail.projections import worker as worker_module
from tests.conftest import POSTGRES_URL
from tests.projection_support import (
    actual,
    close_views,
    expected,
    more,
    seed,
    settle,
    view_position,
    wait_until,
)


@pytest.fixture
def store(database_url: str) -> Iterator[AgentStore]:
    with AgentStore(database_url, snapshot_every=100) as s:
        yield s
    close_views()


def test_agent_stats_match_a_full_replay_of_every_agent(store: AgentStore) -> None:
    ids = seed(store, agents=6, events=300)
    with ProjectionWorker(AgentStats, store.url, batch_size=37) as worker:
        applied = worker.catch_up()
        head = worker.head()
        assert applied == head == sum(store.event_count(i) for i in ids)
        assert actual(store.url) == expected(store, ids)
        assert view_position(store.url) == (head, head)

        more(store, ids[0], 40, seed=1)  # a later catch-up adds to the same rows
        more(store, ids[3], 40, seed=2)
        assert worker.catch_up() == 80
        assert actual(store.url) == expected(store, ids)

    view = open_view(store.url)
    with view.reading() as cur:
        cur.execute("SELECT agent_id, agent_type FROM snaptail_agent_stats")
        types = dict(cur.fetchall())
    view.close()
    # user-defined agents count, under their own type
    assert types[str(ids[1])] == "examples.chat_agent:ChatPlatformAgent"
    assert types[str(ids[0])] == "snaptail.domain.agent:Agent"


def test_view_in_another_database(store: AgentStore, tmp_path: Path) -> None:
    ids = seed(store, agents=3, events=120)
    view_url = f"sqlite:///{tmp_path / 'views.db'}"
    with ProjectionWorker(AgentStats, store.url, view_url) as worker:
        worker.catch_up()
    assert actual(view_url) == expected(store, ids)


def test_worker_follows_events_saved_after_it_started(store: AgentStore) -> None:
    ids = seed(store, agents=2, events=50)
    stop = threading.Event()
    with ProjectionWorker(AgentStats, store.url, poll_interval=0.02) as worker:
        thread = threading.Thread(target=worker.run, args=(stop,))
        thread.start()
        try:
            ids += seed(store, agents=2, events=80, seed=2)
            more(store, ids[0], 10, seed=3)
            head = store.recorder.max_notification_id()
            wait_until(lambda: view_position(store.url)[0] == head)
            assert actual(store.url) == expected(store, ids)
        finally:
            stop.set()
            thread.join(timeout=60)
        assert not thread.is_alive()


def test_one_worker_per_projection_holds_the_lock(store: AgentStore) -> None:
    first = ProjectionWorker(AgentStats, store.url)
    second = ProjectionWorker(AgentStats, store.url)
    try:
        assert first.lock.try_acquire()
        assert not second.lock.try_acquire()
        first.lock.release()
        assert second.lock.try_acquire()
    finally:
        first.close()
        second.close()


def test_position_fence_stops_a_stale_worker_double_counting(
    store: AgentStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = seed(store, agents=2, events=60)
    settle(store.url)  # step() reads what is readable now: nothing held back
    # Two workers whose lock checks are bypassed: only the position check protects the view.
    with (
        ProjectionWorker(AgentStats, store.url, batch_size=50) as a,
        ProjectionWorker(AgentStats, store.url, batch_size=50) as b,
    ):
        for worker in (a, b):
            monkeypatch.setattr(worker.lock, "check", lambda cur: None)
        assert a.step() == 50
        assert b.step() == 0  # its batch was rolled back; it moved to a's position
        assert b.position.notification_id == a.position.notification_id == 50
        b.catch_up()
        a.catch_up()  # takes the lock, reads the stored position, finds nothing left
        head = a.head()
        assert view_position(store.url) == (head, head)
    assert actual(store.url) == expected(store, ids)


def test_user_defined_projection_tool_latency(store: AgentStore) -> None:
    agent = Agent("tools")
    calls = [("search", 120, None), ("search", 80, "timeout"), ("fetch", 30, None)]
    for i, (tool, ms, error) in enumerate([*calls, ("search", 10, None)]):
        agent.request_tool_call(f"c{i}", tool, {"q": i})
        if error:
            agent.complete_tool_call(f"c{i}", error=error, duration_ms=ms)
        else:
            agent.complete_tool_call(f"c{i}", output="ok", duration_ms=ms)
        store.save(agent)
    with ProjectionWorker(ToolLatency, store.url, batch_size=3) as worker:
        worker.catch_up()
        with worker.view.reading() as cur:
            cur.execute("SELECT tool, calls, errors, total_ms, max_ms FROM tool_latency")
            rows = sorted(cur.fetchall())
            cur.execute("SELECT COUNT(*) FROM tool_pending")
            pending = cur.fetchone()
    assert rows == [("fetch", 1, 0, 30, 30), ("search", 3, 1, 210, 120)]
    assert pending == (0,)


def test_stats_command_prints_json_from_the_view(store: AgentStore) -> None:
    ids = seed(store, agents=3, events=40)
    runner = CliRunner()
    empty = runner.invoke(app, ["stats", "--db", store.url, "--json", "--no-update"])
    assert empty.exit_code == 0, empty.output
    assert msgspec.json.decode(empty.stdout) == []

    result = runner.invoke(app, ["stats", "--db", store.url, "--json", "--sort", "bytes"])
    assert result.exit_code == 0, result.output
    records = msgspec.json.decode(result.stdout)
    truth = expected(store, ids)
    assert {r["agent_id"]: r["events"] for r in records} == {
        k: v["events"] for k, v in truth.items()
    }
    sizes = sorted((v["bytes"] for v in truth.values()), reverse=True)
    assert [r["bytes"] for r in records] == sizes
    for r in records:  # the snapshot version comes from the snapshots table
        infos = store.recorder.select_snapshot_infos(UUID(r["agent_id"]))
        assert r["snapshot_version"] == (infos[0].originator_version if infos else 0)
        assert r["tail"] == r["events"] - r["snapshot_version"]

    top = runner.invoke(app, ["stats", "--db", store.url, "--top", "1", "--sort", "tokens"])
    assert top.exit_code == 0, top.output
    assert "AgentStats" in top.stdout


def test_view_in_a_new_postgres_schema(store: AgentStore, postgres_url: str) -> None:
    """The events on either backend, the view in a PostgreSQL schema created for it."""
    ids = seed(store, agents=2, events=60)

    view_url = postgres_url.replace("schema=", "schema=v")  # a schema that does not exist
    try:
        with ProjectionWorker(AgentStats, store.url, view_url) as worker:
            worker.catch_up()
        assert actual(view_url) == expected(store, ids)
    finally:
        with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {view_url.rpartition('schema=')[2]} CASCADE")


def test_stats_leaves_the_view_to_a_running_worker(store: AgentStore) -> None:
    seed(store, agents=2, events=30)
    with ProjectionWorker(AgentStats, store.url) as running:
        assert running.lock.try_acquire()
        result = CliRunner().invoke(app, ["stats", "--db", store.url, "--json"])
        assert result.exit_code == 0, result.output
        assert "a worker is running AgentStats" in result.stderr
        assert msgspec.json.decode(result.stdout) == []  # not updated behind its back
        assert view_position(store.url) == (0, 0)


def test_worker_targets_resolve_like_entry_points() -> None:
    """``MODULE:Class``, ``MODULE.Class`` and ``MODULE:Outer.Inner`` name a projection;
    anything else is refused with the target in the message."""
    import typer

    from snaptail.cli.projections import load_projection

    assert load_projection("snaptail.projections:AgentStats") is AgentStats
    assert load_projection("snaptail.projections.AgentStats") is AgentStats
    assert load_projection("tests.projections.test_projections:Holder.Nested") is Holder.Nested
    for bad, says in [
        ("no_such_module_xyz:Thing", "cannot load"),
        ("snaptail.projections:Nope", "cannot load"),
        ("snaptail.projections:ViewCursor", "not a snaptail Projection"),
        ("not a target", "expected MODULE:ProjectionClass"),
    ]:
        with pytest.raises(typer.BadParameter, match=says):
            load_projection(bad)


class Holder:
    class Nested(AgentStats):
        name = "nested_agent_stats"


def test_catch_up_waits_for_events_held_behind_an_older_running_transaction(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """PostgreSQL readers stop at the oldest running transaction (anything younger
    could still be overtaken by it). A transaction that began before the events were
    saved (here another session of the same database; in CI, another test's) holds
    them back: catch_up() must wait for them, not report 0 as if it had caught up."""
    blocker = psycopg.connect(POSTGRES_URL)
    try:
        blocker.execute("SELECT pg_current_xact_id()")  # a running transaction with an id
        with AgentStore(postgres_url, snapshot_every=100) as store:
            ids = seed(store, agents=2, events=30)
            total = sum(store.event_count(i) for i in ids)
            monkeypatch.setattr(worker_module, "HELD_BACK_WARNING", 0.4)
            timer = threading.Timer(1.0, blocker.commit)
            timer.start()
            try:
                with ProjectionWorker(AgentStats, store.url) as worker:
                    applied = worker.catch_up()
                    assert applied == total == worker.head()
                    assert actual(store.url) == expected(store, ids)
            finally:
                timer.join()
            warned = [r.getMessage() for r in caplog.records if "held back" in r.getMessage()]
            assert warned and "projection 'AgentStats'" in warned[0], caplog.text
    finally:
        blocker.close()
        close_views()
