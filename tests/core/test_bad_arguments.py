"""Issue 18, items 8 and 9: bad arguments and bad stored data end in a SnaptailError
naming the argument, agent, version or cause; database files are private (0600)."""

from __future__ import annotations

import os
import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from typer.testing import CliRunner

from snaptail import (
    Agent,
    AgentStore,
    DatabaseUnusable,
    InvalidArgument,
    RowUnreadable,
    SnaptailError,
    VersionNotFound,
)
from snaptail.cli import app

UNREACHABLE = "postgresql://postgres@127.0.0.1:1/x"


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'fleet.db'}"


def _agent(store: AgentStore, events: int = 3) -> Agent:
    agent = Agent("bad-data")
    for i in range(events - 1):
        agent.add_input("user", f"message {i}")
    store.save(agent)
    return agent


# -- item 8: arguments ---------------------------------------------------------------


def test_get_past_the_head_is_refused_naming_the_head(database_url: str) -> None:
    with AgentStore(database_url) as store:
        agent = _agent(store)
        with pytest.raises(VersionNotFound) as caught:
            store.get(agent.id, version=10**12)
        assert caught.value.head == 3 and "its newest is version 3" in str(caught.value)
        assert str(agent.id) in str(caught.value)
        with pytest.raises(VersionNotFound):
            store.replay(agent.id, version=4)
        assert store.get(agent.id, version=3).version == 3


@pytest.mark.parametrize(
    ("make", "argument"),
    [
        (lambda: AgentStore(":memory:", snapshot_every="10"), "snapshot_every"),  # type: ignore[arg-type]
        (lambda: AgentStore(":memory:", max_event_bytes=-1), "max_event_bytes"),
        (lambda: AgentStore(":memory:", max_row_bytes=0), "max_row_bytes"),
        (lambda: AgentStore(":memory:", recent_events=1.5), "recent_events"),  # type: ignore[arg-type]
        (lambda: AgentStore(":memory:", slow_load_ms="fast"), "slow_load_ms"),  # type: ignore[arg-type]
        (lambda: AgentStore("sqlit:///x.db"), "url"),
        (lambda: AgentStore(f"{UNREACHABLE}?schema=select"), "url"),
        (lambda: AgentStore(f"{UNREACHABLE}?schema=information_schema"), "url"),
        (lambda: AgentStore(f"{UNREACHABLE}?schema=pg_catalog"), "url"),
        (lambda: AgentStore(":memory:", file_mode="rw"), "file_mode"),
        (lambda: AgentStore(":memory:", file_mode=0o044), "file_mode"),
    ],
)
def test_bad_store_arguments_are_refused_by_name(make: object, argument: str) -> None:
    # The PostgreSQL URLs point at a closed port: refused before any connection.
    with pytest.raises(InvalidArgument) as caught:
        make()  # type: ignore[operator]
    assert caught.value.argument == argument and str(caught.value).startswith(argument)


def test_bad_call_arguments_are_refused_by_name() -> None:
    with AgentStore(":memory:") as store:
        agent = _agent(store)
        with pytest.raises(InvalidArgument, match="types: expected event classes"):
            list(store.history(agent.id, types=[123]))  # type: ignore[list-item]
        with pytest.raises(InvalidArgument, match="types"):
            store.latest(agent.id, 123)  # type: ignore[arg-type]
        with pytest.raises(InvalidArgument, match=r"save\(\) argument 1: expected an Agent"):
            store.save(None)  # type: ignore[arg-type]
        with pytest.raises(InvalidArgument, match=r"save\(\) argument 2"):
            store.save(agent, "agent")  # type: ignore[arg-type]
        assert [e.originator_version for e in store.history(agent.id, types=[])] == [1, 2, 3]


# -- item 8: bad stored rows -------------------------------------------------------------


def _replace_state(url: str, agent: Agent, version: int, state: bytes) -> None:
    path = url.removeprefix("sqlite:///")
    with sqlite3.connect(path) as db:
        db.execute(
            "UPDATE stored_events SET state=? WHERE originator_id=? AND originator_version=?",
            (state, agent.id.hex, version),
        )


