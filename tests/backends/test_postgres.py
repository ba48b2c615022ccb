"""PostgreSQL: URL options, pool settings, schema and tables, and the outside test suite.

URL parsing needs no server. Everything else runs on the real server (see
``tests/conftest.py``): it skips, naming the URL, when the server is unreachable,
and fails instead in CI.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from eventsourcing.persistence import IntegrityError, StoredEvent
from eventsourcing.tests import persistence

from snaptail import Agent, AgentStore, DatabaseUnreachable
from snaptail.infrastructure.backends import open_recorder
from snaptail.infrastructure.postgres import PostgresAgentRecorder, open_postgres, settings_of
from snaptail.infrastructure.recorder import AgentRecorder, StoredSnapshot
from snaptail.infrastructure.urls import parse_postgres_url
from tests.conftest import POSTGRES_URL, require_postgres

pytestmark = pytest.mark.postgres


def _server_url(schema: str) -> str:
    sep = "&" if "?" in POSTGRES_URL else "?"
    return f"{POSTGRES_URL}{sep}schema={schema}"


def _tables_in(schema: str) -> set[str]:
    with psycopg.connect(POSTGRES_URL) as conn:
        rows = conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s",
            (schema,),
        ).fetchall()
    return {row[0] for row in rows}


def _drop_schema(schema: str) -> None:
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def _event(agent_id: uuid.UUID, version: int, topic: str = "t") -> StoredEvent:
    return StoredEvent(agent_id, version, topic, f"{topic}{version}".encode())


def _snapshot(agent_id: uuid.UUID, version: int) -> StoredSnapshot:
    state = f"state{version}".encode()
    return StoredSnapshot(agent_id, version, "topic", "fp", len(state), state)


# -- URL parsing (no server) ----------------------------------------------------------


def test_url_parts_and_defaults() -> None:
    options = parse_postgres_url("postgresql://alice:s%40cret@db.example:6543/agents")
    assert options.conninfo == {
        "user": "alice",
        "password": "s@cret",
        "host": "db.example",
        "port": "6543",
        "dbname": "agents",
    }
    assert options.schema == "public"
    assert (options.pool_size, options.max_overflow) == (2, 8)
    assert (options.pool_timeout, options.connect_timeout, options.lock_timeout) == (30.0, 10, 0)


def test_what_the_url_leaves_out_is_left_to_libpq() -> None:
    """No user, host or port is made up: PGUSER, PGHOST, PGPORT... and libpq's defaults
    apply (they were overridden by 'postgres'@'localhost':5432)."""
    assert parse_postgres_url("postgres://bob@h/d").conninfo == {
        "user": "bob",
        "host": "h",
        "dbname": "d",
    }
    assert parse_postgres_url("postgresql:///d").conninfo == {"dbname": "d"}


def test_unix_sockets_and_libpq_parameters_in_the_query_string() -> None:
    options = parse_postgres_url(
        "postgresql:///agents?host=/run/postgresql&sslmode=require&schema=s&pool_size=3"
    )
    assert options.conninfo == {"dbname": "agents", "host": "/run/postgresql", "sslmode": "require"}
    assert (options.schema, options.pool_size) == ("s", 3)
    assert parse_postgres_url("postgresql://%2Frun%2Fpostgresql/agents").conninfo == {
        "dbname": "agents",
        "host": "/run/postgresql",
    }
    args = parse_postgres_url(
        "postgresql://u@h/d?options=-c%20work_mem%3D8MB&schema=t"
    ).connect_args()
    assert args["options"] == "-c work_mem=8MB -c search_path=t"
    assert args["connect_timeout"] == 10


def test_query_string_options_and_keyword_overrides() -> None:
    url = (
        "postgresql://u@h:5432/d?pool_size=7&max_overflow=3&pool_timeout=2.5"
        "&connect_timeout=4&lock_timeout=9&schema=tenant_a"
    )
    options = parse_postgres_url(url)
    assert (options.pool_size, options.max_overflow, options.pool_timeout) == (7, 3, 2.5)
    assert (options.connect_timeout, options.lock_timeout, options.schema) == (4, 9, "tenant_a")
    overridden = parse_postgres_url(url, pool_size=1, schema="tenant_b", pool_timeout=1)
    assert (overridden.pool_size, overridden.schema, overridden.pool_timeout) == (
        1,
        "tenant_b",
        1.0,
    )
    assert overridden.max_overflow == 3


@pytest.mark.parametrize(
    ("url", "options", "named"),
    [
        ("postgresql://u@h/d?pool_size=0", {}, "pool_size"),
        ("postgresql://u@h/d?pool_size=big", {}, "pool_size"),
        ("postgresql://u@h/d?max_overflow=-1", {}, "max_overflow"),
        ("postgresql://u@h/d?pool_timeout=soon", {}, "pool_timeout"),
        ("postgresql://u@h/d?pool_timeout=0", {}, "pool_timeout"),
        ("postgresql://u@h/d?pool_timeout=nan", {}, "pool_timeout"),
        ("postgresql://u@h/d?connect_timeout=1.5", {}, "connect_timeout"),
        ("postgresql://u@h/d?lock_timeout=", {}, "lock_timeout"),
        ("postgresql://u@h/d?pool_sise=3", {}, "pool_sise"),
        ("postgresql://u@h/d", {"poolsize": 3}, "poolsize"),
        ("postgresql://u@h/d", {"pool_size": True}, "pool_size"),
        ("postgresql://u@h/d?schema=", {}, "schema"),
        ("postgresql://u@h/d?pool_size=1&pool_size=2", {}, "pool_size"),
        ("postgresql://u@h:port/d", {}, "port"),
        ("postgresql://u@h/", {}, "database name"),
        ("mysql://u@h/d", {}, "scheme"),
    ],
)
def test_bad_parameters_are_named(url: str, options: dict[str, Any], named: str) -> None:
    with pytest.raises(ValueError, match=named):
        parse_postgres_url(url, **options)


def test_passwords_stay_out_of_error_messages() -> None:
    with pytest.raises(ValueError) as info:
        parse_postgres_url("postgresql://u:hunter2@h/")
    assert "hunter2" not in str(info.value)


# -- opening a store on the server ----------------------------------------------------


def test_store_opens_postgres_from_url_and_environment(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SNAPTAIL_DATABASE_URL", postgres_url)
    with AgentStore() as store:
        assert isinstance(store.recorder, PostgresAgentRecorder)
        agent = Agent(name="pg")
        agent.add_input("user", "hello")
        store.save(agent)
        assert store.get(agent.id).state == agent.state


def test_environment_fills_in_what_the_url_leaves_out(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PGUSER, PGHOST and PGPORT reach libpq when the URL names only the database."""
    conninfo = parse_postgres_url(POSTGRES_URL).conninfo
    schema = postgres_url.rsplit("schema=", 1)[1]
    role = f"snaptail_env_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN SUPERUSER")
    try:
        monkeypatch.setenv("PGHOST", conninfo.get("host", "localhost"))
        monkeypatch.setenv("PGPORT", conninfo.get("port", "5432"))
        monkeypatch.setenv("PGUSER", role)
        with AgentStore(f"postgresql:///{conninfo['dbname']}?schema={schema}") as store:
            agent = Agent(name="env")
            store.save(agent)
            assert store.get(agent.id).name == "env"
            recorder = store.recorder
            assert isinstance(recorder, PostgresAgentRecorder)
            with recorder.datastore.get_connection() as conn:
                assert conn.info.user == role
    finally:
        with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
            conn.execute(f"DROP OWNED BY {role}")
            conn.execute(f"DROP ROLE {role}")


