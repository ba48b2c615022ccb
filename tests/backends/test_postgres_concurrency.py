"""PostgreSQL saves without a table lock, and readers that never pass over a
transaction that commits late.

Transactions are held open with the recorder's ``in_transaction_hook`` (called after
a save's rows are written, before it commits). Waits are bounded only so that a
broken build fails instead of hanging; nothing here measures time.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from eventsourcing.persistence import IntegrityError, StoredEvent
from eventsourcing.postgres import PostgresApplicationRecorder
from typer.testing import CliRunner

from snaptail import Agent, AgentStore
from snaptail.errors import SchemaOutdated
from snaptail.infrastructure.mapper import MsgspecMapper
from snaptail.infrastructure.postgres import PostgresAgentRecorder, open_postgres
from snaptail.infrastructure.recorder import START, Partition, Position, partition_key
from snaptail.infrastructure.urls import parse_postgres_url, postgres_connect_args
from snaptail.projections import AgentStats, open_view
from snaptail.projections.worker import ProjectionWorker
from tests.projection_support import actual, expected, wait_until

pytestmark = pytest.mark.postgres

BOUND = 60.0  # seconds; only keeps a broken build from hanging


def _events(agent_id: uuid.UUID, first: int, n: int = 2) -> list[StoredEvent]:
    return [StoredEvent(agent_id, v, "t", b"x%d" % v) for v in range(first, first + n)]


class HeldSave:
    """A save in a thread, held open inside its transaction until :meth:`release`."""

    def __init__(self, url: str, events: list[StoredEvent]) -> None:
        self.recorder = open_postgres(url)
        self.inside = threading.Event()
        self._release = threading.Event()
        self.error: BaseException | None = None
        self.ids: Any = None

        def hold() -> None:
            self.inside.set()
            assert self._release.wait(BOUND)

        self.recorder.in_transaction_hook = hold

        def save() -> None:
            try:
                self.ids = self.recorder.insert_events(events)
            except BaseException as exc:
                self.error = exc

        self.thread = threading.Thread(target=save)
        self.thread.start()
        assert self.inside.wait(BOUND)

    def release(self) -> None:
        self._release.set()
        self.thread.join(BOUND)
        self.recorder.close()


@pytest.fixture
def recorder(postgres_url: str) -> Iterator[PostgresAgentRecorder]:
    r = open_postgres(postgres_url)
    yield r
    r.close()


def test_saves_of_different_agents_do_not_wait_for_each_other(
    postgres_url: str, recorder: PostgresAgentRecorder
) -> None:
    held = HeldSave(postgres_url, _events(uuid.uuid4(), 1))
    try:
        done = threading.Event()

        def other() -> None:
            recorder.insert_events(_events(uuid.uuid4(), 1))
            done.set()

        thread = threading.Thread(target=other, daemon=True)
        thread.start()
        # With a table lock this save would wait for the held one to commit.
        assert done.wait(BOUND), "a save of another agent waited for an open transaction"
    finally:
        held.release()
    assert held.error is None


def test_same_agent_same_version_one_writer_fails(
    postgres_url: str, recorder: PostgresAgentRecorder
) -> None:
    agent_id = uuid.uuid4()
    held = HeldSave(postgres_url, _events(agent_id, 1))
    outcome: list[BaseException | None] = []

    def second() -> None:
        try:
            recorder.insert_events(_events(agent_id, 1))
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=second)
    thread.start()
    held.release()
    thread.join(BOUND)
    assert held.error is None
    assert len(outcome) == 1 and isinstance(outcome[0], IntegrityError)
    assert recorder.max_version(agent_id) == 2


def test_a_late_commit_is_never_passed_over(
    postgres_url: str, recorder: PostgresAgentRecorder
) -> None:
    early, late = uuid.uuid4(), uuid.uuid4()
    held = HeldSave(postgres_url, _events(early, 1))  # takes notification ids first
    try:
        recorder.insert_events(_events(late, 1))  # higher ids, commits first
        # By notification id the late save is visible and the held one is not: a
        # reader paging by id would move past the held save's ids now.
        by_id = recorder.select_notifications(start=None, limit=10)
        assert [n.originator_id for n in by_id] == [late, late]
        # The gap-free reader shows neither: the held transaction is older.
        assert recorder.select_after(START, 10) == []
    finally:
        held.release()
    assert held.error is None
    seen: list[Any] = []

    def caught_up() -> bool:  # other sessions on the server may hold readers back too
        seen[:] = recorder.select_after(START, 10)
        return len(seen) == 4

    wait_until(caught_up, BOUND)
    assert [(n.originator_id, n.originator_version) for n in seen] == [
        (early, 1), (early, 2), (late, 1), (late, 2),
    ]  # fmt: skip
    positions = [n.position for n in seen]
    assert positions == sorted(positions) and len(set(positions)) == 4
    # Notification ids stay those eventsourcing handed out (the held save's first).
    assert sorted(n.id for n in seen) == [n.id for n in seen]


def test_subscription_delivers_a_late_commit_in_position_order(
    postgres_url: str, recorder: PostgresAgentRecorder
) -> None:
    early, late = uuid.uuid4(), uuid.uuid4()
    reads = [0]
    select_after = recorder.select_after

    def counted(*args: Any, **kwargs: Any) -> Any:
        reads[0] += 1
        return select_after(*args, **kwargs)

    recorder.select_after = counted  # type: ignore[method-assign]
    received: list[Any] = []
    with recorder.subscribe(gt=None, poll_interval=0.01) as subscription:

        def follow() -> None:
            for notification in subscription:
                received.append(notification)
                if len(received) == 4:
                    break

        thread = threading.Thread(target=follow)
        thread.start()
        held = HeldSave(postgres_url, _events(early, 1))
        try:
            recorder.insert_events(_events(late, 1))  # commits while the early one is open
            after = reads[0]
            wait_until(lambda: reads[0] >= after + 3, BOUND)  # it looked, more than once
        finally:
            held.release()
        thread.join(BOUND)
    assert [n.originator_id for n in received] == [early, early, late, late]
    positions = [n.position for n in received]
    assert positions == sorted(positions)


def test_subscribe_after_a_notification_id_continues_after_it(
    recorder: PostgresAgentRecorder,
) -> None:
    a, b = uuid.uuid4(), uuid.uuid4()
    first = recorder.insert_events(_events(a, 1))
    recorder.insert_events(_events(b, 1))
    assert first is not None
    with recorder.subscribe(gt=first[-1]) as subscription:
        got = [next(subscription), next(subscription)]
    assert [(n.originator_id, n.originator_version) for n in got] == [(b, 1), (b, 2)]


def test_partitions_split_agents_as_partition_key_says(
    recorder: PostgresAgentRecorder,
) -> None:
    ids = [uuid.uuid4() for _ in range(30)] + [uuid.uuid1() for _ in range(30)]
    for agent_id in ids:
        recorder.insert_events(_events(agent_id, 1, 1))
    # (other sessions on the server may hold readers back for a moment)
    wait_until(lambda: len(recorder.select_after(START, 100)) == len(ids), BOUND)
    for count in (2, 3):
        slices = [
            {n.originator_id for n in recorder.select_after(START, 100, partition=p)}
            for p in (Partition(k, count) for k in range(count))
        ]
        for k, agents in enumerate(slices):
            assert agents == {i for i in ids if partition_key(i) % count == k}
        assert all(slices), "a slice got no agent out of 60"
    with pytest.raises(ValueError, match="partition 2 of 2"):
        Partition(2, 2)


# -- upgrading a database made before concurrent appends -------------------------------

OLD_TRACKING = (
    "CREATE TABLE snaptail_projection_tracking (projection TEXT PRIMARY KEY, "
    "notification_id BIGINT NOT NULL, processed BIGINT NOT NULL)"
)
OLD_SNAPSHOTS = (
    "CREATE TABLE IF NOT EXISTS {schema}.snaptail_snapshots (originator_id uuid NOT NULL, "
    "originator_version bigint NOT NULL, topic text NOT NULL, fingerprint text NOT NULL, "
    "checksum bigint NOT NULL, state bytea NOT NULL, "
    "PRIMARY KEY (originator_id, originator_version))"
)


def _old_schema(url: str) -> PostgresApplicationRecorder:
    """The tables the previous snaptail made: ``eventsourcing``'s own events table
    (written with its table lock) and the snapshots table."""
    from eventsourcing.postgres import PostgresDatastore

    s = parse_postgres_url(url)
    info = s.conninfo
    datastore = PostgresDatastore(
        dbname=info["dbname"], host=info.get("host", ""), port=info.get("port", ""),
        user=info.get("user", ""), password=info.get("password", ""), schema=s.schema,
    )  # fmt: skip
    old = PostgresApplicationRecorder(datastore)
    old.create_table()
    with psycopg.connect(**postgres_connect_args(url), autocommit=True) as conn:
        conn.execute(OLD_SNAPSHOTS.format(schema=s.schema))
    return old


def test_migrate_upgrades_a_database_made_by_the_previous_version(postgres_url: str) -> None:
    from snaptail.cli import app

    old = _old_schema(postgres_url)
    mapper = MsgspecMapper()
    agents = []
    for n in range(3):
        agent = Agent(f"old-{n}")
        for i in range(5):
            agent.add_input("user", f"q{n}.{i}")
        old.insert_events([mapper.to_stored_event(e) for e in agent.collect_events()])
        agents.append(agent.id)
    old.datastore.close()
    with psycopg.connect(**postgres_connect_args(postgres_url), autocommit=True) as conn:
        conn.execute(OLD_TRACKING)  # a worker of the previous version had run to id 6
        conn.execute("INSERT INTO snaptail_projection_tracking VALUES ('Other', 6, 6)")

    with pytest.raises(SchemaOutdated, match="snaptail migrate"):
        AgentStore(postgres_url)

    runner = CliRunner()
    result = runner.invoke(app, ["migrate", "--db", postgres_url])
    assert result.exit_code == 0, result.output
    assert "added transaction_id" in result.output and "built index" in result.output
    again = runner.invoke(app, ["migrate", "--db", postgres_url])
    assert again.exit_code == 0 and "up to date" in again.output

    view = open_view(postgres_url)
    try:
        view.setup()
        assert view.position("Other") == Position(0, 6)  # the old position, kept
    finally:
        view.close()

    with AgentStore(postgres_url, snapshot_every=4) as store:
        for agent_id in agents:
            agent = store.get(agent_id)
            assert agent.version == 6
            agent.add_input("user", "after the upgrade")
            store.save(agent)
        new = Agent("new")
        store.save(new)
        with ProjectionWorker(AgentStats, postgres_url) as worker:

            def caught_up() -> bool:
                worker.catch_up()
                return worker.view.processed(AgentStats.name) == 3 * 7 + 1

            wait_until(caught_up, BOUND)
        assert actual(postgres_url) == expected(store, [*agents, new.id])


def test_gap_free_reads_follow_the_index_without_sorting(
    recorder: PostgresAgentRecorder,
) -> None:
    """Each batch must be an index range scan: a sort would read every row after the
    position for every batch (a catch-up quadratic in the backlog)."""
    for _ in range(50):
        recorder.insert_events(_events(uuid.uuid4(), 1))
    recorder.select_after(START, 10)
    (query,) = recorder._select_after_queries.values()
    with recorder.datastore.get_connection() as conn:
        # Qualified: the recorder's tables are in the test's own schema.
        conn.execute(f'ANALYZE "{recorder.datastore.schema}".stored_events')
        plan = conn.execute(b"EXPLAIN " + query, ["0", 0, 10]).fetchall()
    text = "\n".join(str(next(iter(row.values()))) for row in plan)
    assert "Sort" not in text and "transaction_idx" in text, text


def test_conflict_seen_while_a_snapshot_is_sent_is_a_concurrency_error(
    postgres_url: str, make_store: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """CI once saw a conflict surface as ``OperationalError: pipeline aborted``: the
    events' unique violation arrived while the snapshot's statement was being sent,
    and closing the transaction then met the aborted pipeline and hid the cause. The
    pause before the snapshot lets the violation arrive first, every time."""
    import time

    from snaptail import ConcurrencyError

    with make_store(postgres_url, snapshot_every=1) as store:
        agent = Agent(name="pipelined")
        store.save(agent)
        stale = store.get(agent.id)
        fresh = store.get(agent.id)
        fresh.add_input("user", "first")
        store.save(fresh)

        original = PostgresAgentRecorder.snapshot_writes

        def late(self: PostgresAgentRecorder, snapshot: Any, keep: Any) -> Any:
            time.sleep(0.3)  # not a timing assertion: it orders the replies
            return original(self, snapshot, keep)

        monkeypatch.setattr(PostgresAgentRecorder, "snapshot_writes", late)
        stale.add_input("user", "second")
        with pytest.raises(ConcurrencyError):
            store.save(stale)
        monkeypatch.undo()
        assert [e.item.text for e in store.history(agent.id) if hasattr(e, "item")] == ["first"]