def test_a_deeply_nested_stored_row_is_a_clear_error(url: str) -> None:
    with AgentStore(url) as store:
        agent = Agent("deep")
        agent.request_tool_call("c1", "t", {"x": 1})
        store.save(agent)
    path = url.removeprefix("sqlite:///")
    with sqlite3.connect(path) as db:
        (state,) = db.execute(
            "SELECT state FROM stored_events WHERE originator_version=2"
        ).fetchone()
    deep = state.replace(msgspec.msgpack.encode({"x": 1}), b"\x81\xa1x" * 100_000 + b"\x01")
    _replace_state(url, agent, 2, deep)
    with AgentStore(url) as store:
        for read in (lambda: store.get(agent.id), lambda: list(store.history(agent.id))):
            with pytest.raises(RowUnreadable) as caught:
                read()
            assert caught.value.version == 2 and "nested too deeply" in str(caught.value)
            assert str(agent.id) in str(caught.value)


def test_a_row_over_the_read_limit_is_refused_naming_agent_version_and_size(url: str) -> None:
    with AgentStore(url, snapshot_every=1000) as store:
        agent = Agent("big")
        agent.add_input("user", "x" * 50_000)
        agent.add_input("user", "small")
        store.save(agent)
    with AgentStore(url, max_row_bytes=20_000) as store:
        for read in (lambda: store.get(agent.id), lambda: list(store.history(agent.id))):
            with pytest.raises(RowUnreadable) as caught:
                read()
            message = str(caught.value)
            assert caught.value.version == 2 and str(agent.id) in message
            assert "max_row_bytes" in message and "bytes" in message
        assert store.get(agent.id, version=1).version == 1  # the rows before it load
    with AgentStore(url) as store:  # the default limit (64 MiB) reads it
        assert store.get(agent.id).version == 3


def test_a_snapshot_over_the_read_limit_is_refused(url: str) -> None:
    with AgentStore(url, snapshot_every=2) as store:
        agent = Agent("big snapshot")
        for _ in range(3):
            agent.add_input("user", "y" * 8_000)
            store.save(agent)
    with AgentStore(url, max_row_bytes=12_000) as store:
        with pytest.raises(RowUnreadable, match="stored snapshot at version") as caught:
            store.get(agent.id)
        assert str(agent.id) in str(caught.value)


def test_a_full_disk_names_the_agents_and_saves_nothing(url: str) -> None:
    with AgentStore(url) as store:
        agent = _agent(store)
        # SQLite's size limit: "database or disk is full" once the file would grow.
        with store.recorder.datastore.transaction(commit=False) as cursor:  # type: ignore[attr-defined]
            cursor.execute("PRAGMA page_count")
            pages = cursor.fetchone()[0]
            cursor.execute(f"PRAGMA max_page_count={pages}")
        with pytest.raises(DatabaseUnusable) as caught:
            for i in range(100):
                agent.add_input("user", f"{i} " + "z" * 4000)
                store.save(agent)
        message = str(caught.value)
        assert "full" in message and str(agent.id) in message and "fleet.db" in message
        assert "wrote nothing" in message
        saved = store.event_count(agent.id)
    with AgentStore(url) as store:
        assert store.get(agent.id).version == saved


# -- item 9: file modes ----------------------------------------------------------------


@pytest.fixture
def usual_umask() -> Iterator[None]:
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_database_wal_shm_and_lock_files_are_private(tmp_path: Path, usual_umask: None) -> None:
    db = tmp_path / "fleet.db"
    with AgentStore(f"sqlite:///{db}") as store:
        _agent(store)
        files = {p.name: _mode(p) for p in tmp_path.iterdir()}
    assert files["fleet.db"] == 0o600
    assert files.get("fleet.db-wal", 0o600) == 0o600 and files.get("fleet.db-shm", 0o600) == 0o600
    assert "fleet.db-wal" in files  # (the WAL exists while the store is open)
    result = CliRunner().invoke(app, ["stats", "--db", f"sqlite:///{db}"])
    assert result.exit_code == 0, result.output
    modes = {p.name: _mode(p) for p in tmp_path.iterdir()}
    assert modes["fleet.db.AgentStats.lock"] == 0o600
    assert all(mode == 0o600 for mode in modes.values()), modes