def test_unix_socket_url(postgres_url: str) -> None:
    socket_dir = Path("/var/run/postgresql")
    if not (socket_dir / ".s.PGSQL.5432").exists():
        pytest.skip(f"no PostgreSQL socket in {socket_dir}")
    conninfo = parse_postgres_url(POSTGRES_URL).conninfo
    schema = postgres_url.rsplit("schema=", 1)[1]
    url = (
        f"postgresql:///{conninfo['dbname']}?host={socket_dir}&user={conninfo.get('user', '')}"
        f"&schema={schema}"
    )
    with AgentStore(url) as store:
        agent = Agent(name="socket")
        store.save(agent)
        assert store.get(agent.id).name == "socket"


def test_tables_are_created_in_the_given_schema(postgres_url: str) -> None:
    schema = postgres_url.rsplit("schema=", 1)[1]
    assert _tables_in(schema) == set()
    recorder = open_recorder(postgres_url)
    try:
        assert {"stored_events", "snaptail_snapshots"} <= _tables_in(schema)
        # Opening again is harmless.
        open_postgres(postgres_url).close()
    finally:
        recorder.close()  # type: ignore[attr-defined]


def test_missing_schema_is_created() -> None:
    require_postgres()
    schema = f"snaptail_new_{uuid.uuid4().hex[:10]}"
    try:
        recorder = open_postgres(_server_url(schema))
        recorder.close()
        assert "snaptail_snapshots" in _tables_in(schema)
    finally:
        _drop_schema(schema)