def test_file_mode_is_an_option_and_existing_files_keep_theirs(
    tmp_path: Path, usual_umask: None
) -> None:
    shared = tmp_path / "shared.db"
    with AgentStore(f"sqlite:///{shared}", file_mode=0o640) as store:
        _agent(store)
    assert _mode(shared) == 0o640
    by_url = tmp_path / "by-url.db"
    with AgentStore(f"sqlite:///{by_url}?file_mode=0640") as store:
        _agent(store)
    assert _mode(by_url) == 0o640
    shared.chmod(0o644)  # an existing file's mode is the owner's choice
    with AgentStore(f"sqlite:///{shared}") as store:
        _agent(store)
    assert _mode(shared) == 0o644


def test_errors_are_snaptail_errors() -> None:
    for error in (InvalidArgument, RowUnreadable, VersionNotFound, DatabaseUnusable):
        assert issubclass(error, SnaptailError)


# -- item 8: a PostgreSQL pool that cannot get a connection ----------------------------


@pytest.fixture
def limited_role() -> Iterator[tuple[str, Any]]:
    """A login role of its own (so its connection limit can be set) and a schema."""
    admin_url = os.environ.get("SNAPTAIL_TEST_POSTGRES_URL")
    if not admin_url:
        pytest.skip("needs SNAPTAIL_TEST_POSTGRES_URL")
    psycopg = pytest.importorskip("psycopg")
    from urllib.parse import urlsplit

    admin = psycopg.connect(admin_url, autocommit=True)
    dbname = urlsplit(admin_url).path.lstrip("/")
    admin.execute("DROP SCHEMA IF EXISTS snaptail_pool_test CASCADE")
    admin.execute("DROP ROLE IF EXISTS snaptail_pool_test")
    admin.execute("CREATE ROLE snaptail_pool_test LOGIN")
    admin.execute(f"GRANT CONNECT ON DATABASE {dbname} TO snaptail_pool_test")
    admin.execute("CREATE SCHEMA snaptail_pool_test AUTHORIZATION snaptail_pool_test")
    parts = urlsplit(admin_url)
    host = parts.hostname or "127.0.0.1"
    url = (
        f"postgresql://snaptail_pool_test@{host}:{parts.port or 5432}/{dbname}"
        "?schema=snaptail_pool_test&pool_size=1&max_overflow=0&pool_timeout=1"
    )
    try:
        yield url, admin
    finally:
        admin.execute("DROP SCHEMA IF EXISTS snaptail_pool_test CASCADE")
        admin.execute(f"REVOKE ALL ON DATABASE {dbname} FROM snaptail_pool_test")
        admin.execute("DROP ROLE IF EXISTS snaptail_pool_test")
        admin.close()


def test_a_pool_that_gets_no_connection_says_why_and_how_long(
    limited_role: tuple[str, Any],
) -> None:
    import threading
    import time

    from snaptail import DatabaseUnreachable

    url, admin = limited_role
    with AgentStore(url) as store:
        agent = _agent(store)
        held, release = threading.Event(), threading.Event()

        def hold() -> None:  # the pool's only connection, busy
            with store.recorder.datastore.transaction(commit=False):  # type: ignore[attr-defined]
                held.set()
                release.wait(30)

        holder = threading.Thread(target=hold)
        holder.start()
        held.wait(10)
        try:
            started = time.monotonic()
            with pytest.raises(DatabaseUnreachable) as busy:
                store.get(agent.id)
            waited = time.monotonic() - started
            assert "stayed busy" in str(busy.value) and "pool_size=1" in str(busy.value)
            assert f"after {waited:.0f}." in str(busy.value) or "after 1." in str(busy.value)
            assert waited < 5  # the pool's timeout, not retries on top of it
            # The role at its connection limit (no new connection): the server's cause.
            admin.execute("ALTER ROLE snaptail_pool_test CONNECTION LIMIT 0")
            with pytest.raises(DatabaseUnreachable) as refused:
                store.get(agent.id)
            assert "refused a new connection" in str(refused.value)
            assert "too many connections" in str(refused.value)
        finally:
            release.set()
            holder.join()