def test_concurrent_opens_of_a_new_schema_do_not_collide() -> None:
    require_postgres()
    schema = f"snaptail_new_{uuid.uuid4().hex[:10]}"
    errors: list[BaseException] = []

    def open_once() -> None:
        try:
            open_postgres(_server_url(schema)).close()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=open_once) for _ in range(4)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        assert {"stored_events", "snaptail_snapshots"} <= _tables_in(schema)
    finally:
        _drop_schema(schema)


def test_pool_options_are_honoured(postgres_url: str) -> None:
    recorder = open_postgres(
        postgres_url,
        pool_size=3,
        max_overflow=1,
        pool_timeout=0.05,
        lock_timeout=4,
        read_timeout=7.5,
    )
    try:
        assert settings_of(recorder) == {
            "schema": postgres_url.rsplit("schema=", 1)[1],
            "pool_size": 3,
            "max_overflow": 1,
            "pool_timeout": 0.05,
            "connect_timeout": 10,
            "lock_timeout": 4,
            "read_timeout": 7.5,
        }
        pool = recorder.datastore.pool
        pool.wait(timeout=30)
        stats = pool.get_stats()
        assert (stats["pool_min"], stats["pool_max"]) == (3, 4)
        assert stats["pool_size"] >= 3
        # With all 3 + 1 connections taken, the next caller gives up after pool_timeout
        # with the cause and the time waited (issue 18), not a bare PoolTimeout.
        held = [pool.getconn() for _ in range(4)]
        try:
            busy = r"no pooled connection after .*stayed busy"
            with pytest.raises(DatabaseUnreachable, match=busy):
                recorder.select_snapshot_infos(uuid.uuid4())
        finally:
            for conn in held:
                pool.putconn(conn)
        assert recorder.select_snapshot_infos(uuid.uuid4()) == []
    finally:
        recorder.close()


def test_store_keyword_options_reach_the_pool(postgres_url: str) -> None:
    with AgentStore(f"{postgres_url}&pool_size=1", pool_size=3, max_overflow=0) as store:
        assert isinstance(store.recorder, PostgresAgentRecorder)
        settings = settings_of(store.recorder)
        assert (settings["pool_size"], settings["max_overflow"]) == (3, 0)


def test_connect_timeout_reaches_the_connection(postgres_url: str) -> None:
    recorder = open_postgres(postgres_url, connect_timeout=7)
    try:
        with recorder.datastore.get_connection() as conn:
            assert conn.info.get_parameters()["connect_timeout"] == "7"
    finally:
        recorder.close()


# -- snaptail's recorder methods on the server ----------------------------------------


@pytest.fixture
def recorder(postgres_url: str) -> Iterator[PostgresAgentRecorder]:
    recorder = open_postgres(postgres_url)
    yield recorder
    recorder.close()


def test_conflicting_save_writes_neither_events_nor_snapshot(
    recorder: PostgresAgentRecorder,
) -> None:
    agent_id = uuid.uuid4()
    recorder.insert_events([_event(agent_id, 1), _event(agent_id, 2)])
    with pytest.raises(IntegrityError):
        recorder.insert_events(
            [_event(agent_id, 2), _event(agent_id, 3)], snapshots=[_snapshot(agent_id, 3)]
        )
    assert recorder.max_version(agent_id) == 2
    assert recorder.select_snapshot_infos(agent_id) == []
    ids = recorder.insert_events([_event(agent_id, 3)], snapshots=[_snapshot(agent_id, 3)])
    # (A failed insert may leave a gap in notification ids, as in eventsourcing.)
    assert ids == [recorder.max_notification_id()]
    assert [i.originator_version for i in recorder.select_snapshot_infos(agent_id)] == [3]


def test_snapshot_conflict_rolls_back_the_events(recorder: PostgresAgentRecorder) -> None:
    agent_id = uuid.uuid4()
    recorder.insert_events([_event(agent_id, 1)])
    assert recorder.insert_snapshot(_snapshot(agent_id, 2), keep_snapshots=None)
    with pytest.raises(IntegrityError):
        recorder.insert_events([_event(agent_id, 2)], snapshots=[_snapshot(agent_id, 2)])
    assert recorder.max_version(agent_id) == 1
    recorder.insert_events([_event(agent_id, 2)])
    assert recorder.max_version(agent_id) == 2


def test_saves_with_snapshots_notify_subscribers(recorder: PostgresAgentRecorder) -> None:
    agent_id = uuid.uuid4()
    with recorder.subscribe(gt=None) as subscription:
        recorder.insert_events([_event(agent_id, 1)], snapshots=[_snapshot(agent_id, 1)])
        notification = next(subscription)
    assert (notification.originator_id, notification.originator_version) == (agent_id, 1)


def _exercise(recorder: AgentRecorder, ids: list[uuid.UUID]) -> list[object]:
    """The same calls on any recorder; returns everything they answered."""
    answers: list[object] = []
    for n, agent_id in enumerate(ids):
        for version in range(1, 4 * (n + 1) + 1, 2):
            recorder.insert_events(
                [_event(agent_id, version, "a"), _event(agent_id, version + 1, "b")],
                snapshots=[_snapshot(agent_id, version + 1)] if version % 4 == 3 else [],
                keep_snapshots=2,
            )
        recorder.insert_snapshot(_snapshot(agent_id, 1), keep_snapshots=None)
        answers.append(recorder.insert_snapshot(_snapshot(agent_id, 1), keep_snapshots=None))
        answers.append(recorder.select_snapshot_infos(agent_id))
        answers.append(recorder.max_version(agent_id))
        for lte, recent, snapshot_lte in [
            (None, 0, None),
            (None, 3, None),
            (5, 1, None),
            (None, 2, 3),
            (1, 5, 0),
        ]:
            rows = recorder.select_for_load(
                agent_id, lte=lte, recent=recent, snapshot_lte=snapshot_lte
            )
            snapshot = rows.snapshot.originator_version if rows.snapshot else None
            answers.append((snapshot, [(e[0], e[2]) for e in rows.events]))
        for page in [
            {},
            {"gt": 2, "lt": 7, "limit": 3},
            {"desc": True, "limit": 2},
            {"topics": ["b"], "desc": True},
            {"topics": ["a", "zz"], "gt": 1},
        ]:
            events = recorder.select_page(agent_id, **page)  # type: ignore[arg-type]
            answers.append([(e.originator_version, e.topic, e.state) for e in events])
        answers.append(recorder.delete_snapshots(agent_id, keep=1, versions=[1]))
        answers.append(recorder.select_snapshot_infos(agent_id))
    answers.append(recorder.originator_ids())
    answers.append(recorder.originator_ids(after=sorted(ids)[0], limit=2))
    answers.append(recorder.originator_ids(after=max(ids)))
    answers.append(recorder.max_version(uuid.uuid4()))
    answers.append(recorder.delete_snapshots(ids[0], keep=0))
    return answers


def test_postgres_answers_exactly_as_sqlite(
    recorder: PostgresAgentRecorder, sqlite_url: str
) -> None:
    ids = [uuid.uuid4() for _ in range(4)]
    sqlite = open_recorder(sqlite_url)
    try:
        expected = _exercise(sqlite, ids)
    finally:
        sqlite.datastore.close()  # type: ignore[attr-defined]
    assert _exercise(recorder, ids) == expected
    assert sorted(ids) == expected[-5]


def test_open_recorder_checks_options_before_connecting(tmp_path: Path) -> None:
    """A bad PostgreSQL option fails before any connection; SQLite URLs are unaffected."""
    with pytest.raises(ValueError, match="unknown PostgreSQL option"):
        open_recorder("postgresql://u@192.0.2.1/d?nonsense=1")
    assert open_recorder(f"sqlite:///{tmp_path / 'x.db'}").max_version(uuid.uuid4()) is None


# -- eventsourcing's own application-recorder test suite ------------------------------


class TestEventsourcingApplicationRecorderSuite(
    persistence.ApplicationRecorderTestCase[PostgresAgentRecorder]
):
    """``eventsourcing``'s reusable tests, each in a fresh schema dropped afterwards."""

    def setUp(self) -> None:
        require_postgres()
        self.schema = f"snaptail_es_{uuid.uuid4().hex[:12]}"
        self.recorders: list[PostgresAgentRecorder] = []

    def tearDown(self) -> None:
        for recorder in self.recorders:
            recorder.close()
        _drop_schema(self.schema)

    def create_recorder(self) -> PostgresAgentRecorder:
        recorder = open_postgres(_server_url(self.schema), pool_size=4, max_overflow=12)
        self.recorders.append(recorder)
        return recorder

    def test_insert_subscribe(self) -> None:
        self.optional_test_insert_subscribe()
